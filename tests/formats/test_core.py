"""Block-scaled, scaled and integer quantizers against float64 references of FORMATS.md."""

import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import effjax.formats as F
from effjax.formats import core

ELEM = {"mxfp8_e4m3": ("e4m3", 8, 448.0), "mxfp8_e5m2": ("e5m2", 15, 57344.0),
        "mxfp6_e2m3": ("e2m3", 2, 7.5), "mxfp6_e3m2": ("e3m2", 4, 28.0),
        "mxfp4": ("e2m1", 2, 6.0), "mxint8": ("int8", 0, 127 / 64)}
ML = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2,
      "e2m3": ml_dtypes.float6_e2m3fn, "e3m2": ml_dtypes.float6_e3m2fn,
      "e2m1": ml_dtypes.float4_e2m1fn}


def _adversarial_blocks(rng):
    blocks = [rng.randn(32) * 10.0 ** rng.uniform(-6, 6) for _ in range(40)]
    blocks += [np.zeros(32), np.full(32, 2.0**-130), np.r_[1e4, np.zeros(31)],
               np.r_[np.ones(31) * 1e-3, -3e3], np.full(32, 448.0), np.full(32, 480.0),
               np.full(32, 6.0), np.full(32, 7.9), np.r_[np.inf, np.ones(31)],
               np.r_[np.nan, np.ones(31)], np.full(32, 2.0**120)]
    return np.stack(blocks).astype(np.float32)


def _scale_exponent_ref(amax, mode, emax, max_elem, mbits):
    """FORMATS.md's rules in float64 Python."""
    if amax == 0:
        return -127
    if mode == "floor":
        e = math.floor(math.log2(amax)) - emax
    elif mode == "ceil":
        e = math.ceil(math.log2(amax) - emax)
    elif mode == "even":
        m, ex = math.frexp(amax)  # amax = m 2^ex, m in [0.5, 1)
        r = round(m * 2 ** (mbits + 1)) / 2 ** (mbits + 1) * 2.0**ex
        e = math.floor(math.log2(r)) - emax
    else:
        e = math.ceil(math.log2(amax / max_elem))
    return min(max(e, -127), 127)


@pytest.mark.parametrize("mode", F.MX_SCALE_MODES)
@pytest.mark.parametrize("name", sorted(ELEM))
def test_mx_scales_and_elements_follow_the_spec(name, mode):
    elem_name, emax, max_elem = ELEM[name]
    mbits = 6 if elem_name == "int8" else F.element_format(elem_name).mbits
    x = _adversarial_blocks(np.random.RandomState(1))
    q = F.quantize(jnp.asarray(x), name, axis=-1, scale_mode=mode)
    scale_codes = np.asarray(q.scale)[:, 0]
    for row, code in zip(x, scale_codes, strict=True):
        amax = float(np.max(np.abs(row)))
        if not np.isfinite(amax):
            assert code == 0xFF
            continue
        assert int(code) - 127 == _scale_exponent_ref(amax, mode, emax, max_elem, mbits), amax
    # elements: V / 2^e rounded (RNE, saturating) in the element format
    y = np.asarray(F.dequantize(q))
    for row, code, got in zip(x, scale_codes, y, strict=True):
        if code == 0xFF:
            assert np.isnan(got).all()
            continue
        scale = 2.0 ** (int(code) - 127)
        v = np.clip(row.astype(np.float64) / scale, -max_elem, max_elem)
        if elem_name == "int8":
            ref = np.round(v * 64) / 64 * scale
        else:
            ref = v.astype(np.float32).astype(ML[elem_name]).astype(np.float64) * scale
        ref[np.abs(ref) < 2.0**-126] = 0.0  # XLA:CPU flushes float32 subnormal results
        np.testing.assert_array_equal(got, ref.astype(np.float32))


def _nvfp4_ref(x, two_level):
    """FORMATS.md's NVFP4 in float64 (one tensor, blocks of 16 along the last axis)."""
    x = x.astype(np.float64)
    blocks = x.reshape(x.shape[0], -1, 16)
    amax_t = np.abs(x).max()
    g = amax_t / (448 * 6) if two_level and amax_t > 0 else 1.0
    amax_b = np.abs(blocks).max(-1)
    s = np.clip(amax_b / 6 / g, 2.0**-9, 448).astype(np.float32).astype(ml_dtypes.float8_e4m3fn)
    s = s.astype(np.float64)
    v = np.clip(blocks / (g * s)[..., None], -6, 6)
    q = v.astype(np.float32).astype(ml_dtypes.float4_e2m1fn).astype(np.float64)
    return (q * s[..., None] * g).reshape(x.shape), v


@pytest.mark.parametrize("two_level", [True, False])
def test_nvfp4_matches_float64_reference(two_level):
    rng = np.random.RandomState(2)
    x = (rng.standard_t(3, (16, 256)) * 0.05).astype(np.float32)
    x[3, :16] = 0.0
    x[5, 7] = 40.0
    q = F.quantize(jnp.asarray(x), "nvfp4", two_level=two_level)
    assert q.scale.dtype == jnp.float8_e4m3fn and (q.global_scale is not None) == two_level
    ours = np.asarray(F.dequantize(q), np.float64)
    ref, v = _nvfp4_ref(x, two_level)
    # float32 vs float64 arithmetic may only differ for inputs a hair from a rounding
    # boundary of the E2M1 grid: check those are the only disagreements.
    differ = ours != ref.astype(np.float32)
    grid = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6])
    mids = (grid[1:] + grid[:-1]) / 2
    near = np.min(np.abs(np.abs(v.reshape(x.shape))[..., None] - mids), axis=-1) < 1e-5
    assert not (differ & ~near).any()
    assert differ.mean() < 1e-3


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
@pytest.mark.parametrize("granularity, group", [("tensor", None), ("channel", None),
                                                ("group", 16), ("group", 32),
                                                ("group", 128)])
def test_int_symmetric_and_asymmetric(bits, granularity, group):
    rng = np.random.RandomState(3)
    x = (rng.randn(6, 256) * rng.uniform(0.1, 3, (6, 1))).astype(np.float32)
    name = f"int{bits}"
    for symmetric in (True, False):
        q = F.quantize(jnp.asarray(x), name, granularity=granularity, group_size=group,
                       symmetric=symmetric)
        got = np.asarray(F.dequantize(q), np.float64)
        g = {"tensor": x.size, "channel": 256, "group": group}[granularity]
        xb = x.reshape(-1, g)  # float32 arithmetic, as FORMATS.md's quantizers are emulated
        if symmetric:
            qmax = 2 ** (bits - 1) - 1
            scale = np.abs(xb).max(-1, keepdims=True) / np.float32(qmax)
            ref = np.clip(np.round(xb / scale), -qmax, qmax) * scale
        else:
            lo, hi = xb.min(-1, keepdims=True), xb.max(-1, keepdims=True)
            scale = (hi - lo) / np.float32(2**bits - 1)
            zero = np.clip(np.round(-lo / scale), 0, 2**bits - 1)
            ref = (np.clip(np.round(xb / scale) + zero, 0, 2**bits - 1) - zero) * scale
        np.testing.assert_allclose(got.reshape(-1, g), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2"])
def test_fp8_scaled_per_tensor_and_channel(name):
    x = (np.random.RandomState(4).randn(8, 64) * 100).astype(np.float32)
    dt = ml_dtypes.float8_e4m3fn if name == "fp8_e4m3" else ml_dtypes.float8_e5m2
    mx = 448.0 if name == "fp8_e4m3" else 57344.0
    for gran, keep in (("tensor", None), ("channel", -1)):
        q = F.quantize(jnp.asarray(x), name, granularity=gran)
        assert q.codes.dtype == jnp.dtype(dt)
        amax = np.abs(x).max() if keep is None else np.abs(x).max(-1, keepdims=True)
        scale = (amax / mx).astype(np.float32)
        ref = (x / scale).astype(dt).astype(np.float32) * scale
        np.testing.assert_array_equal(np.asarray(F.dequantize(q)), ref)


@pytest.mark.parametrize("name, bpe", [("mxfp4", 4.25), ("nvfp4", 4.5), ("mxfp8_e4m3", 8.25),
                                       ("mxfp6_e2m3", 6.25), ("mxfp6_e3m2", 6.25),
                                       ("mxint8", 8.25), ("hif8", 8.0), ("hif4", 4.5),
                                       ("int4", 4.0)])
def test_storage_bits_per_element(name, bpe):
    x = jnp.ones((4096, 4096), jnp.float32)
    q = jax.eval_shape(lambda a: F.quantize(a, name, axis=0), x)
    extra = 32 * 4096 / x.size if name == "int4" else 0  # one float32 scale per channel
    assert q.bits_per_element() == pytest.approx(bpe + extra)
    if name == "nvfp4":
        assert q.storage_bits()["global_scale"] == 32


# one format per kind fast (a cast, INT, FP8, MX, NVFP4, HiF8, HiF4), the rest slow
_AXIS_FAST = ("bf16", "int4", "fp8_e4m3", "mxfp4", "nvfp4", "hif8", "hif4")


@pytest.mark.parametrize("name", [n if n in _AXIS_FAST else pytest.param(n, marks=pytest.mark.slow)
                                  for n in F.names()])
def test_axis_padding_and_shape_restored(name):
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 37, 5), jnp.float32)
    for axis in (0, 1, -1):
        q = F.quantize(x, name, axis=axis)
        y = F.dequantize(q)
        assert y.shape == x.shape and y.dtype == x.dtype and q.axis == axis % 3
        assert float(jnp.max(jnp.abs(y - x))) < 0.6 * float(jnp.max(jnp.abs(x)))
        if name != "hif4":  # HiF4 may pick a new unit scale when re-quantized (see hifloat)
            y2 = F.dequantize(F.quantize(y, name, axis=axis))
            np.testing.assert_array_equal(y2, y)  # the grid is a fixed point
    assert F.dequantize(F.quantize(x.astype(jnp.bfloat16), name)).dtype == jnp.bfloat16


def test_bad_input():
    x = jnp.ones((4, 64))
    with pytest.raises(ValueError, match=r"unknown format 'mxfp3'; known formats: \['bf16'"):
        F.quantize(x, "mxfp3")
    with pytest.raises(ValueError, match="real floating-point array, got dtype int32"):
        F.quantize(jnp.ones((4, 64), jnp.int32), "mxfp4")
    with pytest.raises(ValueError, match="real floating-point array, got dtype complex64"):
        F.quantize(jnp.ones((4, 64), jnp.complex64), "int8")
    with pytest.raises(ValueError, match=r"axis 2 is out of range for an array of shape \(4, 64\)"):
        F.quantize(x, "int8", axis=2)
    with pytest.raises(ValueError, match="mxfp4 has a fixed block of 32.*group_size=16"):
        F.quantize(x, "mxfp4", group_size=16)
    with pytest.raises(ValueError, match="nvfp4 has a fixed block of 16.*group_size=32"):
        F.quantize(x, "nvfp4", group_size=32)
    with pytest.raises(ValueError, match=r"group_size for int4 must be one of \(16, 32, 64, 128\)"):
        F.quantize(x, "int4", group_size=48)
    with pytest.raises(ValueError, match="scale_mode must be one of"):
        F.quantize(x, "mxfp8_e4m3", scale_mode="round")
    with pytest.raises(ValueError, match="symmetric=False is only for INT"):
        F.get_format("mxfp4", symmetric=False)


@pytest.mark.parametrize("name", F.names())
def test_jit_and_eager_agree_bit_for_bit(name):
    x = jax.random.t(jax.random.PRNGKey(5), 3.0, (16, 96)) * 7
    fmt = F.get_format(name, scale_mode="rceil") if name.startswith("mx") else name
    eager = F.quantize(x, fmt, axis=1)
    jitted = jax.jit(lambda x: F.quantize(x, fmt, axis=1))(x)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted), strict=True):
        a, b = np.atleast_1d(np.asarray(a)), np.atleast_1d(np.asarray(b))
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
    np.testing.assert_array_equal(jax.jit(lambda x: F.fake_quant(x, fmt, axis=1))(x),
                                  F.dequantize(eager))


def test_nvfp4_global_scale_is_an_ieee_division_under_jit():
    # 64 tensors, one global scale each: amax / 2688 must be correctly rounded, not a
    # multiplication by a rounded reciprocal (which XLA substitutes for about 18% of them).
    x = jax.random.uniform(jax.random.PRNGKey(6), (64, 4, 32), minval=-5.0, maxval=5.0)
    quant = jax.jit(lambda t: F.quantize(t, "nvfp4", axis=1))
    got = np.array([float(quant(t).global_scale) for t in x], np.float32)
    amax = np.abs(np.asarray(x)).max(axis=(1, 2))
    np.testing.assert_array_equal(got, amax / np.float32(2688.0))


@pytest.mark.parametrize("bits, n", [(4, 7), (4, 64), (6, 5), (6, 64)])
def test_code_packing_layout_and_round_trip(bits, n):
    rng = np.random.RandomState(bits + n)
    codes = rng.randint(0, 2**bits, (3, n)).astype(np.uint8)
    packed = np.asarray(core.pack_codes(jnp.asarray(codes), bits))
    # The layout, rebuilt as one little-endian bit string per row: code i at bit bits * i.
    per_byte = 8 * packed.shape[-1] // bits
    assert packed.shape == (3, -(-n * bits // 8) if bits == 4 else -(-n // 4) * 3)
    for row, prow in zip(codes, packed, strict=True):
        stream = int.from_bytes(prow.tobytes(), "little")
        got = [(stream >> (bits * i)) & (2**bits - 1) for i in range(per_byte)]
        assert got[:n] == row.tolist() and not any(got[n:])
    np.testing.assert_array_equal(core.unpack_codes(jnp.asarray(packed), bits, n), codes)
    jitted = jax.jit(lambda c: core.pack_codes(c, bits))(jnp.asarray(codes))
    np.testing.assert_array_equal(jitted, packed)


@pytest.mark.parametrize("fmt", ["int8", F.get_format("int4", symmetric=False), "fp8_e5m2",
                                 "mxfp8_e4m3", "mxfp6_e3m2", "mxfp4", "mxint8", "nvfp4",
                                 F.get_format("nvfp4", two_level=False), "hif4"],
                         ids=lambda f: f if isinstance(f, str) else f"{f.name}-{f.symmetric}")
def test_elements_given_the_stored_scales_reproduce_quantize(fmt):
    """Rounding under fixed stored scales (what GPTQ uses) is quantize's own rounding, and
    `assemble` rebuilds the same QArray."""
    x = jax.random.t(jax.random.PRNGKey(3), 3.0, (24, 192)) * 2
    f = F.get_format(fmt)
    xb = core.to_blocks(x, 1, core.group_size(f, 192))
    elements, stored = core.grid_values(xb, f)
    np.testing.assert_array_equal(core.elements_given(xb, stored, f), elements)
    q, q2 = F.quantize(x, f, axis=1), core.assemble(elements, stored, f, 1, x.shape, x.dtype)
    for a, b in zip(jax.tree.leaves(q), jax.tree.leaves(q2), strict=True):
        np.testing.assert_array_equal(np.atleast_1d(np.asarray(a)).view(np.uint8),
                                      np.atleast_1d(np.asarray(b)).view(np.uint8))
    lv = jnp.asarray([0, 1, 0xABCDEF, 0xFFFFFF], jnp.uint32)
    np.testing.assert_array_equal(core.level_word(core.level_bytes(lv)), lv)


def test_qarray_stored_names_the_scale_arrays_the_format_has():
    x = jnp.ones((4, 64))
    assert set(F.quantize(x, "nvfp4").stored()) == {"scale", "global_scale"}
    assert set(F.quantize(x, "hif4").stored()) == {"scale", "levels"}
    assert set(F.quantize(x, "int4", symmetric=False).stored()) == {"scale", "zero_point"}
    assert F.quantize(x, "bf16").stored() == {}
    q = F.quantize(x, "mxfp4")
    assert q.stored()["scale"] is q.scale

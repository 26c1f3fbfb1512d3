"""HiF8 and HiF4 against independent float64 references written from FORMATS.md."""

import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from effjax.formats import hifloat as hf

# ---------------------------------------------------------------------------------------------
# HiF8 reference: a string-prefix decoder and a brute-force nearest-value rounder.

_PREFIXES = (("11", 4), ("10", 3), ("01", 2), ("001", 1), ("0001", 0))


def ref_hif8_decode(code: int) -> float:
    """Decodes one code by matching the Dot prefix on the bit string (float64)."""
    if code == 0x00:
        return 0.0
    if code == 0x80:
        return math.nan
    bits = format(code, "08b")
    sign = -1.0 if bits[0] == "1" else 1.0
    body = bits[1:]
    for prefix, width in _PREFIXES:
        if body.startswith(prefix):
            exp_bits = body[len(prefix):len(prefix) + width]
            man_bits = body[len(prefix) + width:]
            if width == 0:
                exponent = 0
            else:
                magnitude = 2 ** (width - 1) + (int(exp_bits[1:], 2) if width > 1 else 0)
                exponent = -magnitude if exp_bits[0] == "1" else magnitude
            if exponent == 15 and man_bits == "1":
                return sign * math.inf
            return sign * math.ldexp(1.0 + int(man_bits, 2) / 2 ** len(man_bits), exponent)
    assert body.startswith("0000")
    return sign * math.ldexp(1.0, int(body[4:], 2) - 23)


REF_TABLE = np.array([ref_hif8_decode(c) for c in range(256)])
GRID = np.unique(REF_TABLE[np.isfinite(REF_TABLE) & (REF_TABLE >= 0)])  # sorted, 0 first
GRID_EXT = np.append(GRID, 49152.0)  # 1.5 * 2^15 is the Inf code: the overflow neighbour


def ref_hif8_round(x: np.ndarray, saturate: bool) -> np.ndarray:
    """Nearest value of GRID (ties away from zero), by brute force over the enumerated values."""
    x = np.asarray(x, np.float64)
    a = np.abs(x)
    i = np.clip(np.searchsorted(GRID_EXT, a, side="right") - 1, 0, len(GRID_EXT) - 2)
    lo, hi = GRID_EXT[i], GRID_EXT[i + 1]
    q = np.where(2 * a >= lo + hi, hi, lo)
    q = np.where(q >= 49152.0, 32768.0 if saturate else np.inf, q)
    q = np.where(np.isnan(a), np.nan, q)
    return np.where((x < 0) & (q > 0), -q, q)


def _sweep() -> np.ndarray:
    """Every bfloat16 bit pattern widened to float32 with four choices of the 16 low bits:
    every binade, NaN and Inf, and the largest float32 below every bf16 (so below every power
    of two, where carries into the next binade happen)."""
    hi = np.arange(2**16, dtype=np.uint32) << 16
    bits = (hi[:, None] | np.array([0, 1, 0x8000, 0xFFFF], np.uint32)[None, :]).ravel()
    nan = ((bits & 0x7F800000) == 0x7F800000) & ((bits & 0x7FFFFF) != 0)
    # NaN payloads are dropped at the bit level (signalling NaNs warn when cast), quiet NaNs kept
    return np.concatenate([bits[~nan].view(np.float32), np.float32([np.nan, -np.nan])])


def _np(a) -> np.ndarray:
    return np.asarray(jax.device_get(a))


# ---------------------------------------------------------------------------------------------
# HiF8 decode / encode


def test_hif8_decode_all_codes_match_reference():
    got = _np(hf.hif8_decode(np.arange(256, dtype=np.uint8)))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.astype(np.float64), REF_TABLE)
    np.testing.assert_array_equal(hf.hif8_table().astype(np.float64), REF_TABLE)


@pytest.mark.parametrize(
    "code,value",
    [(0x08, 1.0), (0x10, 2.0), (0x18, 0.5), (0x20, 4.0), (0x40, 16.0), (0x60, 256.0),
     (0x6E, 32768.0), (0x01, 2.0**-22), (0x00, 0.0), (0x6F, np.inf), (0xEF, -np.inf),
     (0xEE, -32768.0), (0x88, -1.0)],
)
def test_hif8_test_vectors(code, value):
    assert float(hf.hif8_decode(np.uint8(code))) == value
    assert REF_TABLE[code] == value


def test_hif8_value_set():
    v = _np(hf.hif8_decode(np.arange(256, dtype=np.uint8)))
    assert np.isnan(v[0x80]) and np.isnan(v).sum() == 1
    finite_nonneg = v[np.isfinite(v) & (v >= 0)]
    assert finite_nonneg.size == 127 and np.unique(finite_nonneg).size == 127
    assert finite_nonneg.max() == 32768.0 and finite_nonneg[finite_nonneg > 0].min() == 2.0**-22
    # symmetric: code | 0x80 is the negative (except 0x00 / 0x80)
    np.testing.assert_array_equal(v[0x81:], -v[1:0x80])


def test_hif8_encode_decode_round_trip():
    codes = np.array([c for c in range(256) if c != 0x80], np.uint8)
    values = hf.hif8_decode(codes)
    np.testing.assert_array_equal(_np(hf.hif8_encode(values, saturate=False)), codes)
    # saturating mode only differs on the Inf codes
    sat = _np(hf.hif8_encode(values, saturate=True))
    expect = np.where(codes == 0x6F, 0x6E, np.where(codes == 0xEF, 0xEE, codes))
    np.testing.assert_array_equal(sat, expect)


def test_hif8_encode_specials():
    x = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, -(2.0**-24), 2.0**-24, -1e-30, 1e6],
                 np.float32)
    np.testing.assert_array_equal(
        _np(hf.hif8_encode(x, saturate=False)),
        np.array([0x00, 0x00, 0x80, 0x6F, 0xEF, 0x00, 0x00, 0x00, 0x6F], np.uint8))
    np.testing.assert_array_equal(
        _np(hf.hif8_encode(x)),
        np.array([0x00, 0x00, 0x80, 0x6E, 0xEE, 0x00, 0x00, 0x00, 0x6E], np.uint8))


@pytest.mark.parametrize("saturate", [True, False])
def test_hif8_encode_matches_round_on_sweep(saturate):
    x = _sweep()
    codes = _np(hf.hif8_encode(x, saturate=saturate))
    np.testing.assert_array_equal(REF_TABLE[codes], ref_hif8_round(x, saturate))


# ---------------------------------------------------------------------------------------------
# HiF8 rounding


def test_hif8_round_fixed_points():
    v = GRID.astype(np.float32)
    v = np.concatenate([v, -v])
    np.testing.assert_array_equal(_np(hf.hif8_round(v)), v)
    np.testing.assert_array_equal(_np(hf.hif8_round(v, saturate=False)), v)


@pytest.mark.parametrize("saturate", [True, False])
def test_hif8_round_midpoints_go_away_from_zero(saturate):
    lo, hi = GRID_EXT[:-1], GRID_EXT[1:]  # adjacent pairs, the last one (32768, Inf-code)
    mid = ((lo + hi) / 2).astype(np.float32)
    assert np.all(mid.astype(np.float64) == (lo + hi) / 2)  # exact midpoints
    top = 32768.0 if saturate else np.inf
    hi_val = np.where(hi == 49152.0, top, hi)
    np.testing.assert_array_equal(_np(hf.hif8_round(mid, saturate=saturate)), hi_val)
    np.testing.assert_array_equal(_np(hf.hif8_round(-mid, saturate=saturate)), -hi_val)
    below = np.nextafter(mid, np.float32(0))
    above = np.nextafter(mid, np.float32(np.inf))
    np.testing.assert_array_equal(_np(hf.hif8_round(below, saturate=saturate)), lo)
    np.testing.assert_array_equal(_np(hf.hif8_round(above, saturate=saturate)), hi_val)


@pytest.mark.parametrize("saturate", [True, False])
def test_hif8_round_sweep_matches_brute_force(saturate):
    """All bf16 patterns (+ low-bit variants): every binade, carries, NaN, Inf, subnormals."""
    x = _sweep()
    got = _np(hf.hif8_round(x, saturate=saturate))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.astype(np.float64), ref_hif8_round(x, saturate))
    finite = got[np.isfinite(got)]
    assert np.isin(np.abs(finite), GRID).all()  # every result is exactly a HiF8 value
    assert not np.signbit(got[got == 0]).any()  # no -0


def test_hif8_round_random_matches_brute_force():
    rng = np.random.default_rng(0)
    n = 200_000
    e = rng.integers(-27, 18, n).astype(np.float64)
    x = (np.sign(rng.standard_normal(n)) * (1 + rng.random(n)) * 2.0**e).astype(np.float32)
    for saturate in (True, False):
        got = _np(hf.hif8_round(x, saturate=saturate)).astype(np.float64)
        np.testing.assert_array_equal(got, ref_hif8_round(x, saturate))


def test_hif8_round_monotonic():
    x = _sweep()
    x = np.sort(x[~np.isnan(x) & (np.abs(x) < 1e6)])
    for saturate in (True, False):
        r = _np(hf.hif8_round(x, saturate=saturate))
        assert np.all(r[1:] >= r[:-1])


def test_hif8_saturation_and_inf():
    x = np.array([40959.0, 40960.0, 1e6, np.inf, -40959.0, -40960.0, -1e6, -np.inf, 36864.0],
                 np.float32)
    np.testing.assert_array_equal(
        _np(hf.hif8_round(x, saturate=True)),
        [32768, 32768, 32768, 32768, -32768, -32768, -32768, -32768, 32768])
    np.testing.assert_array_equal(
        _np(hf.hif8_round(x, saturate=False)),
        [32768, np.inf, np.inf, np.inf, -32768, -np.inf, -np.inf, -np.inf, 32768])


def test_hif8_tiny_values():
    x = np.array([2.0**-24, 2.0**-23, np.nextafter(np.float32(2.0**-23), np.float32(0)),
                  -(2.0**-23), 1.5 * 2.0**-23, 1e-45, -1e-45, 3 * 2.0**-17, 2.9 * 2.0**-17],
                 np.float32)
    np.testing.assert_array_equal(
        _np(hf.hif8_round(x)),
        np.array([0, 2.0**-22, 0, -(2.0**-22), 2.0**-22, 0, 0, 2.0**-15, 2.0**-16], np.float32))


def test_hif8_carry_into_next_binade():
    # just below 2^k, with the mantissa width of the lower binade, rounds up to 2^k
    for k in range(-21, 16):
        x = np.nextafter(np.float32(2.0**k), np.float32(0))
        assert float(hf.hif8_round(x)) == 2.0**k
    x = np.array([15.9, 7.99, 255.5, 0.124], np.float32)
    np.testing.assert_array_equal(_np(hf.hif8_round(x)), [16, 8, 256, 0.125])
    np.testing.assert_array_equal(REF_TABLE[_np(hf.hif8_encode(x))], [16, 8, 256, 0.125])


def test_hif8_nan_and_dtypes():
    assert np.isnan(float(hf.hif8_round(np.float32(np.nan))))
    xb = jnp.asarray([1.1, -3.3, 100.0], jnp.bfloat16)
    got = hf.hif8_round(xb)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(_np(got), ref_hif8_round(_np(xb.astype(jnp.float32)), True))


def test_hif8_shapes_and_jit():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((2, 3, 5)) * 100).astype(np.float32)
    f = jax.jit(lambda v: hf.hif8_decode(hf.hif8_encode(v)))
    np.testing.assert_array_equal(_np(f(x)), _np(hf.hif8_round(x)))
    assert f(x).shape == (2, 3, 5)
    np.testing.assert_array_equal(_np(jax.vmap(hf.hif8_round)(x)), _np(hf.hif8_round(x)))
    assert hf.hif8_encode(x).dtype == jnp.uint8


def test_hif8_bad_inputs():
    with pytest.raises(ValueError, match="x must have a floating dtype"):
        hf.hif8_round(np.arange(4, dtype=np.int32))
    with pytest.raises(ValueError, match="x must have a floating dtype"):
        hf.hif8_encode(np.arange(4, dtype=np.int8))
    with pytest.raises(ValueError, match="codes must have an integer dtype"):
        hf.hif8_decode(np.zeros(4, np.float32))


# ---------------------------------------------------------------------------------------------
# E6M2 reference

E6M2_VALUES = np.array([math.ldexp(1 + m / 4, e - 48) for e in range(64) for m in range(4)][:255])


def ref_e6m2_code(v: float) -> int:
    """Nearest E6M2 value (ties to the even mantissa, i.e. the even code), saturating."""
    if math.isnan(v):
        return 255
    v = min(max(v, E6M2_VALUES[0]), E6M2_VALUES[-1])
    i = int(np.searchsorted(E6M2_VALUES, v, side="right")) - 1
    if i == 254 or v == E6M2_VALUES[i]:
        return i
    d_lo, d_hi = v - E6M2_VALUES[i], E6M2_VALUES[i + 1] - v
    if d_lo < d_hi or (d_lo == d_hi and i % 2 == 0):
        return i
    return i + 1


def test_e6m2_decode_and_round_trip():
    codes = np.arange(256, dtype=np.uint8)
    v = _np(hf.e6m2_decode(codes))
    np.testing.assert_array_equal(v[:255].astype(np.float64), E6M2_VALUES)
    assert np.isnan(v[255])
    assert v[0] == 2.0**-48 and v[254] == 49152.0 and v[0xC0] == 1.0  # bias 48
    np.testing.assert_array_equal(_np(hf.e6m2_encode(v[:255])), codes[:255])
    assert int(hf.e6m2_encode(np.float32(np.nan))) == 255


def test_e6m2_encode_rounding_and_saturation():
    rng = np.random.default_rng(2)
    x = (rng.random(5000) + 0.5) * 2.0 ** rng.integers(-52, 19, 5000).astype(np.float64)
    mids = (E6M2_VALUES[:-1] + E6M2_VALUES[1:]) / 2  # exact ties
    x = np.concatenate([x, mids, [0.0, -1.0, 1e9, np.inf, -np.inf, 1e-30]]).astype(np.float32)
    got = _np(hf.e6m2_encode(x))
    np.testing.assert_array_equal(got, [ref_e6m2_code(float(v)) for v in x])
    assert (got[5000:5000 + mids.size] % 2 == 0).all()  # every tie went to the even code


# ---------------------------------------------------------------------------------------------
# HiF4 reference: the seven steps per unit, float64 with explicit float32 / bf16 roundings.

_INV7 = float(ml_dtypes.bfloat16(1 / 7))


def _f32(v: float) -> float:
    return float(np.float32(v))


def _bf16(v: float) -> float:
    return float(ml_dtypes.bfloat16(np.float32(v)))


def ref_hif4_unit(x: np.ndarray):
    """(codes, scale_code, l1 (8,), l2 (16,), x_hat) of one unit of 64 float32 values."""
    a = np.abs(x.astype(np.float64))
    if not np.isfinite(a).all():  # NaN or +-Inf: a NaN unit (the MX rule)
        return np.zeros(64, np.uint8), 255, np.ones(8), np.ones(16), np.full(64, np.nan)
    m4 = [max(a[4 * j:4 * j + 4]) for j in range(16)]
    m8 = [max(m4[2 * g], m4[2 * g + 1]) for g in range(8)]
    m64 = max(m8)
    s = min(max(_bf16(_f32(m64 * _INV7)), 2.0**-48), 49152.0)
    scale_code = ref_e6m2_code(s)
    s = E6M2_VALUES[scale_code]
    r = _bf16(_f32(1 / s))
    l1 = np.array([2.0 if _f32(m8[g] * r) >= 4 else 1.0 for g in range(8)])
    l2 = np.array([2.0 if _f32(m4[j] * r) / l1[j // 2] >= 2 else 1.0 for j in range(16)])
    codes = np.zeros(64, np.uint8)
    x_hat = np.zeros(64)
    for i in range(64):
        lev = l1[i // 8] * l2[i // 4]
        t = _f32(a[i] * r) / lev * 4
        k = int(min(np.floor(t + 0.5), 7.0))
        neg = x[i] < 0 and k > 0
        codes[i] = k | (8 if neg else 0)
        x_hat[i] = (-1 if neg else 1) * k / 4 * lev * s
    return codes, scale_code, l1, l2, x_hat


def _units(rng) -> np.ndarray:
    n = 48
    scales = 10.0 ** rng.uniform(-3, 3, (n, 1))
    normal = rng.standard_normal((n, 64)) * scales
    heavy = rng.standard_cauchy((n, 64)) * scales
    outlier = rng.standard_normal((n, 64))
    outlier[np.arange(n), rng.integers(0, 64, n)] *= 10.0 ** rng.uniform(1, 4, n)
    tiny = rng.standard_normal((n, 64)) * 10.0 ** rng.uniform(-20, -12, (n, 1))
    ties = rng.integers(-64, 65, (n, 64)) / 8.0 * 2.0 ** rng.integers(-10, 10, (n, 1))
    sparse = rng.standard_normal((n, 64)) * (rng.random((n, 64)) < 0.1)
    special = np.zeros((6, 64))
    special[1, :] = -0.0
    special[2, 0] = 7.0
    special[3, 5] = 1e7
    special[4, 9], special[4, 10] = np.inf, -np.inf
    special[5, :8] = 2.0**-60
    return np.concatenate([normal, heavy, outlier, tiny, ties, sparse, special]).astype(np.float32)


@pytest.fixture(scope="module")
def units():
    rng = np.random.default_rng(3)
    x = _units(rng)
    refs = [ref_hif4_unit(u) for u in x]
    codes, scale, levels = (_np(a) for a in hf.hif4_quantize_units(x))
    x_hat = _np(hf.hif4_dequantize_units(codes, scale, levels))
    return x, refs, codes, scale, levels, x_hat


def test_hif4_matches_reference(units):
    x, refs, codes, scale, levels, x_hat = units
    assert codes.dtype == np.uint8 and scale.dtype == np.uint8 and levels.dtype == np.uint32
    assert codes.shape == x.shape and scale.shape == levels.shape == x.shape[:1]
    l1, l2 = (_np(a) for a in hf.hif4_unpack_levels(levels))
    for i, (rc, rs, rl1, rl2, rx) in enumerate(refs):
        np.testing.assert_array_equal(codes[i], rc, err_msg=f"unit {i}")
        assert scale[i] == rs, f"unit {i}"
        np.testing.assert_array_equal(np.where(l1[i], 2.0, 1.0), rl1, err_msg=f"unit {i}")
        np.testing.assert_array_equal(np.where(l2[i], 2.0, 1.0), rl2, err_msg=f"unit {i}")
        np.testing.assert_array_equal(x_hat[i].astype(np.float64), rx, err_msg=f"unit {i}")
    assert (codes <= 15).all()
    # the samples exercise both level values and several scale mantissas
    assert l1.any() and (~l1).any() and l2.any() and (~l2).any()
    assert len(set((scale & 3).tolist())) == 4


def test_hif4_zero_and_special_units(units):
    x, _, codes, scale, levels, x_hat = units
    zero = ~x.any(axis=-1)
    assert zero.sum() >= 2
    assert (scale[zero] == 0).all() and (codes[zero] == 0).all() and (levels[zero] == 0).all()
    assert (x_hat[zero] == 0).all() and not np.signbit(x_hat[zero]).any()
    assert np.isfinite(x_hat[np.isfinite(x).all(axis=-1)]).all()
    # a unit holding +-Inf is a NaN unit, as one holding a NaN is (the MX rule)
    inf_unit = np.isinf(x).any(axis=-1)
    assert inf_unit.sum() == 1
    assert (scale[inf_unit] == 0xFF).all() and (codes[inf_unit] == 0).all()
    assert (levels[inf_unit] == 0).all() and np.isnan(x_hat[inf_unit]).all()


def test_hif4_max_magnitude_7s(units):
    x, _, codes, scale, _, x_hat = units
    s = _np(hf.e6m2_decode(scale))[:, None]
    finite = np.isfinite(x).all(axis=-1)  # the others are NaN units
    assert (np.abs(x_hat[finite]) <= 7 * s[finite]).all()
    assert ((codes & 7) <= 7).all()
    # a unit whose max is 7 gets s = 1 and decodes its max to exactly 7 s
    x7 = np.zeros((1, 64), np.float32)
    x7[0, 0] = 7.0
    c, sc, lv = hf.hif4_quantize_units(x7)
    assert float(hf.e6m2_decode(sc)[0]) == 1.0
    assert float(hf.hif4_dequantize_units(c, sc, lv)[0, 0]) == 7.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_hif4_non_finite_unit(bad):
    x = np.ones((2, 64), np.float32)
    x[1, 3] = bad
    codes, scale, levels = (_np(a) for a in hf.hif4_quantize_units(x))
    assert scale[1] == 0xFF and (codes[1] == 0).all() and levels[1] == 0
    x_hat = _np(hf.hif4_dequantize_units(codes, scale, levels))
    assert np.isnan(x_hat[1]).all() and np.isfinite(x_hat[0]).all()


def test_hif4_levels_bit_order_and_round_trip():
    onehot8, onehot16 = np.eye(8, dtype=bool), np.eye(16, dtype=bool)
    np.testing.assert_array_equal(
        _np(hf.hif4_pack_levels(onehot8, np.zeros((8, 16), bool))), 1 << np.arange(8))
    np.testing.assert_array_equal(
        _np(hf.hif4_pack_levels(np.zeros((16, 8), bool), onehot16)), 1 << np.arange(8, 24))
    rng = np.random.default_rng(4)
    lv = rng.integers(0, 2**24, (3, 50)).astype(np.uint32)
    l1, l2 = hf.hif4_unpack_levels(lv)
    assert l1.shape == (3, 50, 8) and l2.shape == (3, 50, 16) and l1.dtype == jnp.bool_
    np.testing.assert_array_equal(_np(hf.hif4_pack_levels(l1, l2)), lv)


def test_hif4_shapes_and_jit(units):
    x, _, codes, scale, levels, x_hat = units
    xs = x[:24].reshape(2, 3, 4, 64)
    c, s, lv = hf.hif4_quantize_units(xs)
    assert c.shape == (2, 3, 4, 64) and s.shape == lv.shape == (2, 3, 4)
    np.testing.assert_array_equal(_np(c).reshape(24, 64), codes[:24])
    np.testing.assert_array_equal(_np(s).ravel(), scale[:24])
    f = jax.jit(lambda v: hf.hif4_dequantize_units(*hf.hif4_quantize_units(v)))
    np.testing.assert_array_equal(_np(f(xs)).reshape(24, 64), x_hat[:24])
    one = _np(f(x[0]))  # a single unit, no leading axes
    np.testing.assert_array_equal(one, x_hat[0])


def _requant(v):
    return _np(hf.hif4_dequantize_units(*hf.hif4_quantize_units(v)))


def test_hif4_requantize_idempotent_when_scale_kept(units):
    """Q(Q(x)) == Q(x) whenever re-quantizing keeps the unit scale and its mantissa field is
    0, 1 or 2 (then s * bf16(1/s) is in [1, 1.002], so decoded values keep their codes and
    levels). It is not true in general: see the next test."""
    x, _, _, scale, _, x_hat = units
    finite = np.isfinite(x).all(axis=-1)
    x_hat = x_hat[finite]
    scale = scale[finite]
    _, scale2, _ = (_np(a) for a in hf.hif4_quantize_units(x_hat))
    again = _requant(x_hat)
    keep = (scale2 == scale) & ((scale & 3) != 3)
    assert keep.sum() > 0.5 * keep.size
    np.testing.assert_array_equal(again[keep], x_hat[keep])
    # quantizing a second time reproduces the first re-quantization on these samples
    np.testing.assert_array_equal(_requant(again), again)


def test_hif4_requantize_not_idempotent_counterexamples():
    x = np.zeros((2, 64), np.float32)
    # (a) the scale changes: max 8 -> s = 1.25, decoded max 6 s = 7.5 -> s = 1, 7.5 -> 7.
    x[0, 0] = 8.0
    # (b) s = 1.75 has bf16(1/s) * s = 0.998 < 1: the decoded 4 s = 7 falls under the
    # level-1 threshold and re-quantizes to 7/4 * 2 * s = 6.125.
    x[1, 0], x[1, 8] = 12.5, 7.1
    q1 = _requant(x)
    q2 = _requant(q1)
    assert q1[0, 0] == 7.5 and q2[0, 0] == 7.0
    assert q1[1, 8] == 7.0 and q2[1, 8] == 6.125
    assert q1[1, 0] == q2[1, 0] == 12.25


def test_hif4_bad_inputs():
    with pytest.raises(ValueError, match=r"x must have last axis 64.*\(2, 63\)"):
        hf.hif4_quantize_units(np.zeros((2, 63), np.float32))
    with pytest.raises(ValueError, match="x must have a floating dtype.*int32"):
        hf.hif4_quantize_units(np.zeros((2, 64), np.int32))
    codes = np.zeros((2, 64), np.uint8)
    with pytest.raises(ValueError, match="scale must have shape"):
        hf.hif4_dequantize_units(codes, np.zeros(3, np.uint8), np.zeros(2, np.uint32))
    with pytest.raises(ValueError, match="levels must have shape"):
        hf.hif4_dequantize_units(codes, np.zeros(2, np.uint8), np.zeros((2, 1), np.uint32))
    with pytest.raises(ValueError, match="codes must have last axis 64"):
        hf.hif4_dequantize_units(codes[:, :32], np.zeros(2, np.uint8), np.zeros(2, np.uint32))
    with pytest.raises(ValueError, match="codes must have an integer dtype"):
        hf.hif4_dequantize_units(codes.astype(np.float32), np.zeros(2, np.uint8),
                                 np.zeros(2, np.uint32))

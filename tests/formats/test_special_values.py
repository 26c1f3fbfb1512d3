"""NaN, +-Inf and empty arrays: the policy of the `effjax.formats` docstring, per family."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import effjax.formats as F


def _row(shape=(2, 64), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 3


def _round_trip(x, fmt, **options):
    """(dequantize(quantize(x)), fake_quant(x), the QArray), as NumPy where arrays."""
    q = F.quantize(jnp.asarray(x), fmt, **options)
    return np.asarray(F.dequantize(q)), np.asarray(F.fake_quant(jnp.asarray(x), fmt, **options)), q


# (format, options, bad value): every INT width per channel, Inf of both signs, groups, tensor
_INT_CASES = [("int8", {}, np.nan), ("int4", {}, np.nan), ("int3", {}, np.nan),
              ("int2", {}, np.nan), ("int8", {}, np.inf), ("int4", {}, -np.inf),
              ("int4", {"group_size": 32}, np.nan), ("int8", {"granularity": "tensor"}, np.inf)]


@pytest.mark.parametrize("name, options, bad", _INT_CASES, ids=str)
def test_int_non_finite_is_nan_and_neighbours_quantize_without_it(name, options, bad):
    x = _row()
    x[0, 5] = bad
    y, fq, q = _round_trip(x, name, **options)
    np.testing.assert_array_equal(y, fq)  # fake_quant agrees, NaN included
    assert np.isnan(y[0, 5]) and np.isnan(y).sum() == 1
    clean = x.copy()
    clean[0, 5] = 0.0  # 0 never raises a symmetric scale: the row without the bad value
    ref = np.asarray(F.dequantize(F.quantize(jnp.asarray(clean), name, **options)))
    others = ~np.isnan(y)
    np.testing.assert_array_equal(y[others], ref[others])
    if not options:  # per channel, literally without it: the 63 other values on their own
        alone = np.delete(x[0], 5)[None]
        ref_alone = np.asarray(F.dequantize(F.quantize(jnp.asarray(alone), name)))
        np.testing.assert_array_equal(np.delete(y[0], 5), ref_alone[0])
    # the NaN code is -2^(bits-1), which the symmetric clamp never produces
    bits, codes = int(name[3:]), np.asarray(q.codes)
    if bits == 4:  # element 5 is the high nibble of byte 2
        assert codes[0, 2] >> 4 == 8
    else:
        assert codes[0, 5] == -(2 ** (bits - 1))


def test_int_nan_code_decodes_to_nan_and_never_comes_from_finite_values():
    x = jnp.asarray(-np.abs(_row((4, 128))))  # every row's largest magnitude is negative
    for name in ("int8", "int3", "int2"):
        codes = np.asarray(F.quantize(x, name).codes)
        assert codes.min() == -(2 ** (int(name[3:]) - 1)) + 1  # the clamp reaches -qmax only
    codes = np.asarray(F.quantize(x, "int4").codes)
    assert not ((codes & 0xF) == 8).any() and not ((codes >> 4) == 8).any()
    assert ((codes & 0xF) == 9).any()  # -7, the lowest finite code, is there
    nan_codes = jnp.asarray([[-128, 0, 127]], jnp.int8)
    q = F.quantize(jnp.ones((1, 3)), "int8")
    y = np.asarray(F.dequantize(dataclasses.replace(q, codes=nan_codes)))
    assert np.isnan(y[0, 0]) and np.isfinite(y[0, 1:]).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_asymmetric_int_group_with_non_finite_is_nan(bad):
    # every asymmetric code is a value: the group's scale carries the NaN, as in MX
    x = _row()
    x[0, 5] = bad
    y, fq, q = _round_trip(x, "int4", symmetric=False, group_size=32)
    np.testing.assert_array_equal(y, fq)
    assert np.isnan(np.asarray(q.scale)[0, 0]) and np.isfinite(np.asarray(q.zero_point)).all()
    assert np.isnan(y[0, :32]).all() and np.isfinite(y[0, 32:]).all()
    ref = np.asarray(F.dequantize(F.quantize(jnp.asarray(_row()), "int4", symmetric=False,
                                             group_size=32)))
    np.testing.assert_array_equal(y[0, 32:], ref[0, 32:])
    np.testing.assert_array_equal(y[1], ref[1])


@pytest.mark.parametrize("name", ["fp8_e4m3", "fp8_e5m2"])
@pytest.mark.parametrize("granularity", ["tensor", "channel"])
def test_fp8_scale_from_finite_values_and_inf_where_the_format_has_it(name, granularity):
    x = _row()
    x[0, 5], x[0, 6], x[0, 7] = np.nan, np.inf, -np.inf
    y, fq, _ = _round_trip(x, name, granularity=granularity)
    np.testing.assert_array_equal(y, fq)
    assert np.isnan(y[0, 5])
    if name == "fp8_e5m2":
        assert y[0, 6] == np.inf and y[0, 7] == -np.inf
    else:  # E4M3 has no Inf
        assert np.isnan(y[0, 6:8]).all()
    clean = x.copy()
    clean[0, 5:8] = 0.0
    ref = np.asarray(F.dequantize(F.quantize(jnp.asarray(clean), name,
                                             granularity=granularity)))
    keep = np.ones(x.shape, bool)
    keep[0, 5:8] = False
    np.testing.assert_array_equal(y[keep], ref[keep])


_BLOCK_CASES = [("mxfp8_e4m3", {}), ("mxfp6_e2m3", {}), ("mxfp4", {}), ("mxint8", {}),
                ("nvfp4", {}), ("nvfp4", {"two_level": False}), ("hif4", {})]


def _nan_scale(q):
    scale = np.asarray(q.scale)
    return np.isnan(scale.astype(np.float32)) if q.fmt.kind == "nvfp4" else scale == 0xFF


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name, options", _BLOCK_CASES, ids=str)
def test_block_with_non_finite_value_is_nan_and_other_blocks_unchanged(name, options, bad):
    x = _row((2, 128))
    x[0, 12] = 40.0  # the tensor's largest value, in the bad block (NVFP4's global scale)
    x[0, 5] = bad
    y, fq, q = _round_trip(x, name, **options)
    np.testing.assert_array_equal(y, fq)
    block = q.fmt.group_size
    assert np.isnan(y[0, :block]).all() and np.isfinite(y[0, block:]).all()
    assert np.isfinite(y[1]).all()
    nan_scale = _nan_scale(q)
    assert nan_scale[0, 0] and nan_scale.sum() == 1
    clean = x.copy()
    clean[0, 5] = 0.0
    ref = np.asarray(F.dequantize(F.quantize(jnp.asarray(clean), name, **options)))
    np.testing.assert_array_equal(y[0, block:], ref[0, block:])
    np.testing.assert_array_equal(y[1], ref[1])
    jitted = jax.jit(lambda v: F.dequantize(F.quantize(v, name, **options)))(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(jitted), y)


def test_hif8_and_casts_are_elementwise():
    x = _row((1, 8))
    x[0, 1], x[0, 2], x[0, 3] = np.nan, np.inf, -np.inf
    hif8, _, _ = _round_trip(x, "hif8")  # saturating by default (FORMATS.md)
    assert np.isnan(hif8[0, 1]) and list(hif8[0, 2:4]) == [32768.0, -32768.0]
    unsat, _, _ = _round_trip(x, "hif8", saturate=False)
    assert list(unsat[0, 2:4]) == [np.inf, -np.inf]
    for name in ("bf16", "fp16"):
        y, fq, _ = _round_trip(x, name)
        assert np.isnan(y[0, 1]) and list(y[0, 2:4]) == [np.inf, -np.inf]
        np.testing.assert_array_equal(y, fq)
    np.testing.assert_array_equal(hif8, np.asarray(F.fake_quant(jnp.asarray(x), "hif8")))
    np.testing.assert_array_equal(np.delete(hif8, [1, 2, 3]), np.delete(unsat, [1, 2, 3]))


def test_learnable_clip_leaves_non_finite_values_to_the_quantizer():
    x = _row()
    x[0, 5] = np.nan
    amax = np.asarray(F.group_amax(jnp.asarray(x), "int4"))
    np.testing.assert_array_equal(amax[0], np.abs(np.delete(x[0], 5)).max())
    y = np.asarray(F.fake_quant_learnable_clip(jnp.asarray(x), jnp.float32(0.8), "int4"))
    assert np.isnan(y[0, 5]) and np.isnan(y).sum() == 1


_EMPTY_FORMATS = [*F.names(), F.get_format("int4", group_size=32),
                  F.get_format("int8", symmetric=False, granularity="tensor")]


@pytest.mark.parametrize("fmt", _EMPTY_FORMATS, ids=str)
def test_empty_arrays_give_empty_results(fmt):
    for shape, axis in (((0, 64), -1), ((4, 0), -1), ((3, 0, 5), 0)):
        x = jnp.zeros(shape, jnp.bfloat16)
        q = F.quantize(x, fmt, axis=axis)
        y = F.dequantize(q)
        assert y.shape == shape and y.dtype == jnp.bfloat16 and q.shape == shape
        fq = F.fake_quant(x, fmt, axis=axis)
        assert fq.shape == shape and fq.dtype == jnp.bfloat16
    g = jax.grad(lambda v: jnp.sum(F.fake_quant(v, fmt, ste="clipped")))(jnp.zeros((0, 64)))
    assert g.shape == (0, 64)

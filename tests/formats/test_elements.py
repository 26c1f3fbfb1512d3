"""Element codes against ml_dtypes: exhaustive decode, RNE ties, saturation, NaN/Inf."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import effjax.formats as F
from effjax.formats import elements as el

ORACLE = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2,
          "e2m3": ml_dtypes.float6_e2m3fn, "e3m2": ml_dtypes.float6_e3m2fn,
          "e2m1": ml_dtypes.float4_e2m1fn}


def _oracle_values(name):
    bits = F.element_format(name).bits
    codes = np.arange(2**bits, dtype=np.uint8)
    return codes, codes.view(ORACLE[name]).astype(np.float32)


@pytest.mark.parametrize("name", sorted(ORACLE))
def test_decode_every_code_matches_ml_dtypes(name):
    codes, ref = _oracle_values(name)
    ours = np.asarray(F.decode(codes, name))
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    ok = ~np.isnan(ref)
    np.testing.assert_array_equal(ours[ok], ref[ok])
    np.testing.assert_array_equal(np.signbit(ours[ok]), np.signbit(ref[ok]))


def test_signed_sets_the_sign_bit_of_zeros_infs_and_nans():
    mag = np.array([0.0, 1.5, np.inf, 2.0**-140, np.nan, 0.0], np.float32)
    neg = np.array([True, True, True, True, True, False])
    got = np.asarray(el.signed(jnp.asarray(mag), jnp.asarray(neg)))
    np.testing.assert_array_equal(got.view(np.uint32),
                                  np.copysign(mag, np.where(neg, -1.0, 1.0)).astype(
                                      np.float32).view(np.uint32))


def test_decode_e8m0_every_code():
    codes = np.arange(256, dtype=np.uint8)
    ref = codes.view(ml_dtypes.float8_e8m0fnu).astype(np.float32)
    ours = np.asarray(F.decode(codes, "e8m0"))
    np.testing.assert_array_equal(ours[:255], ref[:255])
    assert np.isnan(ours[255]) and np.isnan(ref[255])


@pytest.mark.parametrize("name", sorted(ORACLE))
def test_encode_roundtrips_every_finite_code(name):
    codes, values = _oracle_values(name)
    ok = np.isfinite(values)
    ours = np.asarray(F.encode(values[ok], name))
    np.testing.assert_array_equal(ours, codes[ok])


@pytest.mark.parametrize("name", sorted(ORACLE))
def test_encode_random_and_ties_match_ml_dtypes_rne(name):
    elem = F.element_format(name)
    _, grid = _oracle_values(name)
    grid = np.unique(grid[np.isfinite(grid)])
    mids = (grid[1:] + grid[:-1]) / 2  # exact ties: RNE picks the even code
    rng = np.random.RandomState(0)
    rand = rng.randn(20000).astype(np.float32) * elem.max_normal / 3
    tiny = rng.randn(2000).astype(np.float32) * elem.min_subnormal * 4
    x = np.concatenate([mids, rand, tiny]).astype(np.float32)
    x = np.clip(x, -elem.max_normal, elem.max_normal)
    ref = x.astype(ORACLE[name]).view(np.uint8)
    ours = np.asarray(F.encode(x, name))
    # ml_dtypes may keep the sign of a zero that we also keep; compare codes exactly
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("name", sorted(ORACLE))
def test_saturation_and_specials(name):
    elem = F.element_format(name)
    big = np.array([elem.max_normal * 1.1, 1e30, np.inf, -np.inf, -1e30], np.float32)
    sat = np.asarray(F.decode(F.encode(big, name), name))
    np.testing.assert_array_equal(sat, [elem.max_normal, elem.max_normal, elem.max_normal,
                                        -elem.max_normal, -elem.max_normal])
    unsat = np.asarray(F.decode(F.encode(big, name, saturate=False), name))
    if elem.specials == "ieee":
        np.testing.assert_array_equal(unsat, [np.inf, np.inf, np.inf, -np.inf, -np.inf])
    elif elem.specials == "fn":
        assert np.isnan(unsat).all()
    else:  # no specials: always saturates
        np.testing.assert_array_equal(unsat, sat)
    nan_code = np.asarray(F.encode(np.array([np.nan], np.float32), name))
    np.testing.assert_array_equal(nan_code, np.array([np.nan], np.float32)
                                  .astype(ORACLE[name]).view(np.uint8))


def test_e8m0_encode_matches_ml_dtypes():
    x = np.array([1.0, 1.5, 1.49, 3.0, 0.75, 2.0**-127, 2.0**-130, 2.0**127, 2.0**127 * 1.6,
                  0.0, -1.0, np.inf, np.nan], np.float32)
    np.testing.assert_array_equal(np.asarray(F.encode(x, "e8m0")),
                                  x.astype(ml_dtypes.float8_e8m0fnu).view(np.uint8))


def test_bad_element_requests():
    with pytest.raises(ValueError, match="unknown element format 'e9m9'.*e2m1"):
        F.encode(np.ones(2, np.float32), "e9m9")
    with pytest.raises(ValueError, match="real floating-point"):
        F.encode(np.ones(2, np.int32), "e2m1")
    with pytest.raises(ValueError, match="integer codes"):
        F.decode(np.ones(2, np.float32), "e2m1")


def test_round_half_even_equals_numpy_round_bit_for_bit():
    rng = np.random.RandomState(0)
    v = np.concatenate([np.arange(-600, 600) / 4, rng.randn(20000) * 300,
                        [np.nan, np.inf, -np.inf, -0.0, 0.0, 0.49999997, -0.49999997,
                         2**22 - 0.5, 2**23 + 1, 3e38]]).astype(np.float32)
    for fn in (el.round_half_even, jax.jit(el.round_half_even)):
        got = np.asarray(fn(jnp.asarray(v)))
        np.testing.assert_array_equal(got.view(np.uint32), np.round(v).view(np.uint32))

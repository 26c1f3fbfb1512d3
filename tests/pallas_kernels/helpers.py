"""Shared inputs of the kernel tests: small shapes with several grid steps and ragged rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import effjax.formats as F

M, KDIM, N = 40, 256, 96  # block_m = 16 leaves a ragged last row tile; block_k = 128: 2 steps
TILES = dict(block_m=16, block_k=128)


def heavy_tailed(shape, seed=0, dtype=jnp.float32):
    return (jax.random.t(jax.random.PRNGKey(seed), 3.0, shape) * 2).astype(dtype)


def assert_same_qarray(a: F.QArray, b: F.QArray):
    """Equal structure, static metadata and every stored array bit for bit."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype
        np.testing.assert_array_equal(np.atleast_1d(np.asarray(x)).view(np.uint8),
                                      np.atleast_1d(np.asarray(y)).view(np.uint8))


# The Triton lowering only takes power-of-two arrays: HiF4 (3 level bytes per 64 elements)
# and MXFP6 (3 bytes per 4 codes) cannot lower there (test_lowering pins the failure).
ON_TRITON = jax.default_backend() == "gpu"
TRITON_UNLOWERABLE = ("hif4", "mxfp6_e2m3", "mxfp6_e3m2")


def lowerable(*fmts) -> list:
    """The formats as pytest params, those Triton cannot lower skipped on a GPU."""
    return [pytest.param(f, marks=pytest.mark.skipif(
        ON_TRITON and F.get_format(f).name in TRITON_UNLOWERABLE,
        reason="Triton lowers only power-of-two arrays (see test_lowering.EXPECTED)"))
        for f in fmts]


def assert_same_sums(got, ref):
    """A matmul kernel against its reference: bit-equal in interpret mode; on Triton, tl.dot
    adds in its own order (seen on an H200: 3e-7 of the largest output in float32), so
    within one rounding of the output dtype, relative to the largest output."""
    got, ref = np.asarray(got), np.asarray(ref)
    if not ON_TRITON:
        np.testing.assert_array_equal(got, ref)
        return
    tol = 1e-6 if got.dtype == np.float32 else 1e-2
    np.testing.assert_allclose(got.astype(np.float32), ref.astype(np.float32), rtol=0,
                               atol=tol * float(np.max(np.abs(ref.astype(np.float32)))))

"""Shared inputs of the kernel tests: small shapes with several grid steps and ragged rows."""

import jax
import jax.numpy as jnp
import numpy as np

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

"""Hadamard constructions: H H^T = n I exactly, over every order the constructions reach."""

import jax
import numpy as np
import pytest

from effjax.transforms import (
    hadamard,
    hadamard_factors,
    hadamard_pair,
    kron_apply,
    random_hadamard,
    random_orthogonal,
)


@pytest.mark.parametrize("n", [1, 2, 4, 12, 20, 28, 36, 48, 64, 72, 96, 576, 640, 1536])
def test_hadamard_is_hadamard(n):
    h = hadamard(n)
    assert h.shape == (n, n) and set(np.unique(h)) <= {-1, 1}
    np.testing.assert_array_equal(h @ h.T, n * np.eye(n, dtype=np.int64))


def test_factors_take_the_largest_power_of_two():
    assert [hadamard_factors(n)[0].shape[0] for n in (576, 1536, 1152, 4096, 640)] == [
        36, 12, 36, 1, 20]
    with pytest.raises(ValueError, match="no Hadamard matrix of order 6"):
        hadamard(6)
    with pytest.raises(ValueError, match="no Hadamard matrix of order 92"):
        hadamard(92)
    with pytest.raises(ValueError, match="n must be a positive int, got 0"):
        hadamard(0)


def test_pair_applies_the_normalized_matrix():
    x = np.random.RandomState(0).randn(3, 96).astype(np.float32)
    left, right = hadamard_pair(96)
    np.testing.assert_allclose(kron_apply(x, left, right), x @ (hadamard(96) / np.sqrt(96)),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="needs 96 features, got x of shape"):
        kron_apply(x[:, :95], left, right)


@pytest.mark.parametrize("make", [random_hadamard, random_orthogonal])
def test_random_rotations_are_orthogonal_and_keyed(make):
    a, b = make(48, jax.random.PRNGKey(0)), make(48, jax.random.PRNGKey(1))
    np.testing.assert_allclose(np.asarray(a) @ np.asarray(a).T, np.eye(48), atol=2e-6)
    assert not np.allclose(a, b)

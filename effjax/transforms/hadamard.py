"""Hadamard matrices of the orders the classic constructions reach, and rotations built on them.

A Hadamard matrix H of order n has entries +-1 and H H^T = n I, so H / sqrt(n) is orthogonal.
Order 2^a comes from Sylvester's doubling; other orders as a Kronecker product of a Paley
matrix (order q + 1 for a prime q = 3 mod 4, order 2(q + 1) for a prime q = 1 mod 4) and a
Sylvester matrix: 576 = 72 x 8 (q = 71), 1536 = 12 x 128 (q = 11), 1152 = 36 x 32 (q = 17).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


def _is_prime(q: int) -> bool:
    return q >= 2 and all(q % d for d in range(2, int(q**0.5) + 1))


def _jacobsthal(q: int) -> np.ndarray:
    """Q[i, j] = chi(j - i) mod q, chi the quadratic character (chi(0) = 0)."""
    residues = {(x * x) % q for x in range(1, q)}
    chi = np.array([0] + [1 if d in residues else -1 for d in range(1, q)])
    idx = (np.arange(q)[None, :] - np.arange(q)[:, None]) % q
    return chi[idx]


def _paley1(q: int) -> np.ndarray:
    """Order q + 1 for a prime q = 3 (mod 4): I + [[0, 1^T], [-1, Q]]."""
    s = np.zeros((q + 1, q + 1), np.int64)
    s[0, 1:], s[1:, 0], s[1:, 1:] = 1, -1, _jacobsthal(q)
    return s + np.eye(q + 1, dtype=np.int64)


def _paley2(q: int) -> np.ndarray:
    """Order 2(q + 1) for a prime q = 1 (mod 4), from the symmetric conference matrix C:
    C (x) [[1, -1], [-1, -1]] + I (x) [[1, 1], [1, -1]]."""
    c = np.zeros((q + 1, q + 1), np.int64)
    c[0, 1:], c[1:, 0], c[1:, 1:] = 1, 1, _jacobsthal(q)
    return (np.kron(c, np.array([[1, -1], [-1, -1]]))
            + np.kron(np.eye(q + 1, dtype=np.int64), np.array([[1, 1], [1, -1]])))


def _sylvester(n: int) -> np.ndarray:
    h = np.ones((1, 1), np.int64)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def _odd_part(m: int) -> np.ndarray | None:
    """A Paley matrix of order m, or None."""
    if m == 1:
        return np.ones((1, 1), np.int64)
    if _is_prime(m - 1) and (m - 1) % 4 == 3:
        return _paley1(m - 1)
    if m % 2 == 0 and _is_prime(m // 2 - 1) and (m // 2 - 1) % 4 == 1:
        return _paley2(m // 2 - 1)
    return None


@functools.cache
def hadamard_factors(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(P, S): a Paley (or 1 x 1) matrix and a Sylvester matrix with kron(P, S) of order n,
    the Sylvester part as large as can be.

    Raises:
      ValueError: if no such pair exists (n must be 1, 2 or a multiple of 4, and n / 2^a
        of a Paley order for some a).
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    two = n & -n  # the largest power of two dividing n
    while two >= 1:
        odd = _odd_part(n // two)
        if odd is not None:
            return odd, _sylvester(two)
        two //= 2
    raise ValueError(f"no Hadamard matrix of order {n} from the Sylvester and Paley "
                     "constructions (n must be 1, 2 or a multiple of 4; e.g. 92 and 188 are not "
                     "reached)")


def hadamard(n: int) -> np.ndarray:
    """A Hadamard matrix of order n: (n, n) int64 entries +-1, H H^T = n I.

    Args:
      n: the order (see `hadamard_factors` for which orders are reached).

    Returns:
      The matrix, kron(P, S) of `hadamard_factors(n)`.
    """
    p, s = hadamard_factors(n)
    return np.kron(p, s)


def hadamard_pair(n: int, dtype=jnp.float32) -> tuple[Float[Array, "m m"], Float[Array, "s s"]]:
    """The orthogonal Kronecker factors (P / sqrt(m), S / sqrt(s)) of `hadamard(n) / sqrt(n)`,
    the form online transforms take (`effjax.transforms.kron_apply`)."""
    p, s = hadamard_factors(n)
    return (jnp.asarray(p / np.sqrt(p.shape[0]), dtype),
            jnp.asarray(s / np.sqrt(s.shape[0]), dtype))


def random_hadamard(n: int, key: jax.Array) -> Float[Array, "n n"]:
    """QuaRot's randomized Hadamard rotation: diag(random signs) @ H / sqrt(n), float32
    orthogonal (built in float64)."""
    signs = np.asarray(jax.random.rademacher(key, (n,)), np.float64)
    return jnp.asarray(signs[:, None] * hadamard(n) / np.sqrt(n), jnp.float32)


def random_orthogonal(n: int, key: jax.Array) -> Float[Array, "n n"]:
    """A Haar-random orthogonal matrix (QR of a Gaussian, signs fixed), float32 from
    float64."""
    g = np.asarray(jax.random.normal(key, (n, n), jnp.float32), np.float64)
    q, r = np.linalg.qr(g)
    return jnp.asarray(q * np.sign(np.diag(r))[None, :], jnp.float32)

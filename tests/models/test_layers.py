"""The decoder's building blocks against float64 numpy references."""

import jax.numpy as jnp
import numpy as np

from effjax.models import apply_rope, linear, rms_norm

rng = np.random.RandomState(0)


def test_linear_matches_float64():
    x, w, b = rng.randn(3, 5, 16), rng.randn(16, 7), rng.randn(7)
    out = linear(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32),
                 jnp.asarray(b, jnp.float32))
    np.testing.assert_allclose(out, x @ w + b, atol=1e-5)
    assert linear(jnp.ones((2, 4), jnp.bfloat16), jnp.ones((4, 3))).dtype == jnp.bfloat16


def test_rms_norm_matches_float64():
    x, w = rng.randn(4, 32) * 3, rng.randn(32)
    ref = w * x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(rms_norm(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32),
                                        1e-6), ref, rtol=1e-5, atol=1e-5)


def test_rope_is_a_complex_rotation_of_the_halves():
    d, pos = 8, np.array([[0, 3, 17]])
    inv_freq = 1.0 / 10000 ** (np.arange(0, d, 2) / d)
    x = rng.randn(1, 3, 2, d)
    z = (x[..., : d // 2] + 1j * x[..., d // 2 :]) * np.exp(1j * pos[..., None, None] * inv_freq)
    ref = np.concatenate([z.real, z.imag], axis=-1)
    out = apply_rope(jnp.asarray(x, jnp.float32), jnp.asarray(pos, jnp.int32),
                     jnp.asarray(inv_freq, jnp.float32))
    np.testing.assert_allclose(out, ref, atol=1e-5)

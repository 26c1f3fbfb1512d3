"""The building blocks of the decoder: the one linear function, RMSNorm, RoPE (attention is
`effjax.models.sdpa`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from effjax.formats import QArray
from effjax.formats.registry import Format
from effjax.quant.dot import qdot


def linear(
    x: Float[Array, "... d_in"],
    kernel: Float[Array, "d_in d_out"] | QArray,
    bias: Float[Array, " d_out"] | None = None,
    act: Format | None = None,
    impl: str = "auto",
) -> Float[Array, "... d_out"]:
    """The single linear map of every model: `x @ kernel + bias` in x's dtype.

    Every projection of the decoder goes through here; quantized execution plugs in via
    `effjax.quant.qdot` (QArray kernels, activation formats).

    Args:
      x: activations; the last axis is contracted.
      kernel: weights laid out (in, out), float or a `QArray` quantized along axis 0.
      bias: optional (out,) bias.
      act: optional activation format (x is quantized along its features).
      impl: "auto", "pallas" or "xla": how a quantized product runs (see `qdot`).

    Returns:
      The projected activations, same dtype as x (float32 accumulation).
    """
    y = qdot(x, kernel, act, impl=impl)
    if bias is not None:
        y = y + bias.astype(x.dtype).reshape((1,) * (y.ndim - 1) + bias.shape)
    return y


def rms_norm(
    x: Float[Array, "... d"], weight: Float[Array, " d"], eps: float
) -> Float[Array, "... d"]:
    """RMSNorm computed in float32, scaled by `weight`, returned in x's dtype."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    weight = weight.astype(x.dtype).reshape((1,) * (x.ndim - 1) + weight.shape)
    return weight * normed.astype(x.dtype)


def apply_rope(
    x: Float[Array, "b t h d"],
    positions: Int[Array, "b t"] | Int[Array, "b t half"],
    inv_freq: Float[Array, " half"],
) -> Float[Array, "b t h d"]:
    """Rotary embedding in the rotate-half layout used by Hugging Face checkpoints.

    Args:
      x: queries or keys.
      positions: one position per token, or one per token and rotary frequency (the
        multimodal and 2D rotary embeddings of vision-language models).
      inv_freq: the inverse frequencies.

    Returns:
      The rotated x, its dtype.
    """
    pos = positions.astype(jnp.float32)
    angles = (pos[..., None] if pos.ndim == 2 else pos) * inv_freq.astype(jnp.float32)[None, None]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


"""FlatQuant: a learnable Kronecker affine transform P = A (x) B before each projection group
of every layer (q/k/v, o_proj, gate/up, down_proj) and a learnable clipping ratio per
output channel of each kernel, trained layer by layer with optax (Adam) so the quantized
layer's output matches the float layer's on the calibration inputs.

The transformed layer computes x P (online, `effjax.transforms.online`) against the kernel
P^-1 W, so before quantization it is the float layer exactly; the transforms start as
Hadamard matrices (orthogonal), the clipping ratios at 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Int

from effjax.models.config import LMConfig
from effjax.ptq.layerwise import (
    CLIP_INIT,
    GROUPS,
    LayerContext,
    clip_ratio,
    clipped_kernel,
    learned_groups,
    train_layerwise,
    weight_format,
)
from effjax.quant.recipe import Recipe
from effjax.transforms import hadamard_pair, online
from effjax.transforms.fold import copy_dicts


def kron_split(d: int) -> tuple[int, int]:
    """(m, n) with m * n = d and n the largest divisor of d at most sqrt(d)."""
    n = max(k for k in range(1, int(d**0.5) + 1) if d % k == 0)
    return d // n, n


def _init_factor(size: int) -> jax.Array:
    """An orthogonal starting factor: a normalized Hadamard matrix when one exists."""
    try:
        left, right = hadamard_pair(size)
        return jnp.kron(left, right)
    except ValueError:
        return jnp.eye(size, dtype=jnp.float32)


def affine_init(layer, recipe: Recipe, index: int, x=None, context=None) -> dict:
    """A layer's starting FlatQuant learnables ({group: left, right, clip}): Hadamard
    factors, no clipping (the calibration inputs x and context are not needed)."""
    learn = {}
    for name, block, projs in learned_groups(layer, recipe, index):
        m, n = kron_split(layer[block][projs[0]]["kernel"].shape[0])
        learn[name] = {"left": _init_factor(m), "right": _init_factor(n),
                       "clip": {p: jnp.full((layer[block][p]["kernel"].shape[1],), CLIP_INIT)
                                for p in projs}}
    return learn


def kron_input(t: dict) -> online.Kron:
    """A group's online input transform: P = left (x) right."""
    return online.Kron(t["left"], t["right"])


def affine_layer(layer, learn: dict, recipe: Recipe, index: int, *, fake: bool,
                 input_transform=kron_input):
    """The layer with P^-1 W kernels behind each learned group (P = left (x) right of the
    group's learnables t), fake-quantized with the learned clipping (fake=True) or clipped
    and quantized to QArrays (fake=False), and `input_transform(t)` (P itself by default) as
    the group's online input transform."""
    out = copy_dicts(layer)
    for name, t in learn.items():
        block, projs = GROUPS[name]
        inv = jnp.kron(jnp.linalg.inv(t["left"]), jnp.linalg.inv(t["right"]))
        for p in projs:
            fmt = weight_format(recipe, index, block, p)
            w = jnp.matmul(inv, out[block][p]["kernel"].astype(jnp.float32),
                           precision=jax.lax.Precision.HIGHEST)
            ratio = clip_ratio(t["clip"][p])[None, :]
            out[block][p]["kernel"] = clipped_kernel(w, ratio, fmt, fake=fake)
            out[block][p][online.INPUT] = input_transform(t)
    return out


def flatquant(params, tokens: Int[Array, "n t"], recipe: Recipe, *,
              config: LMConfig, steps: int = 50, batch_size: int = 4, learning_rate: float = 5e-3,
              context: LayerContext | None = None,
              progress: bool = True) -> tuple[dict, dict[int, list[float]]]:
    """Learns the transforms and clipping layer by layer and quantizes.

    Layer i trains on the inputs the already-quantized layers 0..i-1 produce, against the
    float layer's output on the float model's inputs (`train_layerwise`).

    Args:
      params: float decoder parameters.
      config: their config.
      tokens: (n, t) calibration windows.
      recipe: weight formats of the projections (a group is learned when all its
        projections have one; others stay float), activation / KV formats in the loss.
      steps: Adam steps per layer.
      batch_size: windows per step.
      learning_rate: Adam's step size.
      context: the windows' layer-0 inputs, positions, attention mask and token types
        (`effjax.ptq.layerwise.LayerContext`; default causal text windows).
      progress: show a progress bar.

    Returns:
      (params with QArray kernels and the learned online transforms, {layer: losses}).
    """
    out, losses, _ = train_layerwise(
        params, tokens, recipe, init=affine_init, transformed=affine_layer, steps=steps,
        batch_size=batch_size, learning_rate=learning_rate, desc="flatquant", context=context,
        progress=progress, config=config)
    return out, losses

"""FreeAct: token-type-specific activation transforms with one static weight transform.

FlatQuant runs each projection group's input x through P = left (x) right against the kernels
P^-1 W, so x P P^-1 W = x W for every x. FreeAct keeps the one weight side M W (M = P^-1) but
relaxes the activation side per token type k (vision / text tokens in a VLM, masked /
unmasked tokens in a masked-diffusion LM): activations are rank-deficient, so any

    T_k = M^-1 + Q_k Z_k

with Q_k a basis of the complement of type k's calibration row space keeps x T_k M W = x W
for every x in that space (x Q_k = 0), whatever Z_k is. Q_k holds the eigenvectors of
X_k^T X_k outside the top r_k, r_k the fewest whose eigenvalues hold `energy` of the sum
(`complement_basis`). Z_k (starting at 0, so FreeAct starts as FlatQuant), M and the
per-channel weight clipping are learned with Adam layer by layer (`train_layerwise`) on the
quantized layer's output error, each token type weighted equally.

At inference each token's type (`effjax.models.forward`'s `token_types`, traced) picks its
T_k inside the jitted forward (`effjax.transforms.online.per_type_apply`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int

from effjax.models.config import LMConfig
from effjax.ptq.calibrate import block_inputs
from effjax.ptq.flatquant import affine_init, affine_layer
from effjax.ptq.layerwise import GROUPS, LayerContext, train_layerwise
from effjax.quant.recipe import Recipe
from effjax.transforms import online


def _check_energy(energy: float) -> None:
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must be in (0, 1], got {energy}")


def complement_basis(gram: Float[Array, "d d"], energy: float
                     ) -> tuple[Float[np.ndarray, "d d"], int]:
    """The complement of a calibration row space, from the Gram matrix X^T X.

    Args:
      gram: X^T X of the type's calibration inputs.
      energy: the share of the eigenvalue sum the row space keeps, in (0, 1].

    Returns:
      (Q (d, d) float32: its first r columns zero, the others orthonormal eigenvectors of
      the d - r smallest eigenvalues; r, the row space's estimated rank: the fewest top
      eigenvalues holding `energy` of the sum).
    """
    _check_energy(energy)
    lam, vec = np.linalg.eigh(np.asarray(gram, np.float64))
    lam, vec = np.clip(lam[::-1], 0.0, None), vec[:, ::-1]
    total = lam.sum()
    if total <= 0.0:
        raise ValueError("the calibration inputs are all zero: no row space to keep")
    share = np.cumsum(lam) / total
    rank = len(lam) if energy >= 1.0 else min(int(np.searchsorted(share, energy) + 1), len(lam))
    basis = np.zeros_like(vec)
    basis[:, rank:] = vec[:, rank:]
    return basis.astype(np.float32), rank


def type_transforms(t: dict) -> Float[Array, "k d d"]:
    """The activation-side transforms T_k = P + Q_k Z_k of a group's learnables (P = left (x)
    right = M^-1; the bases Q_k are constants, not learned)."""
    p = jnp.kron(t["left"], t["right"])
    basis = jax.lax.stop_gradient(t["basis"])
    return p[None] + jnp.einsum("kde,kef->kdf", basis, t["z"],
                                precision=jax.lax.Precision.HIGHEST)


def _per_type_input(t: dict) -> online.PerType:
    return online.PerType(type_transforms(t))


def _transformed(layer, learn: dict, recipe: Recipe, index: int, *, fake: bool):
    return affine_layer(layer, learn, recipe, index, fake=fake, input_transform=_per_type_input)


@functools.partial(jax.jit, static_argnames=("config", "index", "num_types"))
def type_grams(layer, x: Float[Array, "n t h"], context: LayerContext, index: int,
               num_types: int, *, config: LMConfig) -> dict[str, Float[Array, "k d d"]]:
    """Per token type, X_k^T X_k of every projection's input in the float layer.

    Args:
      layer: `params["layers"][index]`.
      x: the residual stream entering the layer.
      context: the windows' positions, attention mask and token types (all required).
      config: the model's config.
      index: the layer's index.
      num_types: k.

    Returns:
      {projection path: (k, d_in, d_in) float32}.
    """
    seen = block_inputs(layer, x, index, context=context, config=config)
    pick = jax.nn.one_hot(context.token_types.reshape(-1), num_types, dtype=jnp.float32)
    return {path: jnp.einsum("nk,ni,nj->kij", pick, a, a, precision=jax.lax.Precision.HIGHEST)
            for path, a in seen.items()}


def freeact(params, tokens: Int[Array, "n t"], recipe: Recipe, *,
            config: LMConfig, context: LayerContext, num_types: int = 2, energy: float = 0.99,
            steps: int = 50, batch_size: int = 4, learning_rate: float = 5e-3,
            z_learning_rate: float | None = None,
            progress: bool = True) -> tuple[dict, dict]:
    """Learns FreeAct's transforms and clipping layer by layer and quantizes.

    Layer i trains on the inputs the already-quantized layers 0..i-1 produce, against the
    float layer's output on the float model's inputs; its bases Q_k come from those inputs.

    Args:
      params: float decoder parameters.
      config: their config.
      tokens: (n, t) calibration windows.
      recipe: weight formats of the projections (a group is learned when all its
        projections have one; others stay float), activation / KV formats in the loss.
      context: the windows' layer-0 inputs, positions, attention mask and token types
        (`LayerContext`; token_types required, every type in [0, num_types) present).
      num_types: k, the number of token types.
      energy: the share of each type's eigenvalue sum its row space keeps, in (0, 1]
        (1: no freedom, FlatQuant with type-balanced training).
      steps: Adam steps per layer.
      batch_size: windows per step.
      learning_rate: Adam's step size.
      z_learning_rate: Adam's step size for the Z_k (default `learning_rate`).
      progress: show a progress bar.

    Returns:
      (params with QArray kernels and per-type online transforms (run them with
      `forward(..., token_types=...)`), info): info["losses"] = {layer: losses},
      info["ranks"] = {"<layer>/<group>": [r_k per type]}, info["learned"] = {layer:
      {group: left, right, clip, basis, z}}.
    """
    if context.token_types is None:
        raise ValueError("context.token_types is required: FreeAct learns one transform per "
                         "token type")
    types = np.asarray(context.token_types)
    if types.shape != np.shape(tokens):
        raise ValueError(f"context.token_types must have the tokens' shape {np.shape(tokens)}, "
                         f"got {types.shape}")
    if num_types < 1 or types.min() < 0 or types.max() >= num_types:
        raise ValueError(f"token types must be in [0, num_types={num_types}), got values in "
                         f"[{types.min()}, {types.max()}]")
    missing = sorted(set(range(num_types)) - set(np.unique(types).tolist()))
    if missing:
        raise ValueError(f"token types {missing} have no calibration tokens")
    _check_energy(energy)
    ranks: dict[str, list[int]] = {}

    def init(layer, rec, index, x, ctx):
        learn = affine_init(layer, rec, index)
        if not learn:
            return learn
        grams = type_grams(layer, x, ctx, index, num_types, config=config)
        for name, t in learn.items():
            block, projs = GROUPS[name]
            gram = np.asarray(grams[f"layers/{index}/{block}/{projs[0]}"])
            found = [complement_basis(g, energy) for g in gram]
            t["basis"] = jnp.asarray(np.stack([b for b, _ in found]))
            t["z"] = jnp.zeros_like(t["basis"])
            ranks[f"{index}/{name}"] = [r for _, r in found]
        return learn

    z_rate = learning_rate if z_learning_rate is None else z_learning_rate
    optimizer = optax.multi_transform(
        {"z": optax.adam(z_rate), "rest": optax.adam(learning_rate)},
        lambda learn: jax.tree_util.tree_map_with_path(
            lambda path, _: "z" if path[-1].key == "z" else "rest", learn))
    out, losses, learned = train_layerwise(
        params, tokens, recipe, init=init, transformed=_transformed, steps=steps,
        batch_size=batch_size, learning_rate=learning_rate, desc="freeact", context=context,
        optimizer=optimizer, progress=progress, config=config)
    return out, {"losses": losses, "ranks": ranks, "learned": learned}

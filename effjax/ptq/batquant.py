"""BATQuant: a block-wise affine transform aligned with the MX blocks of each projection
group's input, Global and Private Kronecker (GPK) factors, and block-wise learnable
clipping, trained layer by layer (`train_layerwise`) on the quantized layer's output error.

For an input of nb blocks of b features (b = the MX block, 32) the transform is
blockdiag(B_1, ..., B_nb): block k of x becomes x_k B_k and rows of block k of the kernel
become B_k^-1 W_k, so the float layer is unchanged and no energy crosses a block boundary.

Variants:
  "gpk": B_k = kron(G, P_k), G (g x g) shared by the layer's blocks, P_k (p x p) private,
    g p = b (4 x 8 for b = 32).
  "full": B_k a full b x b matrix.
  "orthogonal": B_k a full b x b orthogonal matrix (no scaling: the rotation-only ablation).

Invertibility is kept by construction: every matrix is parametrized as
M = H Q(A1) diag(exp(s)) Q(A2)^T, H the normalized Hadamard matrix of its order and
Q(A) = (I - K)^-1 (I + K), K = A - A^T, the Cayley map onto rotations (`cayley`,
by matrix products); M^-1 =
Q(A2) diag(exp(-s)) Q(A1)^T H^T in closed form (no matrix inverse) and the condition
number of M is exp(max s - min s). At A1 = A2 = 0, s = 0 every B_k is the b x b Hadamard
matrix (MR-GPTQ's block rotation), the start of training.

Clipping: one ratio (`clip_ratio`, 1 at the start) per (block, output channel) of every
kernel (the weight's MX
blocks) and, when the recipe quantizes the group's input, one per input block for the
activations (`effjax.transforms.online.clip_blocks`), applied after the transform.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from effjax.models.config import LMConfig
from effjax.ptq.layerwise import (
    CLIP_INIT,
    GROUPS,
    clip_ratio,
    clipped_kernel,
    learned_groups,
    train_layerwise,
    weight_format,
)
from effjax.quant.recipe import Recipe
from effjax.transforms import hadamard, online
from effjax.transforms.fold import copy_dicts

VARIANTS = ("gpk", "full", "orthogonal")


def gpk_split(block: int) -> tuple[int, int]:
    """(g, p): the global and private factor orders of a block, g p = block, g <= p and as
    close as powers of two allow (32 -> (4, 8))."""
    if block < 4 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 4, got {block}")
    g = 2 ** (int(np.log2(block)) // 2)
    return g, block // g


def cayley(a: Float[Array, "*n m m"], iters: int = 32) -> Float[Array, "*n m m"]:
    """The Cayley rotation (I - K)^-1 (I + K), K = A - A^T, by matrix products only.

    (I - K)^-1 comes from Newton-Schulz iterations X <- X (2I - M X), M = I - K, started at
    X = M^T / (1 + |K|_F^2). M M^T = I + K^T K, so every eigenvalue of I - M X0 lies in
    [0, 1 - 1 / (1 + |K|_F^2)]: the iteration converges for every K, squaring the error
    each step (32 steps reach float32 precision for |K|_F^2 up to ~10^8). Products only,
    because XLA:CPU deadlocks on the LAPACK solve inside a full layer's training graph at
    SmolLM2's widths (the first step of the "full" and "orthogonal" variants never ended).

    Args:
      a: (..., m, m) unconstrained parameters.
      iters: Newton-Schulz steps.

    Returns:
      (..., m, m) orthogonal matrices, float32.
    """
    k = a - jnp.swapaxes(a, -1, -2)
    eye = jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape)
    m = eye - k
    x = jnp.swapaxes(m, -1, -2) / (1.0 + jnp.sum(k * k, axis=(-1, -2), keepdims=True))
    x = jax.lax.fori_loop(0, iters, lambda _, x: x @ (2.0 * eye - m @ x), x)
    return x @ (eye + k)


def _factor(size: int, count: int | None, scaled: bool) -> dict:
    """Learnable parameters of one (or `count` stacked) size x size matrix, at Hadamard."""
    shape = (size, size) if count is None else (count, size, size)
    out = {"a1": jnp.zeros(shape, jnp.float32)}
    if scaled:
        out["a2"] = jnp.zeros(shape, jnp.float32)
        out["s"] = jnp.zeros(shape[:-1], jnp.float32)
    return out


def factor_matrices(f: dict, size: int) -> tuple[jax.Array, jax.Array]:
    """(M, M^-1) of a factor's parameters (see the module docstring), float32."""
    h = jnp.asarray(hadamard(size) / np.sqrt(size), jnp.float32)
    q1 = cayley(f["a1"])
    if "s" not in f:  # orthogonal: M = H Q1
        return h @ q1, jnp.swapaxes(q1, -1, -2) @ h.T
    q2 = cayley(f["a2"])
    m = h @ q1 @ (jnp.exp(f["s"])[..., :, None] * jnp.swapaxes(q2, -1, -2))
    inv = q2 @ (jnp.exp(-f["s"])[..., :, None] * jnp.swapaxes(q1, -1, -2)) @ h.T
    return m, inv


def block_matrices(t: dict, variant: str, nb: int, block: int):
    """The online transform to store (`online.GPK` or `online.BlockDiag`) and the
    (nb, block, block) inverse blocks for the kernel rows."""
    if variant == "gpk":
        g, p = gpk_split(block)
        gm, ginv = factor_matrices(t["global"], g)
        pm, pinv = factor_matrices(t["private"], p)
        inv = jax.vmap(lambda pk: jnp.kron(ginv, pk))(pinv)
        return online.GPK(gm, pm), inv
    m, inv = factor_matrices(t["blocks"], block)
    return online.BlockDiag(m), inv


def _init(layer, recipe: Recipe, index: int, *, variant: str, block: int,
          clip: bool) -> dict:
    learn = {}
    for name, blk, projs in learned_groups(layer, recipe, index):
        d_in = layer[blk][projs[0]]["kernel"].shape[0]
        if d_in % block:
            raise ValueError(f"layers/{index}/{blk}/{projs[0]} has {d_in} inputs, not a "
                             f"multiple of block={block}")
        nb = d_in // block
        if variant == "gpk":
            g, p = gpk_split(block)
            t = {"global": _factor(g, None, True), "private": _factor(p, nb, True)}
        else:
            t = {"blocks": _factor(block, nb, variant == "full")}
        entry = {"t": t}
        if clip:
            entry["wclip"] = {p: jnp.full((nb, layer[blk][p]["kernel"].shape[1]), CLIP_INIT)
                              for p in projs}
            rule = recipe.rule_for(f"layers/{index}/{blk}/{projs[0]}")
            if rule is not None and rule.activation is not None:
                entry["aclip"] = jnp.full((nb,), CLIP_INIT)
        learn[name] = entry
    return learn


def _transformed(layer, learn: dict, recipe: Recipe, index: int, *, fake: bool, variant: str,
                 block: int):
    """The layer with each group's block transform online and B^-1 W kernels, fake-quantized
    with the learned clipping (fake=True) or clipped and quantized to QArrays (the learned
    parameters say which clips exist)."""
    out = copy_dicts(layer)
    for name, entry in learn.items():
        blk, projs = GROUPS[name]
        d_in = out[blk][projs[0]]["kernel"].shape[0]
        nb = d_in // block
        stored, inv = block_matrices(entry["t"], variant, nb, block)
        if "aclip" in entry:
            stored = dataclasses.replace(stored, clip=clip_ratio(entry["aclip"]))
        for p in projs:
            fmt = weight_format(recipe, index, blk, p)
            w = out[blk][p]["kernel"].astype(jnp.float32)
            w = jnp.einsum("kab,kbo->kao", inv, w.reshape(nb, block, -1),
                           precision=jax.lax.Precision.HIGHEST).reshape(w.shape)
            if "wclip" in entry:
                ratio = jnp.repeat(clip_ratio(entry["wclip"][p]), block, axis=0)
            else:
                ratio = jnp.ones_like(w)
            out[blk][p]["kernel"] = clipped_kernel(w, ratio, fmt, fake=fake)
            out[blk][p][online.INPUT] = stored
    return out


def batquant_parameter_count(params, recipe: Recipe, *, variant: str = "gpk", block: int = 32,
                    clip: bool = True) -> dict[str, int]:
    """How many parameters `batquant` learns for a model, by kind.

    Args:
      params: float decoder parameters.
      recipe, variant, block, clip: as for `batquant`.

    Returns:
      {"transform": ..., "clip": ...}: learned transform parameters (the Cayley and scale
      parameters of every factor) and clipping ratios, summed over the layers.
    """
    count = {"transform": 0, "clip": 0}
    for i in sorted(params["layers"]):
        learn = _init(params["layers"][i], recipe, i, variant=variant, block=block, clip=clip)
        for entry in learn.values():
            count["transform"] += sum(x.size for x in jax.tree.leaves(entry["t"]))
            count["clip"] += sum(x.size for k in ("wclip", "aclip") if k in entry
                                 for x in jax.tree.leaves(entry[k]))
    return count


def batquant(params, tokens: Int[Array, "n t"], recipe: Recipe, *,
             config: LMConfig, variant: str = "gpk", block: int = 32, clip: bool = True,
             steps: int = 50, batch_size: int = 4, learning_rate: float = 5e-3,
             progress: bool = True) -> tuple[dict, dict[int, list[float]]]:
    """Learns the block-wise transforms and clipping layer by layer and quantizes.

    Args:
      params: float decoder parameters.
      config: their config.
      tokens: (n, t) calibration windows.
      recipe: weight formats of the projections (a group is learned when all its
        projections have one), activation / KV formats in the loss.
      variant: "gpk", "full" or "orthogonal" (see the module docstring).
      block: the transform's block: the activation format's MX block (32).
      clip: learn the block-wise weight and activation clipping (False: no clipping).
      steps: Adam steps per layer.
      batch_size: windows per step.
      learning_rate: Adam's step size.
      progress: show a progress bar.

    Returns:
      (params with QArray kernels and the learned online block transforms,
      {layer: losses}).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    gpk_split(block)
    options = dict(variant=variant, block=block, clip=clip)

    def init(layer, rec, index, x, context):  # the calibration inputs are not needed
        return _init(layer, rec, index, **options)

    out, losses, _ = train_layerwise(params, tokens, recipe, init=init,
                                     transformed=_BoundTransformed(variant, block), steps=steps,
                                     batch_size=batch_size, learning_rate=learning_rate,
                                     desc=f"batquant ({variant})", progress=progress, config=config)
    return out, losses


class _BoundTransformed:
    """`_transformed` with the variant fixed: hashable by its options, so the jitted loss
    compiles once per (variant, block), not once per call of `batquant`."""

    def __init__(self, variant: str, block: int):
        self.options = (variant, block)

    def __call__(self, layer, learn, recipe, index, *, fake):
        variant, block = self.options
        return _transformed(layer, learn, recipe, index, fake=fake, variant=variant,
                            block=block)

    def __hash__(self):
        return hash(self.options)

    def __eq__(self, other):
        return isinstance(other, _BoundTransformed) and other.options == self.options

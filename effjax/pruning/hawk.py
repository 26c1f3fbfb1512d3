"""HAWK: head-importance-aware visual token pruning, and the baselines it is measured with.

HAWK scores each visual token at layer 0 of the language model, before RoPE: per query head
h, the mean over the text tokens after the image of q_i . k_j / sqrt(d) to each visual key
j; each head's score vector is L2-normalized over the visual tokens and the heads are
summed with weights w_h (`head_importance`: the drop in answer accuracy when head h of
layer 0 is ablated on a calibration set, L1-normalized). The best ceil(n_visual *
keep_ratio) tokens are kept in their original order and the sequence is compacted before
the language model runs (`compact`): kept tokens keep their multimodal position ids, so
rope_deltas and the positions of generated tokens are unchanged, and the KV cache holds
only the kept tokens.

Baselines (`SCORERS`): random; FastV (the attention of the last prompt token at layer K
averaged over heads; layers before K see every token, later layers only the kept ones);
a VisionZip-style dominant-token selection (the attention each merged token's patches
receive, averaged over queries and heads, in the vision encoder's last block); DART
(duplication-aware: a few pivot tokens of largest norm, then the tokens least similar to
any pivot).

Every scorer returns (b, t) scores that are -inf outside the visual tokens; `keep_mask`
turns scores into the kept set, jittable with a static keep count.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from effjax.models.config import LMConfig
from effjax.models.decoder import Params, block_forward, forward
from effjax.models.vlm import VisionConfig, encode_images, vision_geometry

NEG = -jnp.inf


def check_keep_ratio(keep_ratio: float) -> float:
    """Raises ValueError unless 0 < keep_ratio <= 1."""
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    return float(keep_ratio)


def keep_count(num_visual: int, keep_ratio: float) -> int:
    """ceil(num_visual * keep_ratio): the visual tokens kept."""
    return math.ceil(num_visual * check_keep_ratio(keep_ratio) - 1e-9)


def token_roles(tokens: Int[np.ndarray, "b t"], mask: Bool[np.ndarray, "b t"],
                image_token_id: int) -> tuple[np.ndarray, np.ndarray]:
    """The visual tokens and the text queries (real tokens after the last image) of a batch.

    Args:
      tokens: prompt ids (host NumPy).
      mask: True for real tokens.
      image_token_id: the placeholder id.

    Returns:
      (visual (b, t) bool, text_query (b, t) bool).

    Raises:
      ValueError: a row without image tokens, or without text after its image (HAWK's
        queries).
    """
    tokens, mask = np.asarray(tokens), np.asarray(mask, bool)
    visual = (tokens == image_token_id) & mask
    if not visual.any(axis=1).all():
        raise ValueError(f"tokens: rows {np.flatnonzero(~visual.any(axis=1)).tolist()} have no "
                         "image tokens to prune")
    last_image = visual.shape[1] - 1 - np.argmax(visual[:, ::-1], axis=1)
    after = np.arange(tokens.shape[1])[None] > last_image[:, None]
    query = after & mask
    if not query.any(axis=1).all():
        raise ValueError(f"tokens: rows {np.flatnonzero(~query.any(axis=1)).tolist()} have no "
                         "text after the image; HAWK scores visual tokens by the text queries")
    return visual, query


def head_qk(lm_params: Params, embeds: Float[Array, "b t h"], *, config: LMConfig
            ) -> tuple[Float[Array, "b t heads d"], Float[Array, "b t heads d"]]:
    """Layer 0's queries and keys as its attention computes them before RoPE (after the
    input norm, any online input transforms and q/k norm), read from the model's own
    layer (`block_forward(..., capture=("qk_prerope",))`), keys repeated to every query
    head. Under jit the rest of the layer is dead code and not run."""
    _, found = block_forward(lm_params["layers"][0], embeds, config=config, index=0,
                             capture=("qk_prerope",))
    q, k = found["qk_prerope"]["layers/0/attn/q"], found["qk_prerope"]["layers/0/attn/k"]
    return q, jnp.repeat(k, config.num_groups, axis=2)


def hawk_scores(
    lm_params: Params,
    embeds: Float[Array, "b t h"],
    visual: Bool[Array, "b t"],
    text_query: Bool[Array, "b t"],
    head_weights: Float[Array, " heads"],
    *,
    config: LMConfig,
) -> Float[Array, "b t"]:
    """HAWK's visual token scores (see the module docstring); -inf off the visual tokens.

    Args:
      lm_params: the language model's parameters.
      embeds: its input embeddings (image features spliced in).
      visual: the visual tokens.
      text_query: the text tokens whose queries score them.
      head_weights: one weight per layer-0 query head (`head_importance`).
      config: the language model's config.

    Returns:
      float32 scores.
    """
    q, k = head_qk(lm_params, embeds, config=config)
    qk = jnp.einsum("bihd,bjhd->bhij", q, k, preferred_element_type=jnp.float32)
    qk = qk * config.head_dim**-0.5
    w_query = text_query.astype(jnp.float32) / jnp.sum(text_query, axis=1, keepdims=True,
                                                        dtype=jnp.float32)
    per_head = jnp.einsum("bhij,bi->bhj", qk, w_query)
    per_head = jnp.where(visual[:, None], per_head, 0.0)
    norm = jnp.sqrt(jnp.sum(per_head * per_head, axis=-1, keepdims=True))
    per_head = per_head / jnp.maximum(norm, 1e-12)
    score = jnp.einsum("bhj,h->bj", per_head, head_weights.astype(jnp.float32))
    return jnp.where(visual, score, NEG)


def keep_mask(scores: Float[Array, "b t"], visual: Bool[Array, "b t"], mask: Bool[Array, "b t"],
              num_keep: int) -> Bool[Array, "b t"]:
    """The tokens kept: every real non-visual token and the `num_keep` best-scored visual
    tokens of each row (ties to the earlier token)."""
    top = jax.lax.top_k(jnp.where(visual, scores, NEG), num_keep)[1]
    chosen = jnp.zeros(scores.shape, bool).at[jnp.arange(scores.shape[0])[:, None], top].set(True)
    return (mask & ~visual) | (chosen & visual)


def compact(
    embeds: Float[Array, "b t h"],
    tokens: Int[Array, "b t"],
    positions: Int[Array, "3 b t"],
    mask: Bool[Array, "b t"],
    keep: Bool[Array, "b t"],
    width: int,
) -> tuple[Float[Array, "b w h"], Int[Array, "b w"], Int[Array, "3 b w"], Bool[Array, "b w"]]:
    """Drops the tokens not kept: the kept ones, in order, at the right end of `width` slots
    (left padding, as `effjax.decoding.vlm_generate` takes them), with their position ids.

    Args:
      embeds, tokens, positions, mask: the unpruned language-model inputs.
      keep: the tokens kept (a subset of mask), at most `width` per row.
      width: the static compacted length.

    Returns:
      (embeds, tokens, positions, mask) of the compacted sequence.
    """
    keep = keep & mask
    order = jnp.argsort(keep.astype(jnp.int32), axis=1, stable=True)[:, -width:]
    take = lambda a: jnp.take_along_axis(a, order if a.ndim == 2 else order[..., None], axis=1)
    pos = jnp.take_along_axis(positions, jnp.broadcast_to(order[None], (3, *order.shape)),
                              axis=2)
    new_keep = take(keep)
    return take(embeds), jnp.where(new_keep, take(tokens), 0), pos, new_keep


def fastv_scores(
    lm_params: Params,
    embeds: Float[Array, "b t h"],
    positions: Int[Array, "3 b t"],
    mask: Bool[Array, "b t"],
    visual: Bool[Array, "b t"],
    last: Int[Array, " b"],
    *,
    config: LMConfig,
    layer: int,
) -> Float[Array, "b t"]:
    """FastV's scores: the attention the last prompt token pays each visual token at
    `layer` (causal, averaged over heads), from the queries and keys that layer's attention
    scores (`forward(..., capture=("qk",))`: after q/k norm, RoPE, any rotation and
    input transform); -inf off the visual tokens."""
    found = forward(lm_params, jnp.zeros(mask.shape, jnp.int32), config=config,
                    positions=positions, mask=mask, embeds=embeds, capture=("qk",))[2]["qk"]
    rows = jnp.arange(mask.shape[0])
    q = found[f"layers/{layer}/attn/q"][rows, last]
    k = jnp.repeat(found[f"layers/{layer}/attn/k"], config.num_groups, axis=2)
    logits = jnp.einsum("bhd,bjhd->bhj", q, k, preferred_element_type=jnp.float32)
    causal = (jnp.arange(mask.shape[1])[None] <= last[:, None]) & mask
    logits = jnp.where(causal[:, None], logits * config.head_dim**-0.5, NEG)
    probs = jnp.mean(jax.nn.softmax(logits, axis=-1), axis=1)
    return jnp.where(visual, probs, NEG)


def fastv_attn_mask(keep: Bool[Array, "b t"], visual: Bool[Array, "b t"], *, num_layers: int,
                    layer: int) -> Bool[Array, "l b t t"]:
    """Per-layer causal masks for FastV: layers before `layer` see every token, later layers
    only the kept visual tokens (what dropping them after `layer` computes)."""
    t = keep.shape[1]
    causal = jnp.tril(jnp.ones((t, t), bool))[None]
    pruned = causal & (keep | ~visual)[:, None, :]
    full = jnp.broadcast_to(causal, pruned.shape)
    return jnp.stack([full if i < layer else pruned for i in range(num_layers)])


def visionzip_scores(
    vision_params: Params,
    patches: Float[Array, "b n patch_dim"],
    *,
    config: VisionConfig,
    grid: tuple[int, int, int],
) -> Float[Array, "b n_merged"]:
    """VisionZip-style dominance of each merged token: the attention its patches receive in
    the vision encoder's last block (its own queries and keys, `encode_images(...,
    capture=("qk",))`), averaged over heads and queries, summed over the patches it merges.
    Returns (b, n_merged) scores over the image's tokens."""
    last = config.depth - 1
    _, found = encode_images(vision_params, patches, config=config, grid=grid, capture=("qk",))
    q, k = (found["qk"][f"vision/blocks/{last}/attn/{n}"] for n in ("q", "k"))
    _, window, frame = vision_geometry(grid, config)
    group = frame if last in config.fullatt_block_indexes else window
    allowed = jnp.asarray(group[:, None] == group[None, :])
    logits = jnp.einsum("bihd,bjhd->bhij", q, k, preferred_element_type=jnp.float32)
    logits = jnp.where(allowed[None, None], logits * config.head_dim**-0.5, NEG)
    received = jnp.mean(jax.nn.softmax(logits, axis=-1), axis=(1, 2))
    return received.reshape(q.shape[0], -1, config.spatial_merge_size**2).sum(-1)


def dart_scores(embeds: Float[Array, "b t h"], visual: Bool[Array, "b t"], *,
                num_pivots: int = 4) -> Float[Array, "b t"]:
    """DART's duplication-aware scores on the visual tokens: the `num_pivots` tokens of
    largest L2 norm are pivots (kept first); every other token scores minus its largest
    cosine similarity to a pivot, so the least duplicated tokens are kept next."""
    x = embeds.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1))
    pivots = jax.lax.top_k(jnp.where(visual, norm, NEG), num_pivots)[1]
    unit = x / jnp.maximum(norm, 1e-12)[..., None]
    piv = jnp.take_along_axis(unit, pivots[..., None], axis=1)
    dup = jnp.max(jnp.einsum("bth,bph->btp", unit, piv), axis=-1)
    is_pivot = jnp.zeros(visual.shape, bool).at[jnp.arange(x.shape[0])[:, None], pivots].set(True)
    score = jnp.where(is_pivot, 2.0, -dup)
    return jnp.where(visual, score, NEG)


def random_scores(key: jax.Array, visual: Bool[Array, "b t"]) -> Float[Array, "b t"]:
    """Uniform random scores on the visual tokens."""
    return jnp.where(visual, jax.random.uniform(key, visual.shape), NEG)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PruneConfig:
    """Which visual tokens a run keeps.

    Attributes:
      method: "none", "random", "fastv", "visionzip", "dart" or "hawk".
      keep_ratio: fraction of the visual tokens kept, in (0, 1].
      fastv_layer: FastV's K (the layer whose attention scores, and after which tokens drop).
      dart_pivots: DART's pivot count.
    """

    method: str = "hawk"
    keep_ratio: float = 0.2
    fastv_layer: int = 1
    dart_pivots: int = 4

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        check_keep_ratio(self.keep_ratio)
        if self.fastv_layer < 0:
            raise ValueError(f"fastv_layer must be >= 0, got {self.fastv_layer}")
        if self.dart_pivots < 1:
            raise ValueError(f"dart_pivots must be >= 1, got {self.dart_pivots}")


METHODS = ("none", "random", "fastv", "visionzip", "dart", "hawk")


class Pruned(NamedTuple):
    """A pruned language-model input.

    Attributes:
      embeds, tokens, positions, mask: the (compacted) inputs, left-padded when compacted
        (tokens keep their image placeholders, so `effjax.decoding.vlm_generate` runs on
        them with the kept image features).
      attn_mask: per-layer masks (FastV) or None.
      last: index of each row's last prompt token.
      keep: which of the original tokens were kept (b, t).
    """

    embeds: Array
    tokens: Array
    positions: Array
    mask: Array
    attn_mask: Array | None
    last: Array
    keep: Array


def head_importance(accuracy, lm_params: Params, layer: int = 0, *, config: LMConfig
                    ) -> tuple[np.ndarray, np.ndarray]:
    """HAWK's head weights: each query head's accuracy drop when ablated, L1-normalized.

    Args:
      accuracy: lm_params -> accuracy on the calibration set (a float).
      lm_params: the language model's parameters.
      config: its config.
      layer: the layer whose heads are weighed.

    Returns:
      (weights, drops): (num_heads,) float64 drops and the weights, the drops divided by
      their L1 norm (uniform when no ablation changes the accuracy).
    """
    base = accuracy(lm_params)
    d = config.head_dim
    drops = []
    for h in range(config.num_heads):
        kernel = lm_params["layers"][layer]["attn"]["o_proj"]["kernel"]
        ablated = jax.tree.map(lambda a: a, lm_params)
        ablated["layers"][layer]["attn"]["o_proj"]["kernel"] = kernel.at[h * d:(h + 1) * d].set(0)
        drops.append(base - accuracy(ablated))
    drops = np.asarray(drops, np.float64)
    total = np.abs(drops).sum()
    weights = drops / total if total > 0 else np.full(config.num_heads, 1.0 / config.num_heads)
    return weights, drops


def scatter_visual(per_image: Float[Array, "b n"], visual: Bool[Array, "b t"]
                   ) -> Float[Array, "b t"]:
    """Per-image token scores (one image per row, in placeholder order) placed at the
    visual positions of the sequence; -inf elsewhere."""
    index = jnp.clip(jnp.cumsum(visual, axis=1) - 1, 0, per_image.shape[1] - 1)
    return jnp.where(visual, jnp.take_along_axis(per_image, index, axis=1), NEG)


def prune(
    method: PruneConfig,
    lm_params: Params,
    tokens: Int[Array, "b t"],
    embeds: Float[Array, "b t h"],
    positions: Int[Array, "3 b t"],
    mask: Bool[Array, "b t"],
    visual: Bool[Array, "b t"],
    text_query: Bool[Array, "b t"],
    last: Int[Array, " b"],
    *,
    config: LMConfig,
    num_visual: int,
    head_weights: Float[Array, " heads"] | None = None,
    vision_scores: Float[Array, "b n"] | None = None,
    key: jax.Array | None = None,
) -> Pruned:
    """Prunes the visual tokens of a batch by `method` (jittable; every row has
    `num_visual` visual tokens).

    Args:
      method: the `PruneConfig`.
      lm_params: the language model's parameters.
      tokens, embeds, positions, mask: the unpruned inputs (ids with image placeholders, and
        `effjax.pruning.shapes_vlm.lm_inputs`).
      visual, text_query: `token_roles`.
      last: index of each row's last prompt token.
      config: the language model's config.
      num_visual: visual tokens per row.
      head_weights: HAWK's weights (`head_importance`); uniform when None.
      vision_scores: VisionZip's per-image scores (`visionzip_scores`).
      key: PRNG key for "random".

    Returns:
      The `Pruned` input; compacted to t - (num_visual - kept) tokens for every method but
      "none" (unchanged) and "fastv" (per-layer masks).
    """
    b, t = mask.shape
    k = keep_count(num_visual, method.keep_ratio)
    if method.method == "none":
        return Pruned(embeds, tokens, positions, mask, None, last, mask)
    if method.method == "hawk":
        w = (jnp.full((config.num_heads,), 1.0 / config.num_heads) if head_weights is None
             else jnp.asarray(head_weights))
        scores = hawk_scores(lm_params, embeds, visual, text_query, w, config=config)
    elif method.method == "random":
        scores = random_scores(jax.random.PRNGKey(0) if key is None else key, visual)
    elif method.method == "dart":
        scores = dart_scores(embeds, visual, num_pivots=min(method.dart_pivots, k))
    elif method.method == "visionzip":
        if vision_scores is None:
            raise ValueError("vision_scores must be given for method 'visionzip' "
                             "(visionzip_scores of the images)")
        scores = scatter_visual(vision_scores, visual)
    else:  # fastv
        scores = fastv_scores(lm_params, embeds, positions, mask, visual, last, config=config,
                              layer=method.fastv_layer)
        keep = keep_mask(scores, visual, mask, k)
        attn = fastv_attn_mask(keep, visual, num_layers=config.num_layers,
                               layer=method.fastv_layer)
        return Pruned(embeds, tokens, positions, mask, attn, last, keep)
    keep = keep_mask(scores, visual, mask, k)
    width = t - (num_visual - k)
    new = compact(embeds, tokens, positions, mask, keep, width)
    return Pruned(*new, None, jnp.full((b,), width - 1), keep)


def answer_logits(lm_params: Params, pruned: Pruned, *, config: LMConfig
                  ) -> Float[Array, "b v"]:
    """The language model's next-token logits at each row's last prompt token."""
    logits, _ = forward(lm_params, jnp.zeros(pruned.mask.shape, jnp.int32), config=config,
                        positions=pruned.positions, mask=pruned.mask, embeds=pruned.embeds,
                        attn_mask=pruned.attn_mask)
    return logits[jnp.arange(logits.shape[0]), pruned.last]

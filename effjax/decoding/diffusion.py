"""The masked-diffusion sampler, jitted end to end (LLaDA / Fast-dLLM decoding).

The answer canvas (`gen_length` mask tokens after the prompt) is decoded in semi-
autoregressive blocks of `block_length`, left to right. Within a block, each step runs the
model, predicts a token at every masked position (greedy, or Gumbel-max sampling at a
temperature), scores each prediction's confidence and reveals the most confident ones:

- a fixed schedule (`threshold=None`): the block's masked tokens are spread evenly over
  `steps // num_blocks` steps (the first steps take the remainder), as in LLaDA;
- threshold decoding: every prediction whose confidence passes `threshold` is revealed, and
  at least the most confident one, until the block is full (Fast-dLLM's parallel decoding).

Caches (`cache`): "none" recomputes the whole sequence each step; "prefix" computes the
keys/values of everything once per block and then recomputes only the current block and
the suffix after it, reading the prefix from the cache; "dual" also reads the suffix from
the block's cache and recomputes only the current block (Fast-dLLM's dual cache). Both are
approximations (the cached states are those of the block's first step).

Classifier-free guidance (`cfg_scale` > 0, cache "none"): the prompt is replaced by mask
tokens for the unconditional pass; logits = u + (s + 1)(c - u).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from effjax.decoding.generate import cut_at_eos, prepare_prompts
from effjax.models.config import LMConfig
from effjax.models.decoder import Params, forward, init_cache
from effjax.quant.recipe import Recipe

CONFIDENCES = ("max_prob", "margin", "neg_entropy")
CACHES = ("none", "prefix", "dual")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiffusionSampling:
    """How the canvas is denoised.

    Attributes:
      gen_length: tokens generated after the prompt (the canvas).
      block_length: semi-autoregressive block size; must divide gen_length.
      steps: denoising steps in all (fixed schedule); a multiple of the number of blocks,
        at most one step per token. Unused with a threshold.
      confidence: "max_prob" (probability of the prediction), "margin" (top-1 minus top-2
        probability) or "neg_entropy" (minus the predictive entropy).
      temperature: 0 = greedy; otherwise Gumbel-max sampling from softmax(logits / T).
      threshold: reveal every prediction with confidence above it (at least one per step);
        None = the fixed schedule.
      cfg_scale: classifier-free guidance strength (0 = off; cache "none" only).
      cache: "none", "prefix" or "dual" (see the module docstring).
    """

    gen_length: int = 64
    block_length: int = 32
    steps: int = 64
    confidence: str = "max_prob"
    temperature: float = 0.0
    threshold: float | None = None
    cfg_scale: float = 0.0
    cache: str = "none"

    def __post_init__(self):
        for name in ("gen_length", "block_length", "steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.gen_length % self.block_length:
            raise ValueError(f"block_length must divide gen_length, got block_length="
                             f"{self.block_length} and gen_length={self.gen_length}")
        if self.threshold is None and (self.steps % self.num_blocks
                                       or self.steps > self.gen_length):
            raise ValueError(f"steps must be a multiple of the number of blocks "
                             f"({self.num_blocks}) and at most gen_length ({self.gen_length}), "
                             f"got {self.steps}")
        if self.confidence not in CONFIDENCES:
            raise ValueError(f"confidence must be one of {CONFIDENCES}, got {self.confidence!r}")
        if self.cache not in CACHES:
            raise ValueError(f"cache must be one of {CACHES}, got {self.cache!r}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1] or None, got {self.threshold}")
        if self.cfg_scale < 0:
            raise ValueError(f"cfg_scale must be >= 0, got {self.cfg_scale}")
        if self.cfg_scale > 0 and self.cache != "none":
            raise ValueError(f"cfg_scale > 0 needs cache='none', got cache={self.cache!r}")

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def steps_per_block(self) -> int:
        """The most steps a block takes (the schedule's, or one per token with a threshold)."""
        return self.block_length if self.threshold is not None else self.steps // self.num_blocks


def confidence_scores(logits: Float[Array, "*batch v"], tokens: Int[Array, "*batch"],
                      kind: str) -> Float[Array, "*batch"]:
    """The confidence of predicting `tokens` from `logits` (higher = reveal first).

    Args:
      logits: float logits.
      tokens: the predicted token at each position.
      kind: one of `CONFIDENCES`.

    Returns:
      float32 scores, logits' shape without the vocabulary axis.
    """
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    if kind == "max_prob":
        return jnp.take_along_axis(probs, tokens[..., None], axis=-1)[..., 0]
    if kind == "margin":
        top2 = jax.lax.top_k(probs, 2)[0]
        return top2[..., 0] - top2[..., 1]
    if kind == "neg_entropy":
        return jnp.sum(probs * jnp.log(jnp.maximum(probs, 1e-30)), axis=-1)
    raise ValueError(f"confidence must be one of {CONFIDENCES}, got {kind!r}")


def transfer_schedule(num_masked: Int[Array, " b"], steps: int) -> Int[Array, "b steps"]:
    """Tokens revealed per step: num_masked spread evenly, the remainder on the first steps."""
    base = num_masked[:, None] // steps
    extra = (jnp.arange(steps)[None, :] < (num_masked[:, None] % steps)).astype(base.dtype)
    return (base + extra).astype(jnp.int32)


def _reveal(x_blk, logits, key, count, sampling: DiffusionSampling, mask_id: int):
    """One step inside a block: predictions, confidences and which masked tokens to reveal."""
    if sampling.temperature > 0:
        gumbel = jax.random.gumbel(key, logits.shape, jnp.float32)
        pred = jnp.argmax(logits / sampling.temperature + gumbel, axis=-1)
    else:
        pred = jnp.argmax(logits, axis=-1)
    pred = pred.astype(jnp.int32)
    masked = x_blk == mask_id
    conf = jnp.where(masked, confidence_scores(logits, pred, sampling.confidence), -jnp.inf)
    if sampling.threshold is not None:
        best = jnp.arange(x_blk.shape[1])[None, :] == jnp.argmax(conf, axis=1)[:, None]
        reveal = masked & ((conf > sampling.threshold) | best)
    else:
        rank = jnp.argsort(jnp.argsort(-conf, axis=1, stable=True), axis=1)
        reveal = masked & (rank < count[:, None])
    return jnp.where(reveal, pred, x_blk)


class Sampled(NamedTuple):
    """What the masked-diffusion sampler returns.

    Attributes:
      canvas: (b, gen_length) int32, the denoised tokens.
      nfe: () int32, forward passes run (a guided pair counts as one).
      order: (b, gen_length) int32, which forward pass's logits revealed each canvas
        token (1 .. nfe); the canvas after forward pass n is `where(order <= n, canvas,
        mask_id)`.
    """

    canvas: Int[Array, "b g"]
    nfe: Int[Array, ""]
    order: Int[Array, "b g"]


@functools.partial(jax.jit, static_argnames=("config", "sampling", "mask_id", "dtype", "recipe"))
def sample(
    params: Params,
    tokens: Int[Array, "b p"],
    prompt_mask: Bool[Array, "b p"],
    key: jax.Array,
    attn_mask: Bool[Array, "b l l"] | None = None,
    *,
    config: LMConfig,
    sampling: DiffusionSampling,
    mask_id: int,
    dtype=jnp.float32,
    recipe: Recipe | None = None,
) -> Sampled:
    """Denoises a canvas after left-padded prompts (the jitted core of `diffusion_generate`).

    Args:
      params: the masked-diffusion LM's parameters.
      tokens: left-padded prompts.
      prompt_mask: True on real prompt tokens.
      key: PRNG key (Gumbel noise).
      attn_mask: which positions each position of prompt + canvas (l = p + gen_length) may
        attend to (e.g. `effjax.agents.span_attention_mask`); default all.
      config: the model's config.
      sampling: the `DiffusionSampling`.
      mask_id: the mask token.
      dtype: compute dtype.
      recipe: activation formats for quantized params.

    Returns:
      A `Sampled`: the canvas, the forward passes run and the pass that revealed each token.
    """
    s = sampling
    b, p = tokens.shape
    g, blk = s.gen_length, s.block_length
    length = p + g
    x = jnp.concatenate([tokens.astype(jnp.int32), jnp.full((b, g), mask_id, jnp.int32)], 1)
    valid = jnp.concatenate([prompt_mask, jnp.ones((b, g), bool)], axis=1)
    positions = jnp.maximum(jnp.cumsum(valid, axis=1, dtype=jnp.int32) - 1, 0)
    is_prompt = jnp.arange(length)[None, :] < p
    window = {"none": length, "prefix": g, "dual": blk}[s.cache]
    slots = length + (g if s.cache == "prefix" else 0)
    pad = slots - length  # room so the prefix window never runs past the cache
    zero = jnp.zeros((), jnp.int32)
    if attn_mask is None:
        attn_mask = jnp.ones((b, length, length), bool)
    # The mask over the cache's slots, with rows for the prefix window's padding.
    slot_mask = jnp.pad(attn_mask, ((0, 0), (0, pad), (0, pad)))

    def full_logits(x):
        if s.cfg_scale == 0:
            return forward(params, x, config=config, positions=positions, mask=valid,
                           attn_mask=attn_mask, dtype=dtype, recipe=recipe)[0]
        both = jnp.concatenate([x, jnp.where(is_prompt, mask_id, x)], axis=0)
        logits = forward(params, both, config=config, positions=jnp.tile(positions, (2, 1)),
                         mask=jnp.tile(valid, (2, 1)), attn_mask=jnp.tile(attn_mask, (2, 1, 1)),
                         dtype=dtype, recipe=recipe)[0]
        cond, uncond = logits[:b], logits[b:]
        return uncond + (s.cfg_scale + 1.0) * (cond - uncond)

    def refresh(x, start):
        """The block's first forward: its logits, and the cache the later steps read."""
        if s.cache == "none":
            logits = full_logits(x)
            return jax.lax.dynamic_slice_in_dim(logits, start, blk, axis=1), None
        cache = init_cache(config, b, slots, dtype)
        logits, cache = forward(params, x, config=config, positions=positions, mask=valid,
                                cache=cache, attn_mask=slot_mask[:, :length],
                                dtype=dtype, recipe=recipe)
        return jax.lax.dynamic_slice_in_dim(logits, start, blk, axis=1), cache

    def step_logits(x, start, cache):
        if s.cache == "none":
            return refresh(x, start)[0]
        ext = lambda a, fill: jnp.concatenate([a, jnp.full((b, pad), fill, a.dtype)], 1)
        cut = lambda a: jax.lax.dynamic_slice_in_dim(a, start, window, axis=1)
        logits, _ = forward(params, cut(ext(x, 0)), config=config,
                            positions=cut(ext(positions, 0)), mask=cut(ext(valid, False)),
                            cache=cache._replace(length=start),
                            attn_mask=cut(slot_mask), dtype=dtype,
                            recipe=recipe)
        return logits[:, :blk]

    def block(nb, carry):
        x, order, key, nfe = carry
        start = p + nb * blk
        logits, cache = refresh(x, start)
        x_blk = jax.lax.dynamic_slice_in_dim(x, start, blk, axis=1)
        order_blk = jax.lax.dynamic_slice_in_dim(order, start - p, blk, axis=1)
        counts = transfer_schedule(jnp.sum(x_blk == mask_id, axis=1), s.steps_per_block)

        def cond(state):
            step, x_blk = state[0], state[1]
            return (step < s.steps_per_block) & jnp.any(x_blk == mask_id)

        def body(state):
            step, x_blk, order_blk, logits, key, nfe = state
            key, sub = jax.random.split(key)
            new_blk = _reveal(x_blk, logits, sub, counts[:, step], s, mask_id)
            order_blk = jnp.where((x_blk == mask_id) & (new_blk != mask_id), nfe, order_blk)
            more = jnp.any(new_blk == mask_id)
            x_new = jax.lax.dynamic_update_slice(x, new_blk, (zero, start))
            logits = jax.lax.cond(more, lambda: step_logits(x_new, start, cache),
                                  lambda: logits)
            return step + 1, new_blk, order_blk, logits, key, nfe + more.astype(jnp.int32)

        _, x_blk, order_blk, _, key, nfe = jax.lax.while_loop(
            cond, body, (zero, x_blk, order_blk, logits, key, nfe + 1))
        x = jax.lax.dynamic_update_slice(x, x_blk, (zero, start))
        order = jax.lax.dynamic_update_slice(order, order_blk, (zero, start - p))
        return x, order, key, nfe

    order = jnp.zeros((b, g), jnp.int32)
    x, order, _, nfe = jax.lax.fori_loop(0, s.num_blocks, block, (x, order, key, zero))
    return Sampled(x[:, p:], nfe, order)


def diffusion_generate(
    params: Params,
    prompts: Sequence[Sequence[int]],
    *,
    config: LMConfig,
    sampling: DiffusionSampling,
    mask_id: int,
    key: jax.Array | None = None,
    eos_id: int | None = None,
    dtype=jnp.float32,
    pad_to_multiple: int = 16,
    recipe: Recipe | None = None,
) -> tuple[list[list[int]], int]:
    """Generates answers to a batch of prompts with the masked-diffusion sampler.

    Args:
      params: the masked-diffusion LM's parameters.
      config: its config.
      prompts: token id lists, each non-empty; prompt + canvas must fit the context.
      sampling: the `DiffusionSampling`.
      mask_id: the mask token (must be a vocabulary id).
      key: PRNG key (default PRNGKey(0)).
      eos_id: each answer is cut after its first eos (default config.eos_token_id; -1 =
        keep the whole canvas).
      dtype: compute dtype.
      pad_to_multiple: prompt length bucket, to limit recompilation.
      recipe: activation formats for quantized params.

    Returns:
      (one list of token ids per prompt, forward passes run for the batch).
    """
    if not 0 <= mask_id < config.vocab_size:
        raise ValueError(f"mask_id must be a token id in [0, {config.vocab_size}), got {mask_id}")
    tokens, mask, eos_id, key = prepare_prompts(
        prompts, config, max_new_tokens=sampling.gen_length,
        context=config.max_position_embeddings, pad_to_multiple=pad_to_multiple,
        eos_id=eos_id, key=key)
    out = sample(params, tokens, mask, key, config=config, sampling=sampling,
                 mask_id=mask_id, dtype=dtype, recipe=recipe)
    return cut_at_eos(np.asarray(out.canvas).tolist(), eos_id), int(out.nfe)

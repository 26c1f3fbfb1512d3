"""Jitted autoregressive generation with a KV cache: greedy and temperature/top-k/top-p."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from effjax.models.config import LMConfig
from effjax.models.decoder import Params, forward, init_cache
from effjax.models.records import check_tokens
from effjax.models.vlm import VLMConfig, splice_images
from effjax.quant.recipe import Recipe


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """How the next token is drawn.

    Attributes:
      temperature: 0 means greedy (argmax); otherwise logits are divided by it.
      top_k: keep only the k most likely tokens (0 = off).
      top_p: keep the smallest set of tokens whose probability reaches top_p (1.0 = off).
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def sample_logits(
    logits: Float[Array, "b v"], key: jax.Array, sampling: SamplingConfig
) -> Int[Array, " b"]:
    """Draws one token per row from `logits` under `sampling` (pure, jittable).

    Args:
      logits: next-token logits.
      key: PRNG key (unused when greedy).
      sampling: the `SamplingConfig`.

    Returns:
      int32 token ids (b,).
    """
    if sampling.temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / sampling.temperature
    neg = jnp.finfo(jnp.float32).min
    if sampling.top_k:
        kth = jax.lax.top_k(logits, sampling.top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, neg, logits)
    if sampling.top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        # Mass strictly before each sorted token; keep tokens whose preceding mass < top_p.
        before = jnp.cumsum(probs, axis=-1) - probs
        keep = before < sampling.top_p
        threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, neg, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit,
                   static_argnames=("config", "max_new_tokens", "sampling", "dtype", "recipe"))
def _generate(
    params: Params,
    tokens: Int[Array, "b p"],
    mask: Bool[Array, "b p"],
    key: jax.Array,
    eos_id: Int[Array, ""],
    *,
    config: LMConfig,
    max_new_tokens: int,
    sampling: SamplingConfig,
    dtype,
    recipe: Recipe | None,
    embeds: Float[Array, "b p h"] | None = None,
    positions: Int[Array, "3 b p"] | None = None,
):
    """Prefill and token-by-token decoding; `embeds` / (3, b, p) `positions` prefill a
    vision-language prompt, whose new tokens continue from each row's largest position."""
    b, p = tokens.shape
    cache = init_cache(config, b, p + max_new_tokens, dtype)
    if positions is None:
        positions = jnp.maximum(jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1, 0)
    logits, cache = forward(params, tokens, config=config, positions=positions, mask=mask,
                            cache=cache, dtype=dtype, recipe=recipe, embeds=embeds)
    next_pos = jnp.max(jnp.where(mask, positions, 0).reshape(-1, b, p), axis=(0, 2)) + 1
    out = jnp.zeros((b, max_new_tokens), jnp.int32)
    done = jnp.zeros((b,), bool)

    def cond(state):
        step, _, _, _, done, _, _ = state
        return (step < max_new_tokens) & ~jnp.all(done)

    def body(state):
        step, last_logits, cache, out, done, pos, key = state
        key, sub = jax.random.split(key)
        tok = sample_logits(last_logits, sub, sampling)
        tok = jnp.where(done, eos_id, tok)
        out = out.at[:, step].set(tok)
        done = done | (tok == eos_id)
        logits, cache = forward(params, tok[:, None], config=config, positions=pos[:, None],
                                mask=jnp.ones((b, 1), bool), cache=cache, dtype=dtype,
                                recipe=recipe)
        return step + 1, logits[:, -1], cache, out, done, pos + 1, key

    state = (jnp.zeros((), jnp.int32), logits[:, -1], cache, out, done, next_pos, key)
    steps, _, _, out, done, _, _ = jax.lax.while_loop(cond, body, state)
    return out, steps


def generate(
    params: Params,
    prompts: Sequence[Sequence[int]],
    *,
    config: LMConfig,
    max_new_tokens: int,
    sampling: SamplingConfig = SamplingConfig(),
    key: jax.Array | None = None,
    eos_id: int | None = None,
    dtype=jnp.float32,
    pad_to_multiple: int = 16,
    recipe: Recipe | None = None,
) -> list[list[int]]:
    """Generates continuations of a batch of prompts of different lengths.

    Prompts are left-padded (padding masked out, RoPE positions counted from each
    prompt's first real token), prefilled in one forward and decoded token by token
    inside one jitted `lax.while_loop` over a static-shape KV cache.

    Args:
      params: the parameter pytree.
      config: the model's config.
      prompts: token id lists, each non-empty.
      max_new_tokens: tokens to generate per prompt.
      sampling: greedy by default.
      key: PRNG key for sampling (default PRNGKey(0)).
      eos_id: stop a sequence after this token (default config.eos_token_id; -1 = never).
      dtype: compute dtype.
      pad_to_multiple: prompt length bucket, to limit recompilation.
      recipe: activation / KV-cache formats (`effjax.quant.Recipe`) for quantized params.

    Returns:
      One list of new token ids per prompt, ending at (and including) eos when reached.
    """
    tokens, mask, eos_id, key = prepare_prompts(prompts, config, max_new_tokens=max_new_tokens,
                                                context=config.max_position_embeddings,
                                                pad_to_multiple=pad_to_multiple, eos_id=eos_id,
                                                key=key)
    out, steps = _generate(params, tokens, mask, key, jnp.int32(eos_id), config=config,
                           max_new_tokens=max_new_tokens, sampling=sampling, dtype=dtype,
                           recipe=recipe)
    return cut_at_eos(np.asarray(out)[:, : int(steps)].tolist(), eos_id)


def vlm_generate(
    params: Params,
    tokens: Int[Array, "b p"],
    image_features: Float[Array, "n_image_tokens hidden"],
    positions: Int[Array, "3 b p"],
    *,
    config: VLMConfig,
    max_new_tokens: int,
    mask: Bool[Array, "b p"] | None = None,
    sampling: SamplingConfig = SamplingConfig(),
    key: jax.Array | None = None,
    eos_id: int | None = None,
    dtype=jnp.float32,
    recipe: Recipe | None = None,
) -> list[list[int]]:
    """Generates continuations of left-padded vision-language prompts.

    The prompt (image features spliced over the placeholders, multimodal position ids,
    possibly a pruned subset of the tokens) is prefilled in one forward; new tokens take
    one past each row's largest position id and count up on all three axes.

    Args:
      params: the VLM pytree ({"vision", "lm"}).
      config: the `VLMConfig`.
      tokens: (b, p) prompt ids with image placeholders, left-padded.
      image_features: `encode_images` outputs flattened in prompt order.
      positions: (3, b, p) ids from `rope_index` (or their kept subset).
      max_new_tokens: tokens to generate per prompt.
      mask: True for real tokens (default all).
      sampling, key, eos_id, dtype, recipe: as in `generate`.

    Returns:
      One list of new token ids per prompt, ending at (and including) eos when reached.
    """
    tokens = jnp.asarray(tokens, jnp.int32)
    b, p = tokens.shape
    if p + max_new_tokens > config.text.max_position_embeddings:
        raise ValueError(f"prompt length {p} + max_new_tokens={max_new_tokens} is past the "
                         f"context length {config.text.max_position_embeddings}")
    mask = jnp.ones((b, p), bool) if mask is None else jnp.asarray(mask, bool)
    eos_id = (config.text.eos_token_id if eos_id is None else eos_id)
    eos_id = -1 if eos_id is None else eos_id
    embeds = splice_images(params, tokens, image_features, dtype, config=config)
    out, steps = _generate(params["lm"], tokens, mask, jax.random.PRNGKey(0) if key is None
                           else key, jnp.int32(eos_id), config=config.text,
                           max_new_tokens=max_new_tokens, sampling=sampling, dtype=dtype,
                           recipe=recipe, embeds=embeds, positions=jnp.asarray(positions))
    return cut_at_eos(np.asarray(out)[:, : int(steps)].tolist(), eos_id)


def prepare_prompts(prompts: Sequence[Sequence[int]], config: LMConfig, *, max_new_tokens: int,
                    context: int, pad_to_multiple: int, eos_id: int | None, key: jax.Array | None,
                    reserve: int = 0):
    """Checks and left-pads a batch of prompts for a jitted decoding loop.

    Args:
      prompts: token id lists, each non-empty.
      config: the model's config (token range, default eos).
      max_new_tokens: tokens to generate per prompt (> 0).
      context: the context length the positions must stay within.
      pad_to_multiple: prompt length bucket (dropped when it would pass the context).
      eos_id: the stop token (None: config.eos_token_id, or -1 = never).
      key: PRNG key (None: PRNGKey(0)).
      reserve: positions needed past the new tokens (e.g. draft tokens per round).

    Returns:
      (tokens (b, width) int32, mask (b, width) bool, eos_id, key).
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError(f"prompts must be a non-empty list of non-empty token lists, got "
                         f"lengths {[len(p) for p in prompts]}")
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    longest = max(len(p) for p in prompts)
    need = max_new_tokens + reserve
    width = -(-longest // pad_to_multiple) * pad_to_multiple
    if width + need > context:
        width = longest
    if width + need > context:
        raise ValueError(f"prompt length {longest} + {max_new_tokens=}"
                         + (f" + {reserve} reserved" if reserve else "")
                         + f" is past the context length {context}")
    tokens = np.zeros((len(prompts), width), np.int64)
    mask = np.zeros((len(prompts), width), bool)
    for i, p in enumerate(prompts):
        tokens[i, width - len(p):] = p
        mask[i, width - len(p):] = True
    if eos_id is None:
        eos_id = -1 if config.eos_token_id is None else config.eos_token_id
    key = jax.random.PRNGKey(0) if key is None else key
    return check_tokens(tokens, config), jnp.asarray(mask), eos_id, key


def cut_at_eos(rows: list[list[int]], eos_id: int) -> list[list[int]]:
    """Each row up to and including its first eos (rows without one unchanged)."""
    return [row[: row.index(eos_id) + 1] if eos_id in row else row for row in rows]

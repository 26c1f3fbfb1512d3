"""Speculative decoding: a jitted draft-then-verify loop with pluggable acceptance rules.

Each round the draft proposes k tokens from its own KV cache, the target scores all of them
in one forward, and an acceptance rule decides how long a prefix to keep and which token to
emit after it. Both caches are rolled back per sequence by marking the rejected slots
invalid (the cache's `valid` mask), so a batch whose rows accept different numbers of tokens
keeps static shapes: every round writes k + 1 slots to each cache.

A rule is a hashable callable

    rule(target_logits (b, k + 1, v), draft_logits (b, k, v), draft_tokens (b, k), key)
        -> Verdict(accepted (b, k) bool, correction (b, k + 1) int32)

`accepted[:, j]` says whether draft token j may stand (only the leading run of True counts);
`correction[:, n]` is the token emitted after a kept prefix of length n (the target's choice
at the first rejection, or the bonus token when all k are kept). `rule.draft_sampling` says
how the draft draws its proposals. A rule with `needs_hidden = True` (`AutoJudge`) also gets
`target_hidden` and `draft_hidden` (b, k, hidden): the states that predicted each draft token.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from effjax.decoding.generate import SamplingConfig, cut_at_eos, prepare_prompts, sample_logits
from effjax.models.config import LMConfig
from effjax.models.decoder import KVCache, Params, forward, init_cache
from effjax.quant.recipe import Recipe

GREEDY = SamplingConfig()


class Verdict(NamedTuple):
    """An acceptance rule's decision for one round.

    Attributes:
      accepted: (b, k) whether each draft token may stand.
      correction: (b, k + 1) the token emitted after a kept prefix of each length.
    """

    accepted: Bool[Array, "b k"]
    correction: Int[Array, "b k1"]


class AcceptanceRule(Protocol):
    draft_sampling: SamplingConfig

    def __call__(self, target_logits: Float[Array, "b k1 v"], draft_logits: Float[Array, "b k v"],
                 draft_tokens: Int[Array, "b k"], key: jax.Array) -> Verdict: ...


def _probs(logits: Float[Array, "... v"], temperature: float) -> Float[Array, "... v"]:
    return jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1)


def _picked(probs: Float[Array, "b k v"], tokens: Int[Array, "b k"]) -> Float[Array, "b k"]:
    return jnp.take_along_axis(probs, tokens[..., None], axis=-1)[..., 0]


def _argmax(logits: Float[Array, "... v"]) -> Int[Array, ...]:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def kl_divergence(p_logits: Float[Array, "... v"],
                  q_logits: Float[Array, "... v"]) -> Float[Array, ...]:
    """KL(softmax(p_logits) || softmax(q_logits)) along the last axis, in float32.

    Args:
      p_logits, q_logits: logits of the same shape.

    Returns:
      The divergence per leading index (>= 0).
    """
    lp = jax.nn.log_softmax(p_logits.astype(jnp.float32), axis=-1)
    lq = jax.nn.log_softmax(q_logits.astype(jnp.float32), axis=-1)
    return jnp.maximum(jnp.sum(jnp.exp(lp) * (lp - lq), axis=-1), 0.0)


@dataclasses.dataclass(frozen=True)
class ExactSampling:
    """Speculative sampling (Leviathan et al., Chen et al.): lossless at `temperature`.

    Draft token x_j ~ q_j stands with probability min(1, p_j(x_j) / q_j(x_j)); at the first
    rejection the token is drawn from norm(max(p_j - q_j, 0)); when all k stand a bonus
    token is drawn from p_{k+1}. The output is distributed exactly as sampling the target.
    """

    temperature: float = 1.0

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 for exact sampling (use GreedyMatch for "
                             f"greedy decoding), got {self.temperature}")

    @property
    def draft_sampling(self) -> SamplingConfig:
        return SamplingConfig(temperature=self.temperature)

    def __call__(self, target_logits, draft_logits, draft_tokens, key) -> Verdict:
        k = draft_tokens.shape[1]
        p = _probs(target_logits, self.temperature)
        q = _probs(draft_logits, self.temperature)
        ku, kr = jax.random.split(key)
        u = jax.random.uniform(ku, draft_tokens.shape)
        accepted = u * _picked(q, draft_tokens) < _picked(p[:, :k], draft_tokens)
        residual = jnp.maximum(p[:, :k] - q, 0.0)
        # Where p == q no rejection can happen; fall back to p to keep the draw defined.
        residual = jnp.where(jnp.sum(residual, -1, keepdims=True) > 0, residual, p[:, :k])
        dists = jnp.concatenate([residual, p[:, k:]], axis=1)
        correction = jax.random.categorical(kr, jnp.log(dists), axis=-1).astype(jnp.int32)
        return Verdict(accepted, correction)


@dataclasses.dataclass(frozen=True)
class GreedyMatch:
    """Greedy verification: a draft token stands when it is the target's argmax; the output
    is identical to greedy decoding of the target."""

    draft_sampling: SamplingConfig = GREEDY

    def __call__(self, target_logits, draft_logits, draft_tokens, key) -> Verdict:
        correction = _argmax(target_logits)
        return Verdict(draft_tokens == correction[:, :-1], correction)


@dataclasses.dataclass(frozen=True)
class TypicalAcceptance:
    """Typical acceptance (Medusa): a draft token stands when its target probability at
    `temperature` exceeds min(epsilon, delta * exp(-H(p))); otherwise the target's argmax."""

    epsilon: float = 0.3
    delta: float = 0.09
    temperature: float = 1.0
    draft_sampling: SamplingConfig = GREEDY

    def __post_init__(self):
        for name in ("epsilon", "delta", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    def __call__(self, target_logits, draft_logits, draft_tokens, key) -> Verdict:
        k = draft_tokens.shape[1]
        p = _probs(target_logits[:, :k], self.temperature)
        entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(p), 0.0), axis=-1)
        threshold = jnp.minimum(self.epsilon, self.delta * jnp.exp(-entropy))
        correction = _argmax(target_logits)
        accepted = (draft_tokens == correction[:, :-1]) | (_picked(p, draft_tokens) > threshold)
        return Verdict(accepted, correction)


@dataclasses.dataclass(frozen=True)
class KLJudge:
    """The training-free KL judge: a draft token that differs from the target's argmax still
    stands when the target is not confident (top-1 probability below `guard`) and the
    draft and target distributions at that position are close: KL < `tau`.

    Attributes:
      tau: the KL threshold (0 accepts only matches: greedy verification).
      guard: mismatches are judged only where the target's top-1 probability is below it
        (1.0: everywhere but where the target is certain).
      direction: "forward" KL(target || draft) or "reverse" KL(draft || target).
    """

    tau: float
    guard: float = 1.0
    direction: str = "forward"
    draft_sampling: SamplingConfig = GREEDY

    def __post_init__(self):
        if not self.tau >= 0:
            raise ValueError(f"tau must be >= 0, got {self.tau}")
        if not 0 < self.guard <= 1:
            raise ValueError(f"guard must be in (0, 1], got {self.guard}")
        if self.direction not in ("forward", "reverse"):
            raise ValueError(f"direction must be 'forward' or 'reverse', got {self.direction!r}")

    def __call__(self, target_logits, draft_logits, draft_tokens, key) -> Verdict:
        k = draft_tokens.shape[1]
        t = target_logits[:, :k]
        kl = (kl_divergence(t, draft_logits) if self.direction == "forward"
              else kl_divergence(draft_logits, t))
        top1 = jnp.max(_probs(t, 1.0), axis=-1)
        correction = _argmax(target_logits)
        accepted = (draft_tokens == correction[:, :-1]) | ((kl < self.tau) & (top1 < self.guard))
        return Verdict(accepted, correction)


@dataclasses.dataclass(frozen=True, eq=False)
class AutoJudge:
    """AutoJudge-style learned judge: a mismatched draft token stands when a logistic
    regression on the target's and the draft's hidden states at that position (the states
    that predicted it) puts its probability of being important below `threshold`.

    Attributes:
      weights: (2 * hidden,) the judge's weights over [target hidden, draft hidden]
        (see `train_judge`).
      bias: its intercept.
      threshold: mismatches with P(important) below it stand.
    """

    weights: np.ndarray
    bias: float
    threshold: float = 0.5
    draft_sampling: SamplingConfig = GREEDY
    needs_hidden: bool = True

    def __post_init__(self):
        if np.ndim(self.weights) != 1:
            raise ValueError(f"weights must be 1-D (2 * hidden,), got shape "
                             f"{np.shape(self.weights)}")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")

    def importance(self, target_hidden: Float[Array, "b k h"],
                   draft_hidden: Float[Array, "b k h"]) -> Float[Array, "b k"]:
        """P(important) of each position's mismatch."""
        features = jnp.concatenate([target_hidden, draft_hidden], axis=-1)
        if features.shape[-1] != np.shape(self.weights)[0]:
            raise ValueError(f"the judge has {np.shape(self.weights)[0]} weights but the "
                             f"models give {features.shape[-1]} features (2 x hidden size)")
        return jax.nn.sigmoid(features @ jnp.asarray(self.weights, jnp.float32) + self.bias)

    def __call__(self, target_logits, draft_logits, draft_tokens, key, *, target_hidden,
                 draft_hidden) -> Verdict:
        correction = _argmax(target_logits)
        unimportant = self.importance(target_hidden, draft_hidden) < self.threshold
        return Verdict((draft_tokens == correction[:, :-1]) | unimportant, correction)


def early_exit_draft(params: Params, num_layers: int, *,
                     config: LMConfig) -> tuple[Params, LMConfig]:
    """A layer-skip self-draft: the target's first `num_layers` blocks, its final norm and
    head (no training; costs num_layers / config.num_layers of a target forward).

    Args:
      params: the target's parameter pytree.
      config: the target's config.
      num_layers: blocks to keep, 1 <= num_layers <= config.num_layers.

    Returns:
      (draft params sharing the target's arrays, draft config).
    """
    if not isinstance(num_layers, int | np.integer) or not 1 <= num_layers <= config.num_layers:
        raise ValueError(f"num_layers must be an integer in [1, {config.num_layers}], got "
                         f"{num_layers!r}")
    draft = dict(params)
    draft["layers"] = {i: params["layers"][i] for i in range(num_layers)}
    return draft, config.first_layers(int(num_layers))


class SpeculativeOutput(NamedTuple):
    """What `speculative_generate` returns.

    Attributes:
      tokens: one list of new token ids per prompt, ending at (and including) eos if reached.
      target_calls: (b,) target forwards (rounds) each sequence took, prefill not counted.
      accepted: (b,) draft tokens kept over all its rounds.
    """

    tokens: list[list[int]]
    target_calls: np.ndarray
    accepted: np.ndarray

    @property
    def tokens_per_call(self) -> float:
        """Mean tokens emitted per target call (accepted drafts plus one per round)."""
        return float(np.sum(self.accepted + self.target_calls) / max(np.sum(self.target_calls), 1))


class _LoopState(NamedTuple):
    """The carry of `_speculate`'s loop from one round to the next.

    Attributes:
      rounds: () rounds run so far.
      target_cache, draft_cache: the two models' KV caches, rejected slots invalidated.
      last_token: (b,) the last token emitted, which the next round feeds first.
      position: (b,) last_token's position.
      output: (b, width) tokens emitted so far (columns from `num_emitted` on are unused).
      num_emitted: (b,) tokens emitted so far per sequence.
      done: (b,) whether the sequence reached eos or `max_new_tokens`.
      target_calls: (b,) rounds (target forwards) the sequence took while live.
      accepted: (b,) draft tokens kept over those rounds.
      key: the PRNG key of the next round.
    """

    rounds: Int[Array, ""]
    target_cache: KVCache
    draft_cache: KVCache
    last_token: Int[Array, " b"]
    position: Int[Array, " b"]
    output: Int[Array, "b width"]
    num_emitted: Int[Array, " b"]
    done: Bool[Array, " b"]
    target_calls: Int[Array, " b"]
    accepted: Int[Array, " b"]
    key: jax.Array


def _prefix_length(accepted: Bool[Array, "b k"]) -> Int[Array, " b"]:
    return jnp.sum(jnp.cumprod(accepted.astype(jnp.int32), axis=1), axis=1)


def _keep_slots(cache: KVCache, width: int, keep: Bool[Array, "b w"]) -> KVCache:
    """Marks invalid the slots of the last `width` writes that `keep` rejects."""
    start = cache.length - width
    zero = jnp.zeros((), jnp.int32)
    window = jax.lax.dynamic_slice(cache.valid, (zero, start), (keep.shape[0], width))
    valid = jax.lax.dynamic_update_slice(cache.valid, window & keep, (zero, start))
    return cache._replace(valid=valid)


@functools.partial(jax.jit, static_argnames=(
    "target_config", "draft_config", "k", "rule", "max_new_tokens", "dtype", "target_recipe",
    "draft_recipe"))
def _speculate(target_params, draft_params, tokens, mask, key, eos_id, *, target_config,
               draft_config, k, rule, max_new_tokens, dtype, target_recipe, draft_recipe):
    b, p = tokens.shape
    slots = p - 1 + max_new_tokens * (k + 1)  # every round keeps at least one token
    positions = jnp.maximum(jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1, 0)
    caches = []
    for params, config, recipe in ((target_params, target_config, target_recipe),
                                   (draft_params, draft_config, draft_recipe)):
        cache = init_cache(config, b, slots, dtype)
        if p > 1:  # the prompt but its last token, which each round feeds first
            _, cache = forward(params, tokens[:, :-1], config=config,
                               positions=positions[:, :-1], mask=mask[:, :-1], cache=cache,
                               dtype=dtype, recipe=recipe)
        caches.append(cache)
    width = max_new_tokens + k + 1
    steps = jnp.arange(k + 1, dtype=jnp.int32)[None, :]  # (1, k + 1)
    ones = jnp.ones((b, 1), bool)

    hidden = getattr(rule, "needs_hidden", False)
    capture = ("hidden",) if hidden else ()

    def draft_step(carry, j):
        cache, tok, pos, dkey = carry
        out = forward(draft_params, tok[:, None], config=draft_config,
                      positions=(pos + j)[:, None], mask=ones, cache=cache, dtype=dtype,
                      recipe=draft_recipe, capture=capture)
        logits, cache = out[:2]
        dkey, sub = jax.random.split(dkey)
        nxt = sample_logits(logits[:, -1], sub, rule.draft_sampling)
        return (cache, nxt, pos, dkey), (logits[:, -1], nxt,
                                         out[2]["hidden"][:, -1] if hidden else None)

    def body(state: _LoopState) -> _LoopState:
        key, kd, kr = jax.random.split(state.key, 3)
        # k + 1 draft forwards: the last one only writes draft token k into the draft cache.
        (dcache, _, _, _), (dlogits, dtoks, dhidden) = jax.lax.scan(
            draft_step, (state.draft_cache, state.last_token, state.position, kd), steps[0])
        dlogits, dtoks = jnp.swapaxes(dlogits[:k], 0, 1), jnp.swapaxes(dtoks[:k], 0, 1)
        seq = jnp.concatenate([state.last_token[:, None], dtoks], axis=1)
        out = forward(target_params, seq, config=target_config,
                      positions=state.position[:, None] + steps, mask=jnp.ones_like(seq, bool),
                      cache=state.target_cache, dtype=dtype, recipe=target_recipe,
                      capture=capture)
        tlogits, tcache = out[:2]
        if hidden:  # the states that predicted each draft token, target's and draft's
            verdict = rule(tlogits, dlogits, dtoks, kr, target_hidden=out[2]["hidden"][:, :k],
                           draft_hidden=jnp.swapaxes(dhidden[:k], 0, 1))
        else:
            verdict = rule(tlogits, dlogits, dtoks, kr)
        n = _prefix_length(verdict.accepted)
        nxt = jnp.take_along_axis(verdict.correction, n[:, None], axis=1)[:, 0]
        keep = steps <= n[:, None]  # cache slot j holds seq[:, j]
        tcache, dcache = _keep_slots(tcache, k + 1, keep), _keep_slots(dcache, k + 1, keep)
        emitted = jnp.where(steps == n[:, None], nxt[:, None],
                            jnp.concatenate([dtoks, nxt[:, None]], axis=1))
        live = ~state.done
        write = keep & live[:, None]
        cols = jnp.where(write, state.num_emitted[:, None] + steps, width)  # out of range: dropped
        output = state.output.at[jnp.arange(b)[:, None], cols].set(emitted, mode="drop")
        num_emitted = state.num_emitted + jnp.where(live, n + 1, 0)
        done = (state.done | jnp.any(write & (emitted == eos_id), axis=1)
                | (num_emitted >= max_new_tokens))
        return _LoopState(
            rounds=state.rounds + 1, target_cache=tcache, draft_cache=dcache, last_token=nxt,
            position=state.position + n + 1, output=output, num_emitted=num_emitted, done=done,
            target_calls=state.target_calls + live.astype(jnp.int32),
            accepted=state.accepted + jnp.where(live, n, 0), key=key)

    def cond(state: _LoopState) -> jax.Array:
        return (state.rounds < max_new_tokens) & ~jnp.all(state.done)

    zeros = jnp.zeros((b,), jnp.int32)
    target_cache, draft_cache = caches
    state = _LoopState(
        rounds=jnp.zeros((), jnp.int32), target_cache=target_cache, draft_cache=draft_cache,
        last_token=tokens[:, -1].astype(jnp.int32), position=positions[:, -1],
        output=jnp.zeros((b, width), jnp.int32), num_emitted=zeros, done=jnp.zeros((b,), bool),
        target_calls=zeros, accepted=zeros, key=key)
    state = jax.lax.while_loop(cond, body, state)
    return state.output, state.num_emitted, state.target_calls, state.accepted


def speculative_generate(
    target_params: Params,
    target_config: LMConfig,
    draft_params: Params,
    draft_config: LMConfig,
    prompts: Sequence[Sequence[int]],
    *,
    k: int,
    rule: AcceptanceRule,
    max_new_tokens: int,
    key: jax.Array | None = None,
    eos_id: int | None = None,
    dtype=jnp.float32,
    pad_to_multiple: int = 16,
    target_recipe: Recipe | None = None,
    draft_recipe: Recipe | None = None,
) -> SpeculativeOutput:
    """Generates continuations with a draft model proposing and the target verifying.

    Prompts are left-padded and prefilled once in each model; the rounds run inside one
    jitted `lax.while_loop` (the same shapes never recompile).

    Args:
      target_params, target_config: the model whose output counts.
      draft_params, draft_config: the proposer (same vocabulary), e.g. a quantized copy of
        the target (self-speculation: pass the target's config and `draft_recipe`).
      prompts: token id lists, each non-empty.
      k: draft tokens proposed per round (>= 1).
      rule: the acceptance rule (`ExactSampling`, `GreedyMatch`, `TypicalAcceptance`,
        `KLJudge`, `AutoJudge`, or any callable with the same signature and a
        `draft_sampling`).
      max_new_tokens: tokens to generate per prompt.
      key: PRNG key (default PRNGKey(0)).
      eos_id: stop a sequence after this token (default the target's eos; -1 = never).
      dtype: compute dtype.
      pad_to_multiple: prompt length bucket, to limit recompilation.
      target_recipe, draft_recipe: activation / KV-cache formats of each model.

    Returns:
      A `SpeculativeOutput`: the tokens and, per sequence, target calls and kept drafts.
    """
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (draft tokens per round), got {k!r}")
    if target_config.vocab_size != draft_config.vocab_size:
        raise ValueError(f"draft and target must share a vocabulary: target vocab_size="
                         f"{target_config.vocab_size}, draft vocab_size={draft_config.vocab_size}")
    if not callable(rule) or not hasattr(rule, "draft_sampling"):
        raise ValueError(f"rule must be an acceptance rule (a callable with draft_sampling), "
                         f"got {type(rule).__name__}")
    context = min(target_config.max_position_embeddings, draft_config.max_position_embeddings)
    tokens, mask, eos_id, key = prepare_prompts(
        prompts, target_config, max_new_tokens=max_new_tokens, context=context,
        pad_to_multiple=pad_to_multiple, eos_id=eos_id, key=key, reserve=int(k))
    out, count, calls, kept = _speculate(
        target_params, draft_params, tokens, mask, key, jnp.int32(eos_id),
        target_config=target_config, draft_config=draft_config, k=int(k), rule=rule,
        max_new_tokens=max_new_tokens, dtype=dtype, target_recipe=target_recipe,
        draft_recipe=draft_recipe)
    rows = [row[:min(n, max_new_tokens)] for row, n in
            zip(np.asarray(out).tolist(), np.asarray(count).tolist(), strict=True)]
    return SpeculativeOutput(cut_at_eos(rows, eos_id), np.asarray(calls), np.asarray(kept))

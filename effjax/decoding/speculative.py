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
import optax
from jaxtyping import Array, Bool, Float, Int

from effjax.decoding.generate import (
    SamplingConfig,
    cut_at_eos,
    generate,
    prepare_prompts,
    sample_logits,
)
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


class Mismatches(NamedTuple):
    """Mined draft/target disagreements along the target's greedy outputs.

    Attributes:
      features: (n, 2 * hidden) [target hidden, draft hidden] at each mismatch.
      important: (n,) whether putting the draft's token there changes the final answer.
      prompt: (n,) the prompt each mismatch came from.
      position: (n,) its index among that prompt's generated tokens.
    """

    features: np.ndarray
    important: np.ndarray
    prompt: np.ndarray
    position: np.ndarray


def mine_mismatches(target_params: Params, target_config: LMConfig, draft_params: Params,
                    draft_config: LMConfig, prompts: Sequence[Sequence[int]], answer_fn, *,
                    max_new_tokens: int, draft_recipe: Recipe | None = None,
                    eos_id: int | None = None, batch_size: int = 32) -> Mismatches:
    """Labels for an AutoJudge: where the draft's greedy token differs from the target's
    along the target's greedy output, is the mismatch important (AutoJudge's mining)?

    Each mismatch is replayed: the draft's token replaces the target's at that position and
    the target decodes greedily from there; it is important when `answer_fn` of the result
    differs from `answer_fn` of the target's own output.

    Args:
      target_params, target_config, draft_params, draft_config: the two models.
      prompts: token id lists.
      answer_fn: generated token ids -> a comparable answer (e.g. the parsed number).
      max_new_tokens: the target's output length per prompt.
      draft_recipe: the draft's activation / KV formats.
      eos_id: as in `generate`.
      batch_size: sequences per forward and per replay batch.

    Returns:
      `Mismatches`.
    """
    outs = generate(target_params, target_config, prompts, max_new_tokens=max_new_tokens,
                    eos_id=eos_id)
    feats, meta, replays = [], [], []
    seqs = [list(p) + o for p, o in zip(prompts, outs, strict=True)]
    # right-padded batches in width buckets: causal attention keeps the padding out of every
    # real position, and one compilation serves each (batch, bucket)
    width = -(-max(map(len, seqs)) // 16) * 16
    for b in range(0, len(seqs), batch_size):
        chunk = seqs[b:b + batch_size]
        tokens = np.zeros((batch_size, width), np.int32)
        for r, seq in enumerate(chunk):
            tokens[r, :len(seq)] = seq
        _, _, th = forward(target_params, jnp.asarray(tokens), config=target_config,
                           return_hidden=True)
        dl, _, dh = forward(draft_params, jnp.asarray(tokens), config=draft_config,
                            recipe=draft_recipe, return_hidden=True)
        draft_all, th, dh = np.asarray(_argmax(dl)), np.asarray(th), np.asarray(dh)
        for r in range(len(chunk)):
            i = b + r
            prompt, out = prompts[i], outs[i]
            start = len(prompt) - 1  # state at start + j predicts generated token j
            draft_tok = draft_all[r, start:start + len(out)]
            for j in np.flatnonzero(draft_tok != np.asarray(out, np.int32)):
                feats.append(np.concatenate([th[r, start + j], dh[r, start + j]]))
                meta.append((i, j))
                replays.append(list(prompt) + out[:j] + [int(draft_tok[j])])
    important = []
    for b in range(0, len(replays), batch_size):
        chunk = replays[b:b + batch_size]
        # one length for every chunk (one compilation); each tail is cut to its own length
        cont = generate(target_params, target_config, chunk,
                        max_new_tokens=max(max_new_tokens - 1, 1), eos_id=eos_id)
        for r, c in enumerate(cont):
            i, j = meta[b + r]
            tail = [replays[b + r][-1], *c][:max_new_tokens - j]
            important.append(answer_fn(outs[i][:j] + tail) != answer_fn(outs[i]))
    h = 2 * target_config.hidden_size
    return Mismatches(np.asarray(feats, np.float32).reshape(-1, h), np.asarray(important, bool),
                      np.asarray([m[0] for m in meta], np.int32),
                      np.asarray([m[1] for m in meta], np.int32))


def train_judge(features: np.ndarray, important: np.ndarray, *, l2: float = 1e-3,
                steps: int = 500, learning_rate: float = 0.05) -> tuple[np.ndarray, float]:
    """Fits the AutoJudge logistic regression (classes weighted to balance, L2 penalty) with
    optax on standardized features; returns weights and bias in the raw feature scale.

    Args:
      features: (n, d) mined features.
      important: (n,) labels (both classes present).
      l2: the penalty on the (standardized) weights.
      steps, learning_rate: Adam steps and step size (full batch).

    Returns:
      (weights (d,), bias) for `AutoJudge`.
    """
    x, y = np.asarray(features, np.float32), np.asarray(important, np.float32)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"features must be (n, d) and important (n,), got {x.shape} and "
                         f"{y.shape}")
    if y.min() == y.max():
        raise ValueError("important must hold both classes to train a judge, got only "
                         f"{bool(y[0]) if len(y) else 'none'}")
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = jnp.asarray((x - mu) / sd)
    weight = jnp.asarray(np.where(y > 0, 0.5 / y.mean(), 0.5 / (1 - y.mean())), jnp.float32)
    yj = jnp.asarray(y)

    def loss(p):
        logit = z @ p["w"] + p["b"]
        return (jnp.mean(weight * optax.sigmoid_binary_cross_entropy(logit, yj))
                + l2 * jnp.sum(p["w"] ** 2))

    opt = optax.adam(learning_rate)
    params = {"w": jnp.zeros(x.shape[1]), "b": jnp.zeros(())}
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(loss)(params)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int step counts
            updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    w = np.asarray(params["w"]) / sd
    return w, float(params["b"]) - float(np.dot(w, mu))


def early_exit_draft(params: Params, config: LMConfig,
                     num_layers: int) -> tuple[Params, LMConfig]:
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
    return draft, dataclasses.replace(config, num_layers=int(num_layers))


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

    def draft_step(carry, j):
        cache, tok, pos, dkey = carry
        logits, cache, *h = forward(draft_params, tok[:, None], config=draft_config,
                                    positions=(pos + j)[:, None], mask=ones, cache=cache,
                                    dtype=dtype, recipe=draft_recipe, return_hidden=hidden)
        dkey, sub = jax.random.split(dkey)
        nxt = sample_logits(logits[:, -1], sub, rule.draft_sampling)
        return (cache, nxt, pos, dkey), (logits[:, -1], nxt, h[0][:, -1] if h else None)

    def body(state):
        step, tcache, dcache, last, pos, out, count, done, calls, kept, key = state
        key, kd, kr = jax.random.split(key, 3)
        # k + 1 draft forwards: the last one only writes draft token k into the draft cache.
        (dcache, _, _, _), (dlogits, dtoks, dhidden) = jax.lax.scan(
            draft_step, (dcache, last, pos, kd), steps[0])
        dlogits, dtoks = jnp.swapaxes(dlogits[:k], 0, 1), jnp.swapaxes(dtoks[:k], 0, 1)
        seq = jnp.concatenate([last[:, None], dtoks], axis=1)
        tlogits, tcache, *th = forward(target_params, seq, config=target_config,
                                       positions=pos[:, None] + steps,
                                       mask=jnp.ones_like(seq, bool), cache=tcache, dtype=dtype,
                                       recipe=target_recipe, return_hidden=hidden)
        if hidden:  # the states that predicted each draft token, target's and draft's
            verdict = rule(tlogits, dlogits, dtoks, kr, target_hidden=th[0][:, :k],
                           draft_hidden=jnp.swapaxes(dhidden[:k], 0, 1))
        else:
            verdict = rule(tlogits, dlogits, dtoks, kr)
        n = _prefix_length(verdict.accepted)
        nxt = jnp.take_along_axis(verdict.correction, n[:, None], axis=1)[:, 0]
        keep = steps <= n[:, None]  # cache slot j holds seq[:, j]
        tcache, dcache = _keep_slots(tcache, k + 1, keep), _keep_slots(dcache, k + 1, keep)
        emitted = jnp.where(steps == n[:, None], nxt[:, None],
                            jnp.concatenate([dtoks, nxt[:, None]], axis=1))
        write = keep & ~done[:, None]
        cols = jnp.where(write, count[:, None] + steps, width)  # out of range: dropped
        out = out.at[jnp.arange(b)[:, None], cols].set(emitted, mode="drop")
        live = ~done
        calls, kept = calls + live.astype(jnp.int32), kept + jnp.where(live, n, 0)
        count = count + jnp.where(live, n + 1, 0)
        done = done | jnp.any(write & (emitted == eos_id), axis=1) | (count >= max_new_tokens)
        return step + 1, tcache, dcache, nxt, pos + n + 1, out, count, done, calls, kept, key

    def cond(state):
        return (state[0] < max_new_tokens) & ~jnp.all(state[7])

    zeros = jnp.zeros((b,), jnp.int32)
    state = (jnp.zeros((), jnp.int32), *caches, tokens[:, -1].astype(jnp.int32), positions[:, -1],
             jnp.zeros((b, width), jnp.int32), zeros, jnp.zeros((b,), bool), zeros, zeros, key)
    state = jax.lax.while_loop(cond, body, state)
    _, _, _, _, _, out, count, _, calls, kept, _ = state
    return out, count, calls, kept


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

"""AutoJudge's training data and classifier: mining labelled draft/target mismatches and
fitting the logistic regression that `effjax.decoding.AutoJudge` applies.

A mismatch is a position where the draft's greedy token differs from the target's along the
target's greedy output; it is labelled important when putting the draft's token there
and letting the target decode on changes the final answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from effjax.decoding.generate import generate
from effjax.models.config import LMConfig
from effjax.models.decoder import Params, forward
from effjax.quant.recipe import Recipe


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
    outs = generate(target_params, prompts, max_new_tokens=max_new_tokens,
                    eos_id=eos_id, config=target_config)
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
        th = forward(target_params, jnp.asarray(tokens), config=target_config,
                     capture=("hidden",))[2]["hidden"]
        dl, _, found = forward(draft_params, jnp.asarray(tokens), config=draft_config,
                               recipe=draft_recipe, capture=("hidden",))
        dh = found["hidden"]
        draft_all = np.asarray(jnp.argmax(dl, axis=-1).astype(jnp.int32))
        th, dh = np.asarray(th), np.asarray(dh)
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
        cont = generate(target_params, chunk, config=target_config,
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

"""GRPO for a quantized policy: group sampling, verifiable rewards, clipped ratio, KL to a
reference.

One iteration: each prompt is sampled `group_size` times by the jitted sampler from the
fake-quantized policy; a reward function scores each completion (exact answer match);
advantages are the rewards normalized within their group; the policy (float master weights
behind the straight-through quantizer) takes `inner_steps` optax steps on

    -mean_seq mean_tok [min(r A, clip(r, 1 - eps, 1 + eps) A) - beta KL_k3(ref || policy)]

with r the per-token probability ratio to the sampling policy and KL_k3 the non-negative
estimator exp(ref - logp) - (ref - logp) - 1 (Shao et al., DeepSeekMath), the reference
being a frozen copy of the starting policy behind the same quantizer.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float

from effjax.decoding.generate import SamplingConfig, generate
from effjax.models.config import LMConfig
from effjax.models.decoder import Params, forward
from effjax.qat.train import DTYPES, QATConfig, TrainState, fake_quant_params, make_optimizer
from effjax.quant.recipe import Recipe


@dataclasses.dataclass(frozen=True, kw_only=True)
class GRPOConfig:
    """A GRPO run.

    Attributes:
      recipe: the policy's formats (None: a float policy).
      group_size: samples per prompt (>= 2: advantages are relative within a group).
      max_new_tokens: completion budget.
      temperature: sampling temperature (> 0).
      clip_eps: ratio clipping.
      kl_coef: weight of the KL to the reference policy.
      inner_steps: optimizer steps per batch of rollouts (PPO epochs; the ratio differs
        from 1 from the second on).
      learning_rate, warmup_steps, total_steps, grad_clip, weight_decay: AdamW under warm-up
        + cosine (as `QATConfig`).
      dtype: compute dtype.
      ste: straight-through mode of the weight quantizer.
    """

    recipe: Recipe | None = None
    group_size: int = 8
    max_new_tokens: int = 48
    temperature: float = 1.0
    clip_eps: float = 0.2
    kl_coef: float = 0.04
    inner_steps: int = 1
    learning_rate: float = 1e-5
    warmup_steps: int = 0
    total_steps: int = 100
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    dtype: str = "float32"
    ste: str = "identity"

    def __post_init__(self):
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2, got {self.group_size}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (GRPO samples), got {self.temperature}")
        if not 0 < self.clip_eps < 1 or self.kl_coef < 0 or self.inner_steps < 1:
            raise ValueError(f"need 0 < clip_eps < 1, kl_coef >= 0, inner_steps >= 1; got "
                             f"{self.clip_eps}, {self.kl_coef}, {self.inner_steps}")
        self.optimizer_config()  # validates the shared fields

    def optimizer_config(self) -> QATConfig:
        """The same optimizer, schedule and quantization fields as a `QATConfig`."""
        return QATConfig(recipe=self.recipe, loss="ce", learning_rate=self.learning_rate,
                         warmup_steps=self.warmup_steps,
                         total_steps=self.total_steps * self.inner_steps,
                         grad_clip=self.grad_clip, weight_decay=self.weight_decay,
                         dtype=self.dtype, ste=self.ste)


def group_advantages(rewards: Float[Array, "n g"], eps: float = 1e-6) -> Float[Array, "n g"]:
    """Rewards normalized within each group: (r - mean) / (std + eps); zero for a group
    whose rewards are all equal."""
    r = jnp.asarray(rewards, jnp.float32)
    return (r - r.mean(axis=1, keepdims=True)) / (r.std(axis=1, keepdims=True) + eps)


def token_logprobs(params: Params, batch: dict, *, config: LMConfig, grpo: GRPOConfig
                   ) -> Float[Array, "b t"]:
    """log p(token j | tokens < j) of every token after the first, under the fake-quantized
    policy (padding masked out, positions counted from each row's first real token)."""
    if grpo.recipe is not None:
        params = fake_quant_params(params, grpo.recipe, ste=grpo.ste)
    tokens, mask = batch["tokens"], batch["mask"]
    positions = jnp.maximum(jnp.cumsum(mask, axis=1, dtype=jnp.int32) - 1, 0)
    logits = forward(params, tokens[:, :-1], config=config, positions=positions[:, :-1],
                     mask=mask[:, :-1], dtype=DTYPES[grpo.dtype], recipe=grpo.recipe)[0]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]


def grpo_loss(params: Params, reference: Params, batch: dict, *, config: LMConfig,
              grpo: GRPOConfig) -> tuple[Float[Array, ""], dict]:
    """The clipped-ratio objective with the KL penalty (see the module docstring).

    Args:
      params: the policy's master weights.
      reference: the reference policy's master params, run through the same quantizer as
        the policy (a frozen copy of the starting policy: the KL starts at 0; QAT master
        weights mean something only through their quantizer).
      batch: {"tokens", "mask" (real tokens), "completion" (b, t) bool (sampled tokens),
        "old_logp" (b, t - 1), "advantages" (b,)}.
      config: the model config.
      grpo: the `GRPOConfig`.

    Returns:
      (loss, {"kl", "clip_fraction"}).
    """
    logp = token_logprobs(params, batch, config=config, grpo=grpo)
    ref = jax.lax.stop_gradient(token_logprobs(reference, batch, config=config, grpo=grpo))
    scored = batch["completion"][:, 1:].astype(jnp.float32)
    ratio = jnp.exp(logp - batch["old_logp"])
    adv = batch["advantages"][:, None]
    clipped = jnp.clip(ratio, 1 - grpo.clip_eps, 1 + grpo.clip_eps)
    surrogate = jnp.minimum(ratio * adv, clipped * adv)
    kl = jnp.exp(ref - logp) - (ref - logp) - 1
    per_token = surrogate - grpo.kl_coef * kl
    lengths = jnp.maximum(scored.sum(axis=1), 1.0)
    loss = -jnp.mean(jnp.sum(per_token * scored, axis=1) / lengths)
    n = jnp.maximum(scored.sum(), 1.0)
    clipped_tokens = (jnp.abs(ratio - 1) > grpo.clip_eps).astype(jnp.float32) * scored
    return loss, {"kl": jnp.sum(kl * scored) / n, "clip_fraction": jnp.sum(clipped_tokens) / n}


def make_grpo_step(config: LMConfig, grpo: GRPOConfig):
    """A jitted `step(state, batch, reference) -> (state, metrics)` (one optimizer step)."""
    optimizer = make_optimizer(grpo.optimizer_config())

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state: TrainState, batch, reference):
        (loss, aux), grads = jax.value_and_grad(grpo_loss, has_aux=True)(
            state.params, reference, batch, config=config, grpo=grpo)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int step counts
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return (TrainState(params, opt_state, state.step + 1, state.rng),
                {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads)})

    return step


@functools.partial(jax.jit, static_argnames=("config", "grpo"))
def _old_logprobs(params, batch, config, grpo):
    return token_logprobs(params, batch, config=config, grpo=grpo)


@functools.partial(jax.jit, static_argnames=("recipe", "ste"))
def _policy_weights(params, recipe, ste):
    return fake_quant_params(params, recipe, ste=ste)


def rollout(state: TrainState, prompts: Sequence[Sequence[int]], *, config: LMConfig,
            grpo: GRPOConfig, reward: Callable[[int, list[int]], float], eos_id: int
            ) -> tuple[TrainState, dict, np.ndarray]:
    """Samples `group_size` completions per prompt from the quantized policy and scores them.

    Args:
      state: the policy's state (its rng is advanced).
      prompts: token id lists.
      config: the model config.
      grpo: the `GRPOConfig`.
      reward: (prompt index, completion token ids) -> reward.
      eos_id: the stop token.

    Returns:
      (state, batch for `make_grpo_step` (with "old_logp" and "advantages"), rewards
      (n_prompts, group_size)).
    """
    key, sub = jax.random.split(jax.random.wrap_key_data(state.rng))
    state = state._replace(rng=jax.random.key_data(key))
    weights = state.params if grpo.recipe is None else _policy_weights(
        state.params, grpo.recipe, grpo.ste)
    g = grpo.group_size
    repeated = [list(p) for p in prompts for _ in range(g)]
    completions = generate(weights, repeated, max_new_tokens=grpo.max_new_tokens,
                           sampling=SamplingConfig(temperature=grpo.temperature),
                           key=jax.random.key_data(sub), eos_id=eos_id,
                           recipe=grpo.recipe, config=config)
    rewards = np.asarray([reward(i // g, c) for i, c in enumerate(completions)],
                         np.float32).reshape(len(prompts), g)
    batch = sequences(repeated, completions, prompt_width=max(map(len, prompts)),
                      completion_width=grpo.max_new_tokens)
    batch["advantages"] = group_advantages(rewards).reshape(-1)
    batch["old_logp"] = _old_logprobs(state.params, batch, config, grpo)
    return state, batch, rewards


def sequences(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *,
              prompt_width: int, completion_width: int) -> dict[str, jax.Array]:
    """Prompts left-padded to prompt_width, completions right-padded to completion_width.

    Returns:
      {"tokens": (b, P + N) int32, "mask": real tokens, "completion": sampled tokens}.
    """
    b, width = len(prompts), prompt_width + completion_width
    tokens = np.zeros((b, width), np.int32)
    mask = np.zeros((b, width), bool)
    completion = np.zeros((b, width), bool)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        if len(p) > prompt_width or len(c) > completion_width:
            raise ValueError(f"row {i}: prompt {len(p)} / completion {len(c)} tokens exceed "
                             f"{prompt_width=} / {completion_width=}")
        tokens[i, prompt_width - len(p):prompt_width] = p
        tokens[i, prompt_width:prompt_width + len(c)] = c
        mask[i, prompt_width - len(p):prompt_width + len(c)] = True
        completion[i, prompt_width:prompt_width + len(c)] = True
    return {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask),
            "completion": jnp.asarray(completion)}


def grpo_iteration(step_fn, state: TrainState, reference: Params,
                   prompts: Sequence[Sequence[int]], *, config: LMConfig, grpo: GRPOConfig,
                   reward: Callable[[int, list[int]], float], eos_id: int
                   ) -> tuple[TrainState, dict]:
    """One rollout and `inner_steps` updates.

    Returns:
      (state, {"reward": mean reward, "loss", "kl", "clip_fraction"} of the last update).
    """
    state, batch, rewards = rollout(state, prompts, config=config, grpo=grpo, reward=reward,
                                    eos_id=eos_id)
    for _ in range(grpo.inner_steps):
        state, metrics = step_fn(state, batch, reference)
    return state, {"reward": float(rewards.mean()),
                   **{k: float(v) for k, v in metrics.items()}}

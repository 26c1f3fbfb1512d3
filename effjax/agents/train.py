"""Training the tool-use agents on reference trajectories: autoregressive and diffusion.

Both agents share an architecture (`AGENT_CONFIG`) and read identical batches
(`effjax.agents.episodes.training_batch` with the same seed): the autoregressive one learns
next-token cross-entropy on its action lines, the diffusion one the LLaDA objective on
noised action spans under the aligned (or, for the ablation, bidirectional) attention mask.
Trained weights are cached in `effjax/data/zoo/` (written atomically), like the other
in-house models.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import optax
from tqdm.auto import tqdm

from effjax import zoo
from effjax.agents.episodes import (
    MASK_ID,
    SEQ_LEN,
    TOKENIZER,
    span_attention_mask,
    training_batch,
)
from effjax.checkpoint import load_weights, save_weights
from effjax.data import arithmetic
from effjax.models.config import LMConfig
from effjax.models.decoder import Params, forward, init_params
from effjax.models.diffusion import diffusion_loss
from effjax.models.records import LM, DiffusionLM

AGENT_CONFIG = LMConfig(
    family="llama", vocab_size=arithmetic.VOCAB_SIZE, hidden_size=96, intermediate_size=256,
    num_layers=3, num_heads=4, num_kv_heads=4, head_dim=24, max_position_embeddings=SEQ_LEN,
    eos_token_id=ord("\n"), pad_token_id=arithmetic.PAD_ID)
PARADIGMS = ("ar", "diffusion")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AgentTraining:
    """One agent's training run.

    Attributes:
      paradigm: "ar" or "diffusion".
      aligned: diffusion only: the aligned span mask (False = bidirectional).
      call_focus: fraction of rows with only tool-call spans noised (tool-call-specific
        data; diffusion only).
      steps: optimizer steps.
      batch_size: trajectories per step.
      learning_rate: AdamW peak (5% warm-up, cosine decay).
      seed: initialization and data seed (the same seed gives both paradigms the same data).
    """

    paradigm: str = "diffusion"
    aligned: bool = True
    call_focus: float = 0.25
    steps: int = 3000
    batch_size: int = 16
    learning_rate: float = 2e-3
    seed: int = 0

    def __post_init__(self):
        if self.paradigm not in PARADIGMS:
            raise ValueError(f"paradigm must be one of {PARADIGMS}, got {self.paradigm!r}")
        if self.steps <= 0 or self.batch_size <= 0:
            raise ValueError(f"steps and batch_size must be positive, got {self.steps=}, "
                             f"{self.batch_size=}")
        if not 0.0 <= self.call_focus <= 1.0:
            raise ValueError(f"call_focus must be in [0, 1], got {self.call_focus}")

    @property
    def name(self) -> str:
        if self.paradigm == "ar":
            return "agent_ar"
        return ("agent_dllm" + ("" if self.aligned else "_unaligned")
                + ("" if self.call_focus else "_nocall"))


def ar_loss(params: Params, batch: dict, *, config: LMConfig) -> jax.Array:
    """Mean next-token cross-entropy on the action lines (causal attention)."""
    logits = forward(params, batch["tokens"], config=config, mask=batch["valid"])[0]
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    nll = -jnp.take_along_axis(logp, batch["tokens"][:, 1:, None], axis=-1)[..., 0]
    weight = batch["targets"][:, 1:]
    return jnp.sum(jnp.where(weight, nll, 0.0)) / jnp.maximum(jnp.sum(weight), 1).astype(
        jnp.float32)


def agent_loss(params: Params, batch: dict, key: jax.Array, *, config: LMConfig,
               run: AgentTraining) -> jax.Array:
    """The training objective of `run`'s paradigm on one batch."""
    if run.paradigm == "ar":
        return ar_loss(params, batch, config=config)
    attn = span_attention_mask(batch["turn"], batch["is_action"], aligned=run.aligned)
    return diffusion_loss(params, batch["tokens"], batch["noisable"], key, config=config,
                          mask_id=MASK_ID, mask=batch["valid"], attn_mask=attn)[0]


def make_optimizer(run: AgentTraining) -> optax.GradientTransformation:
    """QAT's optimizer (`effjax.qat.train.make_optimizer`) for a float run: AdamW, 5% warm-up,
    cosine decay to 5% of the peak, gradient norm clipped to 1."""
    from effjax.qat.train import QATConfig
    from effjax.qat.train import make_optimizer as qat_optimizer

    return qat_optimizer(QATConfig(loss="ce", learning_rate=run.learning_rate,
                                   warmup_steps=max(1, run.steps // 20), total_steps=run.steps,
                                   end_lr_ratio=0.05, weight_decay=0.01))


def train_agent(run: AgentTraining, *, config: LMConfig = AGENT_CONFIG,
                path: str | os.PathLike | None = "zoo", progress: bool = True
                ) -> tuple[Params, dict]:
    """Trains one agent from scratch.

    Args:
      run: the `AgentTraining`.
      config: the architecture.
      path: where to write the weights ("zoo": `effjax.zoo.trained_dir(run.name)` in the
        user cache, which `load_agent` then prefers to the shipped copy; None: do not
        write).
      progress: progress bar.

    Returns:
      (params, info) with info = {"run", "loss_curve", "seconds"}.
    """
    optimizer = make_optimizer(run)

    @jax.jit
    def step(params, opt_state, batch, key):
        loss, grads = jax.value_and_grad(functools.partial(agent_loss, config=config, run=run))(
            params, batch, key)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int step counts
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    params = init_params(config, jax.random.PRNGKey(run.seed))
    opt_state = optimizer.init(params)
    key = jax.random.PRNGKey(run.seed + 1)
    t0, curve, window = time.perf_counter(), [], []
    bar = tqdm(range(run.steps), desc=run.name, disable=not progress)
    for i in bar:
        batch = training_batch(run.seed, i, run.batch_size, seq_len=config.max_position_embeddings,
                               call_focus=run.call_focus if run.paradigm == "diffusion" else 0.0)
        key, sub = jax.random.split(key)
        params, opt_state, loss = step(params, opt_state, jax.tree.map(jnp.asarray, batch), sub)
        window.append(loss)
        if (i + 1) % 100 == 0 or i + 1 == run.steps:
            curve.append((i + 1, float(jnp.mean(jnp.stack(window)))))
            window = []
            bar.set_postfix(loss=f"{curve[-1][1]:.3f}")
    info = {"run": dataclasses.asdict(run), "loss_curve": curve,
            "seconds": time.perf_counter() - t0}
    if path is not None:
        save_weights(params, info, zoo.trained_dir(run.name) if path == "zoo" else path)
    return params, info


def load_agent(run: AgentTraining, *, config: LMConfig = AGENT_CONFIG,
               path: str | os.PathLike | None = None) -> LM:
    """A trained agent's weights.

    Args:
      run: the training run that made them.
      config: the architecture.
      path: their folder; default `effjax.zoo.weights_dir(run.name)` (a retrained copy in
        the user cache, else the shipped one).

    Returns:
      An `LM` for an autoregressive run, a `DiffusionLM` (mask token `MASK_ID`) for a
      diffusion run; extras {"info": the run's info.json}; the package's character
      tokenizer.

    Raises:
      ValueError: no weights there, or weights of other shapes.
    """
    folder = pathlib.Path(zoo.weights_dir(run.name) if path is None else path)
    like = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    params, info = load_weights(folder, like,
                                hint=f"train it with effjax.agents.train_agent(run) (run "
                                     f"{run.name!r}, written to the user cache)")
    fields = dict(config=config, params=params, tokenizer=TOKENIZER, source=str(folder),
                  extras={"info": info})
    if run.paradigm == "diffusion":
        return DiffusionLM(**fields, mask_id=MASK_ID)
    return LM(**fields)


RUNS: dict[str, AgentTraining] = {r.name: r for r in (
    AgentTraining(paradigm="ar", steps=1500), AgentTraining(), AgentTraining(aligned=False),
    AgentTraining(call_focus=0.0))}
"""The zoo's agents by name (the runs of `experiments/dllm_agent.py`)."""

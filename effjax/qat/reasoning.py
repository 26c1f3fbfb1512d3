"""The in-house reasoning teacher and its draft: small decoders trained on the arithmetic task.

`load_teacher()` (= `effjax.zoo.load("arith_teacher")`) reads the weights shipped in
`effjax/data/zoo/arith_teacher/` (trained here by `train_teacher`, so nothing is downloaded),
or a retrained copy from the user cache; `load_teacher(config=DRAFT_CONFIG)` the one-block
draft (the speculative-decoding pair's proposer, trained the same way). `accuracy` scores any
parameter pytree of either architecture (float, fake-quantized or with QArray kernels) by greedy
generation.
"""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Sequence

import jax
from tqdm.auto import tqdm

from effjax import zoo
from effjax.checkpoint import load_weights, save_weights
from effjax.data import arithmetic
from effjax.decoding.generate import generate
from effjax.models.config import LMConfig
from effjax.models.decoder import Params, init_params
from effjax.models.records import LM
from effjax.quant.recipe import Recipe

TEACHER_CONFIG = LMConfig(
    family="llama", vocab_size=arithmetic.VOCAB_SIZE, hidden_size=128, intermediate_size=384,
    num_layers=4, num_heads=4, num_kv_heads=4, head_dim=32, max_position_embeddings=128,
    rope_theta=10000.0, eos_token_id=arithmetic.EOS_ID, pad_token_id=arithmetic.PAD_ID)
DRAFT_CONFIG = TEACHER_CONFIG.first_layers(1)
SEQ_LEN = 64  # every level-1..4 problem fits


def accuracy(params: Params, items: Sequence[arithmetic.Problem], *,
             config: LMConfig, recipe: Recipe | None = None, batch_size: int = 256,
             max_new_tokens: int = 48, tokenizer=None,
             eos_id: int = arithmetic.EOS_ID) -> float:
    """Exact-match accuracy of greedy solutions.

    Args:
      params: parameters of a model in `config`'s architecture.
      config: its config.
      items: problems (arithmetic or GSM8K).
      recipe: activation / KV-cache formats to run with (for quantized params).
      batch_size: problems per generation call (the last batch is padded to this size, so
        one compilation serves every batch).
      max_new_tokens: generation budget (a level-4 arithmetic solution takes at most 47).
      tokenizer: `encode` / `decode` of the model's tokens (default: the char tokenizer).
      eos_id: the token that ends a solution.

    Returns:
      The fraction answered exactly.
    """
    outputs = generate_solutions(params, [p.prompt for p in items], recipe=recipe,
                                 batch_size=batch_size, max_new_tokens=max_new_tokens,
                                 tokenizer=tokenizer, eos_id=eos_id, config=config)
    return arithmetic.exact_match(outputs, items)


def generate_solutions(params: Params, prompts: Sequence[str], *,
                       config: LMConfig, recipe: Recipe | None = None, batch_size: int = 256,
                       max_new_tokens: int = 48, tokenizer=None,
                       eos_id: int = arithmetic.EOS_ID, key: jax.Array | None = None
                       ) -> list[str]:
    """Greedy solution texts (up to eos) for prompts, in fixed-size batches."""
    tok = arithmetic.CharTokenizer() if tokenizer is None else tokenizer
    encoded = [tok.encode_prompt(p) for p in prompts]
    out = []
    key = jax.random.PRNGKey(0) if key is None else key
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start:start + batch_size]
        padded = chunk + [chunk[-1]] * (batch_size - len(chunk))
        rows = generate(params, padded, max_new_tokens=max_new_tokens, eos_id=eos_id,
                        recipe=recipe, key=key, config=config)
        out += [tok.decode(r) for r in rows[:len(chunk)]]
    return out


def train_teacher(*, config: LMConfig = TEACHER_CONFIG, steps: int = 3000,
                  batch_size: int = 64, learning_rate: float = 1e-3, seed: int = 0,
                  eval_every: int = 500, target: float = 0.97,
                  path: str | os.PathLike | None = "zoo", progress: bool = True
                  ) -> tuple[Params, dict]:
    """Trains a model from scratch on the arithmetic stream (CE on solution tokens).

    Stops early once test accuracy (256 test problems, levels 1-3) reaches `target`.

    Args:
      config: the architecture (`TEACHER_CONFIG`, `DRAFT_CONFIG` or any with the char
        vocabulary).
      steps: the most optimizer steps.
      batch_size: problems per step.
      learning_rate: AdamW peak (warm-up 5% of steps, cosine decay).
      seed: initialization and data seed.
      eval_every: steps between accuracy checks.
      target: stop at this accuracy.
      path: where to write the weights ("zoo": `effjax.zoo.trained_dir` of "arith_teacher"
        or, for `DRAFT_CONFIG`, "arith_draft", in the user cache; None: do not write).
      progress: progress bar.

    Returns:
      (params, info) with info = {"steps", "accuracy", "seconds", ...}.
    """
    from effjax.qat.train import QATConfig, init_state, make_train_step

    if config.vocab_size != arithmetic.VOCAB_SIZE:
        raise ValueError(f"config.vocab_size must be the char vocabulary's "
                         f"{arithmetic.VOCAB_SIZE}, got {config.vocab_size}")
    qat = QATConfig(loss="ce", learning_rate=learning_rate, warmup_steps=max(1, steps // 20),
                    total_steps=steps, weight_decay=0.01)
    state = init_state(init_params(config, jax.random.PRNGKey(seed)), qat,
                       jax.random.PRNGKey(seed), config=config)
    step_fn = make_train_step(config, qat)
    held_out = arithmetic.problems(seed + 1, 256, split="test")
    t0, acc, curve = time.perf_counter(), 0.0, []
    bar = tqdm(range(steps), desc=f"{config.num_layers}-block model", disable=not progress)
    for i in bar:
        state, metrics = step_fn(state, arithmetic.training_batch(seed, i, batch_size, SEQ_LEN),
                                 None)
        if (i + 1) % eval_every == 0 or i + 1 == steps:
            acc = accuracy(state.params, held_out, config=config)
            curve.append((i + 1, float(metrics["loss"]), acc))
            bar.set_postfix(loss=f"{float(metrics['loss']):.3f}", acc=f"{acc:.3f}")
            if acc >= target:
                break
    info = {"steps": i + 1, "accuracy_256": acc, "seconds": time.perf_counter() - t0,
            "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
            "curve": curve}
    if path is not None:
        save_weights(state.params, info, zoo.trained_dir(_zoo_name(config)) if path == "zoo"
                     else path)
    return state.params, info


def _zoo_name(config: LMConfig) -> str:
    return "arith_draft" if config == DRAFT_CONFIG else "arith_teacher"


def load_teacher(path: str | os.PathLike | None = None, *, config: LMConfig = TEACHER_CONFIG
                 ) -> LM:
    """A model written by `train_teacher`.

    Args:
      path: its directory; default `effjax.zoo.weights_dir` of "arith_teacher" (or
        "arith_draft" for `DRAFT_CONFIG`): a retrained copy in the user cache, else the
        shipped one.
      config: its architecture (`TEACHER_CONFIG`, `DRAFT_CONFIG`).

    Returns:
      An `LM` with the character tokenizer and extras {"info": its info.json}.

    Raises:
      ValueError: when `path` holds no trained model (run `train_teacher()` to make one), or
        its weights do not have `config`'s shapes.
    """
    folder = pathlib.Path(zoo.weights_dir(_zoo_name(config)) if path is None else path)
    like = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    params, info = load_weights(folder, like, hint="train one with effjax.qat.train_teacher() "
                                "(about 15 minutes on 2 CPU cores)")
    return LM(config=config, params=params, tokenizer=arithmetic.CharTokenizer(),
              source=str(folder), extras={"info": info})

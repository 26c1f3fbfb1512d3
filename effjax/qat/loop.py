"""The training loop: steps over a deterministic batch stream, checkpoints, resumption, evals."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
from tqdm.auto import tqdm

from effjax.models.decoder import Params
from effjax.qat.checkpoints import Checkpointer
from effjax.qat.train import StepShardings, TrainState, global_batch


def fit(step_fn: Callable, state: TrainState, batch_at: Callable[[int], dict], *,
        num_steps: int, teacher: Params | None = None,
        checkpointer: Checkpointer | None = None, shardings: StepShardings | None = None,
        eval_fn: Callable[[TrainState], float] | None = None, eval_every: int = 0,
        on_save: Callable[[int], None] | None = None, progress: bool = True,
        desc: str = "qat") -> tuple[TrainState, list[dict]]:
    """Runs `step_fn` until `num_steps` optimizer steps, resuming from the checkpointer.

    The batch of step i is `batch_at(data_position)` with the position saved beside the
    state, so a killed run that resumes reads the same batches and, on the same machine,
    ends bit for bit where an uninterrupted run ends.

    Args:
      step_fn: from `make_train_step`.
      state: the initial state (also the structure a checkpoint restores into).
      batch_at: data position -> numpy batch.
      num_steps: the step to stop at.
      teacher: teacher params passed to every step (None with a cached-logit batch).
      checkpointer: saves every `save_every` steps and at the end; resumes from its newest
        step.
      shardings: the step's shardings (batches are placed with them).
      eval_fn: state -> a score, run every `eval_every` steps and at the end.
      eval_every: steps between evaluations (0: only at the end, when eval_fn is given).
      on_save: called with the step after each checkpoint write.
      progress: progress bar.
      desc: its label.

    Returns:
      (final state, history: one dict per step {"step", "loss"}, with "eval" where run).
    """
    position = 0
    if checkpointer is not None and checkpointer.steps():
        state, position = checkpointer.restore(state)
    history = []
    start = int(state.step)
    bar = tqdm(range(start, num_steps), desc=desc, disable=not progress, initial=start,
               total=num_steps)
    for _ in bar:
        batch = batch_at(position)
        batch = (global_batch(batch, shardings.batch) if shardings is not None
                 else jax.tree.map(np.asarray, batch))
        state, metrics = step_fn(state, batch, teacher)
        position += 1
        step = int(state.step)
        row = {"step": step, "loss": float(metrics["loss"])}
        last = step == num_steps
        if eval_fn is not None and ((eval_every and step % eval_every == 0) or last):
            row["eval"] = float(eval_fn(state))
        history.append(row)
        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k != "step"})
        if checkpointer is not None and checkpointer.save(state, position, force=last):
            if on_save is not None:
                on_save(step)
    return state, history

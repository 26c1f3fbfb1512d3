"""Resumable training: orbax CheckpointManager over {params, opt_state, step, data position, rng}.

Orbax writes each step into a temporary directory and renames it into place once complete,
so a run killed mid-save leaves the previous steps intact. A step that exists but cannot be
read (files damaged after the fact) raises `CheckpointError` naming it and the other steps;
`restore(..., fallback=True)` goes back to the newest step that reads.
"""

from __future__ import annotations

import os
import pathlib
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp

from effjax.qat.train import TrainState


class CheckpointError(ValueError):
    """A checkpoint step that cannot be restored."""


class Checkpointer:
    """Saves and restores `TrainState`s plus the data position, every `save_every` steps.

    Args:
      directory: where the steps live (created if absent).
      save_every: save when step % save_every == 0 (and whenever `save(force=True)`).
      max_to_keep: the newest steps kept on disk.
    """

    def __init__(self, directory: str | os.PathLike, *, save_every: int = 100,
                 max_to_keep: int = 3):
        if save_every < 1 or max_to_keep < 1:
            raise ValueError(f"save_every and max_to_keep must be >= 1, got {save_every} and "
                             f"{max_to_keep}")
        self.directory = pathlib.Path(directory).absolute()
        self.save_every = save_every
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                               enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        """The complete steps on disk, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, state: TrainState, data_position: int, *, force: bool = False) -> bool:
        """Saves state at its step (when due, or always with force); waits for the write.

        Returns:
          Whether a checkpoint was written.
        """
        step = int(state.step)
        if not force and step % self.save_every:
            return False
        tree = {"params": state.params, "opt_state": state.opt_state, "step": state.step,
                "rng": state.rng, "data_position": np.asarray(data_position, np.int64)}
        saved = self._manager.save(step, args=ocp.args.StandardSave(tree), force=True)
        self._manager.wait_until_finished()
        return bool(saved)

    def restore(self, target: TrainState, step: int | None = None, *, fallback: bool = False
                ) -> tuple[TrainState, int]:
        """Restores a step into target's structure, dtypes and shardings.

        Args:
          target: a `TrainState` of the run (e.g. `init_state(...)`, possibly sharded).
          step: which step (default: the newest).
          fallback: when the step cannot be read, warn and try the next older one.

        Returns:
          (state, data_position).

        Raises:
          CheckpointError: no checkpoint, or the step is unreadable (and no older one is,
            with fallback).
        """
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {str(self.directory)!r}")
        if step is not None and step not in steps:
            raise CheckpointError(f"no step {step} in {str(self.directory)!r}; steps: {steps}")
        candidates = [step] if step is not None else steps[::-1]
        if not fallback:
            candidates = candidates[:1]
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, {
            "params": target.params, "opt_state": target.opt_state, "step": target.step,
            "rng": target.rng, "data_position": np.zeros((), np.int64)})
        errors = []
        for s in candidates:
            try:
                tree = self._manager.restore(s, args=ocp.args.StandardRestore(abstract))
            except Exception as e:  # orbax raises many types for damaged files
                errors.append(f"step {s}: {type(e).__name__}: {str(e)[:200]}")
                if fallback:
                    warnings.warn(f"checkpoint step {s} is unreadable ({type(e).__name__}); "
                                  "trying an older one", stacklevel=2)
                continue
            state = TrainState(tree["params"], tree["opt_state"], tree["step"], tree["rng"])
            return state, int(tree["data_position"])
        others = [s for s in steps if s not in candidates]
        raise CheckpointError(
            f"could not restore from {str(self.directory)!r}: " + "; ".join(errors)
            + (f". Other steps on disk: {others} (restore(step=...) or fallback=True)"
               if others else ""))

    def close(self) -> None:
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

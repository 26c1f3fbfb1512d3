"""Resumable training: orbax CheckpointManager over {params, opt_state, step, data position, rng}.

The save protocol for step N (one writing process; in a multi-process run process 0 does
the file work):

1. Discard the unfinished steps of killed saves: a marker `.effjax-saving-M` whose step
   folder has no `effjax_checksums.json` (the folder and orbax's `M.orbax-checkpoint-tmp*`
   go, then the marker).
2. Write the marker `.effjax-saving-N` (fsynced).
3. Orbax writes the step into a temporary folder and renames it to `N` once complete.
4. Record the SHA-256 of every file of `N` in `N/effjax_checksums.json` (fsynced, renamed in).
5. Remove the marker: step N is committed.

A step whose marker is still there and has no checksums was not finished: `steps()` leaves it
out and the next save discards it, so a run killed anywhere in a save resumes from the
previous step. `restore` checks every file of a step against its checksums before orbax
reads it: a damaged, missing or unexpected file raises `CheckpointError` naming the step and
the file (as does any error orbax raises reading the step, naming the step), and
`restore(..., fallback=True)` goes back to the newest intact step. A step saved before effjax
recorded checksums restores unverified, with a warning.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp

from effjax.checkpoint import (
    _CHECKSUMS,
    CheckpointError,
    _verify_files,
    _write_checksums,
)
from effjax.durable import fsync_dir
from effjax.qat.train import TrainState

_SAVING = ".effjax-saving-"


def _reached(point: str) -> None:
    """Called at each named point of `Checkpointer.save`; a no-op that tests replace to kill
    the process there."""


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

    def _unfinished(self) -> list[int]:
        """Steps whose save was killed before their checksums were written."""
        return sorted(int(p.name[len(_SAVING):]) for p in self.directory.glob(_SAVING + "*")
                      if p.name[len(_SAVING):].isdigit()
                      and not (self.directory / p.name[len(_SAVING):] / _CHECKSUMS).exists())

    def steps(self) -> list[int]:
        """The complete steps on disk, oldest first."""
        unfinished = self._unfinished()
        return sorted(s for s in self._manager.all_steps() if s not in unfinished)

    def _discard_unfinished(self) -> None:
        if jax.process_index() == 0:
            for marker in sorted(self.directory.glob(_SAVING + "*")):
                name = marker.name[len(_SAVING):]
                if name.isdigit() and not (self.directory / name / _CHECKSUMS).exists():
                    for p in self.directory.iterdir():
                        if p.name == name or p.name.startswith(name + ".orbax-checkpoint-tmp"):
                            if p.is_dir():
                                shutil.rmtree(p)
                            else:
                                p.unlink()
                marker.unlink()
            fsync_dir(self.directory)
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes("effjax_checkpointer_discard")
        self._manager.reload()

    def save(self, state: TrainState, data_position: int, *, force: bool = False) -> bool:
        """Saves state at its step (when due, or always with force); waits for the write.

        Returns:
          Whether a checkpoint was written.

        Raises:
          ValueError: the step is already saved.
        """
        step = int(state.step)
        if not force and step % self.save_every:
            return False
        self._discard_unfinished()
        if step in self._manager.all_steps():
            raise ValueError(f"step {step} is already saved in {str(self.directory)!r}")
        tree = {"params": state.params, "opt_state": state.opt_state, "step": state.step,
                "rng": state.rng, "data_position": np.asarray(data_position, np.int64)}
        primary = jax.process_index() == 0
        marker = self.directory / f"{_SAVING}{step}"
        if primary:
            self.directory.mkdir(parents=True, exist_ok=True)
            with open(marker, "wb") as f:
                os.fsync(f.fileno())
            fsync_dir(self.directory)
        _reached("marked")
        saved = self._manager.save(step, args=ocp.args.StandardSave(tree), force=True)
        self._manager.wait_until_finished()
        _reached("written")
        if primary:
            if saved:
                _write_checksums(self.directory / str(step))
                _reached("checksummed")
            marker.unlink()
            fsync_dir(self.directory)
        if jax.process_count() > 1:
            ocp.multihost.sync_global_processes("effjax_checkpointer_commit")
        return bool(saved)

    def restore(self, target: TrainState, step: int | None = None, *, fallback: bool = False
                ) -> tuple[TrainState, int]:
        """Restores a step into target's structure, dtypes and shardings, after checking every
        file of it against the checksums recorded when it was saved.

        Args:
          target: a `TrainState` of the run (e.g. `init_state(...)`, possibly sharded).
          step: which step (default: the newest).
          fallback: when the step is damaged or cannot be read, warn and try the next older
            one.

        Returns:
          (state, data_position).

        Raises:
          CheckpointError: no checkpoint, or the step is damaged (the message names the step
            and the file) or unreadable (and no older one is intact, with fallback).
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
                verified = _verify_files(self.directory / str(s))
                tree = self._manager.restore(s, args=ocp.args.StandardRestore(abstract))
            except Exception as e:  # orbax raises many types for damaged files
                reason = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
                errors.append(f"step {s}: {reason}")
                if fallback:
                    warnings.warn(f"checkpoint step {s} is unreadable ({reason}); trying an "
                                  "older one", stacklevel=2)
                continue
            if not verified:
                warnings.warn(f"checkpoint step {s} in {str(self.directory)!r} has no checksums "
                              "(it was saved before effjax recorded them), so it is restored "
                              "unverified", stacklevel=2)
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

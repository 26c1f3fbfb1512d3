"""Saving and restoring parameter pytrees, atomically and checksummed.

`save` / `restore` (training state, any pytree) go through orbax. The save protocol, for a
checkpoint at `parent/name` (one writing process):

1. Recover: if `name` is missing but `.name.effjax-old` is complete (an earlier overwrite
   was killed between its two renames), rename it back to `name`. Then remove the stale
   temporaries of killed saves: `.name.effjax-new`, `.name.effjax-old` and orbax's own
   (`.name.effjax-new.orbax-checkpoint-tmp*`, and `name.orbax-checkpoint-tmp*` from
   versions that let orbax write `name` directly).
2. Write the tree into `.name.effjax-new` (orbax commits it there: `commit_success.txt`,
   `_CHECKPOINT_METADATA`).
3. Record the SHA-256 of every file in it in `effjax_checksums.json` (each file fsynced
   first; the checksum file is written to a temporary name, fsynced and renamed in).
4. Overwriting: rename `name` to `.name.effjax-old`.
5. Commit: rename `.name.effjax-new` to `name`.
6. Remove `.name.effjax-old` (its commit marker first, so a half-removed one never looks
   complete).

A kill before step 4 leaves the old checkpoint at `name`; after step 5, the new one. Between
4 and 5 `name` is missing and the old checkpoint is complete at `.name.effjax-old`:
`restore` and `is_complete` read it there, and the next `save` renames it back (step 1). So
at every point exactly one complete checkpoint (the old or the new) is what `restore` reads.

`restore` first checks every file against `effjax_checksums.json` (`verify`) and raises
`CheckpointError` naming the damaged, missing or unexpected file, so a flipped byte never
restores as different weights. A checkpoint written before effjax recorded checksums has
no such file: it restores unverified, with a warning (save it again to add them).

`save_weights` / `load_weights` write a trained model's nested-dict weights as one
safetensors file beside an info.json (the zoo's format), each file written to a temporary
name and renamed into place.

Contents: orbax save / restore of any parameter pytree: an overwrite is written beside the old
checkpoint and swapped in by renames, so a kill at any point leaves one complete checkpoint;
every file's SHA-256 is recorded at commit and checked on restore (`CheckpointError` names a
damaged file; `verify`); `save_weights` / `load_weights`: a model's weights as atomic
safetensors + info.json with the weights' digest, read back checked against the digest and the
expected shapes.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import safetensors.numpy
from safetensors.numpy import load_file

from effjax.durable import atomic_write, fsync_dir

_COMMIT_MARKERS = ("_CHECKPOINT_METADATA", "commit_success.txt")
_CHECKSUMS = "effjax_checksums.json"
_ORBAX_TMP = ".orbax-checkpoint-tmp"


class CheckpointError(ValueError):
    """A checkpoint that is missing, unfinished or damaged (a file differs from its checksum)."""


def _reached(point: str) -> None:
    """Called at each named point of the save protocol; a no-op that tests replace to kill
    the process there."""


def _sibling(path: pathlib.Path, kind: str) -> pathlib.Path:
    return path.parent / f".{path.name}.effjax-{kind}"


def _has_markers(path: pathlib.Path) -> bool:
    return path.is_dir() and all((path / m).is_file() for m in _COMMIT_MARKERS)


def _unmark(path: pathlib.Path) -> None:
    """Deletes a folder's commit markers, so that it never looks complete again."""
    if path.is_dir() and not path.is_symlink():
        for m in _COMMIT_MARKERS:
            (path / m).unlink(missing_ok=True)


def _remove(path: pathlib.Path) -> None:
    """Deletes a file or folder; a folder's commit markers go first."""
    _unmark(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _files(directory: pathlib.Path) -> list[str]:
    """The files under `directory` (relative POSIX paths, sorted), the checksum file aside."""
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                  if not p.is_dir() and p.relative_to(directory).as_posix() != _CHECKSUMS)


def _sha256(file: pathlib.Path, *, sync: bool = False) -> str:
    with open(file, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
        if sync:
            os.fsync(f.fileno())
    return digest


def _write_checksums(directory: str | os.PathLike) -> None:
    """Records the SHA-256 of every file under a finished checkpoint folder.

    Each file is fsynced as it is hashed; `effjax_checksums.json` is written to a temporary
    name, fsynced and renamed into place, so it is either absent or complete.

    Args:
      directory: the checkpoint folder (as orbax left it).
    """
    directory = pathlib.Path(directory)
    sums = {rel: _sha256(directory / rel, sync=True) for rel in _files(directory)}
    atomic_write(directory / _CHECKSUMS,
                 json.dumps({"format": 1, "algorithm": "sha256", "files": sums}, indent=1))
    for d in [directory, *(p for p in directory.rglob("*") if p.is_dir())]:
        fsync_dir(d)


def _resolve(path: pathlib.Path) -> pathlib.Path:
    """Where the committed checkpoint of `path` is: `path`, or the previous checkpoint set
    aside by an overwrite killed between its two renames."""
    if path.exists():
        if not _has_markers(path):
            raise CheckpointError(f"checkpoint at {str(path)!r} is incomplete (no commit marker "
                                  f"{_COMMIT_MARKERS}); it was not finished writing")
        return path
    if _has_markers(old := _sibling(path, "old")):
        return old
    raise CheckpointError(f"no checkpoint at {str(path)!r}")


def verify(path: str | os.PathLike) -> bool:
    """Checks every file of a checkpoint against the SHA-256 recorded when it was saved.

    Args:
      path: a checkpoint written by `save`.

    Returns:
      True when every file matches; False when the checkpoint has no checksums (it was
      written before effjax recorded them) and so cannot be verified.

    Raises:
      CheckpointError: no complete checkpoint at `path`; a file differs from its checksum,
        is missing, or was not there when the checkpoint was saved; or the checksum file is
        unreadable.
    """
    return _verify_files(_resolve(pathlib.Path(path).absolute()))


def _verify_files(directory: pathlib.Path) -> bool:
    """`verify` of a finished checkpoint folder (also a step of `effjax.qat.Checkpointer`)."""
    if not (directory / _CHECKSUMS).exists():
        return False
    where = f"checkpoint {str(directory)!r} is damaged"
    try:
        recorded = json.loads((directory / _CHECKSUMS).read_text())["files"]
        if not isinstance(recorded, dict):
            raise TypeError(f"expected a dict of files, found {type(recorded).__name__}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{where}: its checksum file {_CHECKSUMS!r} is unreadable "
                              f"({type(e).__name__}: {e})") from e
    found = _files(directory)
    if missing := sorted(set(recorded) - set(found)):
        raise CheckpointError(f"{where}: file {missing[0]!r} is missing ({len(missing)} of "
                              f"the {len(recorded)} files saved are missing)")
    if extra := sorted(set(found) - set(recorded)):
        raise CheckpointError(f"{where}: file {extra[0]!r} was not there when it was saved "
                              f"({len(extra)} unexpected files)")
    for rel in found:
        if (got := _sha256(directory / rel)) != recorded[rel]:
            raise CheckpointError(f"{where}: file {rel!r} does not match the SHA-256 recorded "
                                  f"when it was saved (found {got[:16]}..., expected "
                                  f"{recorded[rel][:16]}...)")
    return True


def save(path: str | pathlib.Path, tree: Any, *, overwrite: bool = False) -> pathlib.Path:
    """Saves a pytree of arrays to `path` (a directory), atomically, and waits for the write.

    The checkpoint is written beside `path`, checksummed and renamed into place (the module
    docstring has the protocol): killed at any point, `path` restores the old checkpoint or
    the new one, complete. One process may write a given `path` at a time.

    Args:
      path: destination directory; must not exist unless `overwrite`.
      tree: any pytree of arrays (dict keys may be strings or ints).
      overwrite: replace an existing checkpoint (only once the new one is complete).

    Returns:
      The absolute checkpoint path.

    Raises:
      ValueError: `path` exists and not `overwrite`, or the run has several processes
        (save through `effjax.qat.Checkpointer` there).
    """
    path = pathlib.Path(path).absolute()
    if jax.process_count() > 1:
        raise ValueError(f"checkpoint.save writes from one process, but this run has "
                         f"{jax.process_count()}; use effjax.qat.Checkpointer for multi-process "
                         "checkpoints")
    new, old = _sibling(path, "new"), _sibling(path, "old")
    if not path.exists() and _has_markers(old):  # an overwrite killed between its renames
        os.rename(old, path)
        fsync_dir(path.parent)
    if path.exists() and not overwrite:
        raise ValueError(f"checkpoint path {str(path)!r} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in path.parent.iterdir():  # stale temporaries of killed saves
        if p.name in (new.name, old.name) or p.name.startswith(
                (new.name + _ORBAX_TMP, path.name + _ORBAX_TMP)):
            _remove(p)
    _reached("cleaned")
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(new, tree)
        ckptr.wait_until_finished()
    _reached("written")
    _write_checksums(new)
    _reached("checksummed")
    if path.exists():
        os.rename(path, old)
        fsync_dir(path.parent)
        _reached("set-aside")
    os.rename(new, path)
    fsync_dir(path.parent)
    _reached("committed")
    if old.exists():
        _unmark(old)
        _reached("removing-old")
        _remove(old)
    return path


def is_complete(path: str | pathlib.Path) -> bool:
    """True when `path` holds a finished (committed) checkpoint, or an overwrite of it was
    killed between its renames and the previous one waits beside it (`restore` reads it)."""
    path = pathlib.Path(path).absolute()
    return _has_markers(path) or (not path.exists() and _has_markers(_sibling(path, "old")))


def _int_keys(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {(int(k) if isinstance(k, str) and k.isdigit() else k): _int_keys(v)
                for k, v in tree.items()}
    return tree


def restore(path: str | pathlib.Path, target: Any | None = None) -> Any:
    """Restores a pytree saved by `save`, after checking every file against its checksum.

    Args:
      path: the checkpoint directory.
      target: optional pytree of arrays or `jax.ShapeDtypeStruct`s giving the structure,
        dtypes and shardings to restore into. Without it, dict keys made only of digits come
        back as ints (the layer-index convention of effjax parameter pytrees).

    Returns:
      The restored pytree.

    Raises:
      CheckpointError: no checkpoint at `path`, an unfinished one, or a damaged one (a file
        differs from its checksum, is missing or is unexpected; the message names it).
    """
    path = pathlib.Path(path).absolute()
    directory = _resolve(path)
    if not _verify_files(directory):
        warnings.warn(f"checkpoint at {str(path)!r} has no checksums (it was saved before "
                      f"effjax recorded them), so it is restored unverified; save it again to "
                      f"add them", stacklevel=2)
    with ocp.StandardCheckpointer() as ckptr:
        if target is None:
            return _int_keys(ckptr.restore(directory))
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        return ckptr.restore(directory, abstract)


def _flatten(params: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for k, v in params.items():
        name = f"{prefix}{k}"
        out.update(_flatten(v, name + "/") if isinstance(v, dict) else {name: np.asarray(v)})
    return out


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
    out: dict = {}
    for name, value in flat.items():
        node = out
        *parents, leaf = [int(p) if p.isdigit() else p for p in name.split("/")]
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = jnp.asarray(value)
    return out


def save_weights(params: dict, info: dict, path: str | os.PathLike) -> None:
    """Writes nested-dict weights (model.safetensors, keys "a/b/0/c") and info (info.json,
    with the weights file's SHA-256 as "weights_sha256") into the directory `path`, each
    file atomically, the weights first."""
    path = pathlib.Path(path)
    weights = safetensors.numpy.save(_flatten(params))
    atomic_write(path / "model.safetensors", weights)
    digest = hashlib.sha256(weights).hexdigest()
    atomic_write(path / "info.json", json.dumps({**info, "weights_sha256": digest}, indent=1))


def load_weights(path: str | os.PathLike, like: Any, *, hint: str) -> tuple[dict, dict]:
    """Reads weights written by `save_weights`, checked against the shapes of `like`.

    Args:
      path: the directory.
      like: a pytree with the expected shapes (arrays or `jax.ShapeDtypeStruct`s, e.g.
        `jax.eval_shape` of the model's init).
      hint: how to make the weights, for the error when there are none.

    Returns:
      (params, info), info as it was saved (without the recorded digest).

    Raises:
      CheckpointError: model.safetensors differs from the SHA-256 that info.json recorded
        (weights written before effjax recorded it load unverified).
      ValueError: `path` holds no weights (the message ends with `hint`), or they do not
        have `like`'s shapes.
    """
    path = pathlib.Path(path)
    if not (path / "model.safetensors").is_file():
        raise ValueError(f"no trained weights in {str(path)!r}; {hint}")
    info = json.loads((path / "info.json").read_text())
    want = info.pop("weights_sha256", None)
    if want is not None and (got := _sha256(path / "model.safetensors")) != want:
        raise CheckpointError(f"{str(path / 'model.safetensors')!r} is damaged (or a save was "
                              f"interrupted between its two files): its SHA-256 is "
                              f"{got[:16]}..., info.json recorded {want[:16]}...")
    flat = load_file(str(path / "model.safetensors"))
    want = {k: tuple(v.shape) for k, v in _flatten(jax.tree.map(
        lambda a: np.zeros((0,)) if a is None else np.empty(a.shape, np.int8), like)).items()}
    got = {k: tuple(v.shape) for k, v in flat.items()}
    if got != want:
        missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
        shape = [(k, got[k], want[k]) for k in sorted(want.keys() & got.keys())
                 if got[k] != want[k]]
        raise ValueError(f"the weights in {str(path)!r} do not match the expected shapes: "
                         f"missing {missing[:4]}, unexpected {extra[:4]}, (found, expected) "
                         f"shapes {shape[:4]} ({len(missing)}, {len(extra)}, {len(shape)} in all)")
    return _unflatten(flat), info

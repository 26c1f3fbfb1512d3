"""Saving and restoring parameter pytrees with orbax, atomically.

Orbax writes a checkpoint into a temporary directory and renames it into place only when
every array is on disk, then marks it committed; `restore` refuses a directory without
that mark, so a half-written checkpoint is never read as complete.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

_COMMIT_MARKERS = ("_CHECKPOINT_METADATA", "commit_success.txt")


def save(path: str | pathlib.Path, tree: Any, *, overwrite: bool = False) -> pathlib.Path:
    """Saves a pytree of arrays to `path` (a directory) and waits for the write to finish.

    Args:
      path: destination directory; must not exist unless `overwrite`.
      tree: any pytree of arrays (dict keys may be strings or ints).
      overwrite: replace an existing checkpoint.

    Returns:
      The absolute checkpoint path.
    """
    path = pathlib.Path(path).absolute()
    if path.exists() and not overwrite:
        raise ValueError(f"checkpoint path {str(path)!r} exists; pass overwrite=True to replace it")
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path, tree, force=overwrite)
        ckptr.wait_until_finished()
    return path


def is_complete(path: str | pathlib.Path) -> bool:
    """True when `path` holds a finished (committed) checkpoint."""
    path = pathlib.Path(path)
    return path.is_dir() and all((path / m).is_file() for m in _COMMIT_MARKERS)


def _int_keys(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {(int(k) if isinstance(k, str) and k.isdigit() else k): _int_keys(v)
                for k, v in tree.items()}
    return tree


def restore(path: str | pathlib.Path, target: Any | None = None) -> Any:
    """Restores a pytree saved by `save`.

    Args:
      path: the checkpoint directory.
      target: optional pytree of arrays or `jax.ShapeDtypeStruct`s giving the structure,
        dtypes and shardings to restore into. Without it, dict keys made only of digits come
        back as ints (the layer-index convention of effjax parameter pytrees).

    Returns:
      The restored pytree.
    """
    path = pathlib.Path(path).absolute()
    if not path.exists():
        raise ValueError(f"no checkpoint at {str(path)!r}")
    if not is_complete(path):
        raise ValueError(f"checkpoint at {str(path)!r} is incomplete (no commit marker "
                         f"{_COMMIT_MARKERS}); it was not finished writing")
    with ocp.StandardCheckpointer() as ckptr:
        if target is None:
            return _int_keys(ckptr.restore(path))
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        return ckptr.restore(path, abstract)

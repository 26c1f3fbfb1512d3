"""Saving and restoring parameter pytrees, atomically.

`save` / `restore` (training state, any pytree) go through orbax: it writes a checkpoint
into a temporary directory and renames it into place only when every array is on disk, then
marks it committed; `restore` refuses a directory without that mark, so a half-written
checkpoint is never read as complete. `save_weights` / `load_weights` write a trained
model's nested-dict weights as one safetensors file beside an info.json (the zoo's format),
each file written to a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from safetensors.numpy import load_file, save_file

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
    """Writes nested-dict weights (model.safetensors, keys "a/b/0/c") and info (info.json)
    into the directory `path`, each file atomically."""
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name, write in (("model.safetensors", lambda f: save_file(_flatten(params), f)),
                        ("info.json", lambda f: pathlib.Path(f).write_text(
                            json.dumps(info, indent=1)))):
        fd, tmp = tempfile.mkstemp(dir=path, suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path / name)


def load_weights(path: str | os.PathLike, like: Any, *, hint: str) -> tuple[dict, dict]:
    """Reads weights written by `save_weights`, checked against the shapes of `like`.

    Args:
      path: the directory.
      like: a pytree with the expected shapes (arrays or `jax.ShapeDtypeStruct`s, e.g.
        `jax.eval_shape` of the model's init).
      hint: how to make the weights, for the error when there are none.

    Returns:
      (params, info).

    Raises:
      ValueError: `path` holds no weights (the message ends with `hint`), or they do not
        have `like`'s shapes.
    """
    path = pathlib.Path(path)
    if not (path / "model.safetensors").is_file():
        raise ValueError(f"no trained weights in {str(path)!r}; {hint}")
    info = json.loads((path / "info.json").read_text())
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

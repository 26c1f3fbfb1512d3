"""The cell cache of a study: its results by key in one JSON file, resumable."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Callable

from effjax.eval import write_atomic


def cell_key(*parts) -> str:
    """The canonical key of a cell: its parts (what its numbers depend on) as sorted JSON.

    Args:
      *parts: JSON-serializable values (a tuple is written as a list, dict keys sorted).

    Returns:
      The key, e.g. `'["rtn", {"steps": 10}, 512]'`.
    """
    return json.dumps(parts, sort_keys=True)


def file_digest(path: str | os.PathLike) -> str:
    """The first 16 hex digits of a file's SHA-256 (e.g. of the weights a cell measures).

    Args:
      path: the file.

    Returns:
      16 lowercase hex digits.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class Cells(dict):
    """A study's cells (key -> JSON-serializable result) and the JSON file they live in.

    A study computes only the cells its file lacks and saves after each one, so a stopped
    run resumes where it stopped.

    Attributes:
      path: the JSON file.
    """

    def __init__(self, path: str | os.PathLike, cells: dict | None = None):
        super().__init__(cells or {})
        self.path = str(path)

    def save(self) -> None:
        """Writes every cell to `path` atomically."""
        save_cells(self.path, self)

    def compute(self, key: str, fn: Callable[[], object], log: str | None = None) -> object:
        """The cell at `key`; computed by `fn()` and saved first when missing.

        Args:
          key: the cell's key (`cell_key`).
          fn: computes the cell.
          log: printed with the new cell when one is computed (None: nothing printed).

        Returns:
          The cell.
        """
        if key not in self:
            self[key] = fn()
            self.save()
            if log is not None:
                print(log, self[key], flush=True)
        return self[key]


def load_cells(path: str | os.PathLike, weights: str | None = None) -> Cells:
    """A study's cells from its JSON file; none if the file is absent.

    Args:
      path: the JSON file.
      weights: the `file_digest` of the model the cells measure, kept under the key
        "weights": a file written for other weights starts afresh, so a retrained model
        never mixes with old cells (None: the file as it is).

    Returns:
      The `Cells`.
    """
    p = pathlib.Path(path)
    cells = json.loads(p.read_text()) if p.exists() else {}
    if weights is not None and cells.get("weights") != weights:
        if cells:
            print(f"{path}: cells of other weights ({cells.get('weights')}), starting afresh",
                  flush=True)
        cells = {"weights": weights}
    return Cells(path, cells)


def save_cells(path: str | os.PathLike, cells: dict) -> None:
    """Writes a study's cells as JSON through a temporary file (a crash never leaves half a
    file).

    Args:
      path: the JSON file.
      cells: key -> JSON-serializable result.
    """
    write_atomic(path, json.dumps(cells, indent=1))

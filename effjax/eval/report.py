"""Readable results: Markdown tables and atomic file writes."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

from effjax.durable import atomic_write


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; floats are shown with 4 significant digits."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} cells, expected {len(headers)}")
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_atomic(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Writes `text` to `path` through a temporary file and a rename: never half-written.

    `effjax.durable.atomic_write` for text; missing parent folders are created.

    Returns:
      `path`, as a `pathlib.Path`.
    """
    return atomic_write(path, text)

"""Durable file-system steps shared by the checkpoints and the memory store."""

from __future__ import annotations

import os
import pathlib


def fsync_dir(path: str | os.PathLike) -> None:
    """Makes a folder's entries (creations, renames, deletions) durable.

    Args:
      path: the folder.
    """
    fd = os.open(pathlib.Path(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

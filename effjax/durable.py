"""Durable file-system steps shared by the checkpoints, the memory store and the reports."""

from __future__ import annotations

import os
import pathlib
import secrets
from collections.abc import Callable
from typing import BinaryIO


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


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], None], *,
                 tmp: str | os.PathLike | None = None) -> pathlib.Path:
    """Writes a file whole or not at all: a killed or failed write leaves the old file.

    The data goes into a temporary sibling (created with the default permissions), which is
    flushed, fsync'ed and renamed over `path`; then the folder is fsync'ed. Missing parent
    folders are created. On any failure the temporary is removed and `path` is untouched.

    Args:
      path: the file to write.
      data: the contents: bytes, a str (written as UTF-8), or a function that writes them
        to the binary file object it is given.
      tmp: the temporary's path, for a caller whose recovery looks for it by name (one
        writer at a time; an old one is overwritten). Default a fresh
        `.<name>.<random>.tmp` beside `path`.

    Returns:
      `path`, as a `pathlib.Path`.

    Raises:
      OSError: the file could not be written or renamed.
      Whatever `data` raises, when it is a function.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tmp is None:
        tmp, flags = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp"), os.O_EXCL
    else:
        tmp, flags = pathlib.Path(tmp), os.O_TRUNC
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path

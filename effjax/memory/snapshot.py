"""The memory store's snapshots: folders of files sealed by a manifest, named by CURRENT.

A snapshot is a folder `snap-<seq>-<gen>` (the last change it holds, 12 digits, and a
snapshot counter, 6 digits) with its data files and a `MANIFEST`, and `CURRENT` names
the live one. Both `MANIFEST` and `CURRENT` are one sealed line,

    <SHA-256 of the JSON, 64 hex digits> <JSON>\\n

The manifest lists each data file's size and SHA-256 with the snapshot's counts; CURRENT
holds the snapshot's name and the SHA-256 of its manifest. A snapshot is written into
`.tmp-<name>`, manifest last, fsync'ed, renamed into place and read back and verified
before CURRENT is switched to it (CURRENT.tmp, fsync, rename, fsync of the folder), so
CURRENT only ever names a verified snapshot. Folders are discarded by renaming them to
`.trash-<name>` first, so a `snap-*` folder is never half deleted.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
import shutil

from effjax.durable import atomic_write, fsync_dir
from effjax.memory.wal import CorruptStoreError

FORMAT = 2
MANIFEST = "MANIFEST"
CURRENT = "CURRENT"
_NAME = re.compile(r"^snap-(\d{12})-(\d{6,})$")


def snapshot_name(seq: int, gen: int) -> str:
    """The folder name of snapshot number `gen`, holding changes up to `seq`."""
    return f"snap-{seq:012d}-{gen:06d}"


def parse_name(name: str) -> tuple[int, int] | None:
    """(seq, gen) of a snapshot folder name, or None if it is not one."""
    m = _NAME.match(name)
    return None if m is None else (int(m.group(1)), int(m.group(2)))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seal(body: dict) -> bytes:
    """A dict as one line carrying its own SHA-256."""
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    return sha256(data).encode() + b" " + data + b"\n"


def unseal(data: bytes, where: pathlib.Path) -> dict:
    """The dict of a sealed line.

    Raises:
      CorruptStoreError: naming `where`, if the line is not sealed or its digest fails.
    """
    if len(data) < 67 or data[64:65] != b" " or not data.endswith(b"\n"):
        raise CorruptStoreError(f"{where}: expected one line '<sha256> <json>', found "
                                f"{len(data)} bytes starting {data[:24]!r}")
    body = data[65:-1]
    found = sha256(body)
    if data[:64].decode("ascii", "replace") != found:
        raise CorruptStoreError(f"{where}: expected its body to hash to "
                                f"{data[:64].decode('ascii', 'replace')}, found {found}")
    try:
        out = json.loads(body)
    except ValueError as e:
        raise CorruptStoreError(f"{where}: unreadable JSON: {e}") from e
    if not isinstance(out, dict):
        raise CorruptStoreError(f"{where}: expected a JSON object, found {type(out).__name__}")
    return out


def write_file(path: pathlib.Path, data: bytes) -> None:
    """Writes and fsyncs a file."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def discard(folder: pathlib.Path) -> None:
    """Deletes a folder, renaming it to `.trash-<name>` first (no half-deleted snapshot)."""
    if not folder.exists():
        return
    trash = folder.parent / (folder.name if folder.name.startswith(".trash-")
                             else f".trash-{folder.name}")
    if trash != folder:
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def write_snapshot(root: pathlib.Path, name: str, files: dict[str, bytes],
                   summary: dict) -> str:
    """Writes, seals, renames into place and verifies a snapshot folder.

    Args:
      root: the store folder.
      name: the snapshot's folder name (`snapshot_name`).
      files: file name -> contents.
      summary: counts and numbers to record in the manifest (JSON-serializable).

    Returns:
      The SHA-256 of the manifest (what CURRENT records).

    Raises:
      CorruptStoreError: the folder read back does not match what was written.
    """
    tmp = root / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for fname, data in files.items():
        write_file(tmp / fname, data)
    manifest = seal({"format": FORMAT, "snapshot": name, **summary,
                     "files": {f: {"bytes": len(d), "sha256": sha256(d)}
                               for f, d in files.items()}})
    write_file(tmp / MANIFEST, manifest)  # last: a folder without it is unfinished
    fsync_dir(tmp)
    discard(root / name)
    os.replace(tmp, root / name)
    fsync_dir(root)
    digest = sha256(manifest)
    read_snapshot(root / name, digest)
    return digest


def read_snapshot(folder: pathlib.Path, manifest_sha: str | None) -> tuple[dict, dict]:
    """A snapshot's manifest and files, verified.

    Args:
      folder: the snapshot folder.
      manifest_sha: the manifest's SHA-256 as CURRENT records it (None: check only the
        manifest's own seal).

    Returns:
      (manifest, files): the manifest dict and file name -> verified contents.

    Raises:
      CorruptStoreError: naming the file that is missing, unreadable, or differs from the
        manifest (size or digest, expected and found).
    """
    if not folder.is_dir():
        raise CorruptStoreError(f"{folder}: expected a snapshot folder, found none")
    data = _read(folder / MANIFEST)
    if manifest_sha is not None and sha256(data) != manifest_sha:
        raise CorruptStoreError(f"{folder / MANIFEST}: expected SHA-256 {manifest_sha} "
                                f"(recorded in {CURRENT}), found {sha256(data)}")
    manifest = unseal(data, folder / MANIFEST)
    if manifest.get("format") != FORMAT or manifest.get("snapshot") != folder.name:
        raise CorruptStoreError(
            f"{folder / MANIFEST}: expected format {FORMAT} and snapshot {folder.name!r}, "
            f"found format {manifest.get('format')!r}, snapshot {manifest.get('snapshot')!r}")
    found = (manifest.get("seq"), manifest.get("gen"))
    if parse_name(folder.name) != found or not isinstance(manifest.get("files"), dict):
        raise CorruptStoreError(f"{folder / MANIFEST}: expected (seq, gen) "
                                f"{parse_name(folder.name)} (from the folder name) and a file "
                                f"list, found {found} and {manifest.get('files')!r}")
    files = {}
    for fname, want in manifest["files"].items():
        found = _read(folder / fname)
        if len(found) != want["bytes"] or sha256(found) != want["sha256"]:
            raise CorruptStoreError(
                f"{folder / fname}: expected {want['bytes']} bytes with SHA-256 "
                f"{want['sha256']} (from {MANIFEST}), found {len(found)} bytes with SHA-256 "
                f"{sha256(found)}")
        files[fname] = found
    return manifest, files


def _read(path: pathlib.Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise CorruptStoreError(f"{path}: expected this file, found it missing") from e
    except OSError as e:
        raise CorruptStoreError(f"{path}: unreadable: {e}") from e


def write_current(root: pathlib.Path, name: str, manifest_sha: str) -> None:
    """Points CURRENT at a verified snapshot, atomically and durably (through CURRENT.tmp,
    which `orphans` finds if a write is interrupted)."""
    atomic_write(root / CURRENT, seal({"snapshot": name, "manifest_sha256": manifest_sha}),
                 tmp=root / f"{CURRENT}.tmp")


def read_current(root: pathlib.Path) -> tuple[bytes, str, str] | None:
    """CURRENT's raw bytes, the snapshot it names and its manifest's SHA-256 (None if absent).

    Raises:
      CorruptStoreError: CURRENT is damaged or does not name a snapshot.
    """
    try:
        data = (root / CURRENT).read_bytes()
    except FileNotFoundError:
        return None
    if re.fullmatch(rb"snap-\d{12}\n?", data):
        raise CorruptStoreError(f"{root / CURRENT}: expected a sealed line (format {FORMAT}), "
                                f"found {data!r}, a store written before snapshots had "
                                "manifests; rebuild it from its source")
    body = unseal(data, root / CURRENT)
    name, digest = body.get("snapshot"), body.get("manifest_sha256")
    if not isinstance(name, str) or parse_name(name) is None or not isinstance(digest, str):
        raise CorruptStoreError(f"{root / CURRENT}: expected a snapshot name and a manifest "
                                f"digest, found {body!r}")
    return data, name, digest


def snapshot_folders(root: pathlib.Path) -> list[pathlib.Path]:
    """The complete-looking snapshot folders (`snap-*`), oldest first."""
    return sorted((p for p in root.glob("snap-*") if p.is_dir()), key=lambda p: p.name)


def orphans(root: pathlib.Path) -> list[pathlib.Path]:
    """Leftovers of interrupted writes: `.tmp-*` / `.trash-*` folders and CURRENT.tmp."""
    out = [p for p in root.glob(".tmp-*")] + [p for p in root.glob(".trash-*")]
    if (root / f"{CURRENT}.tmp").exists():
        out.append(root / f"{CURRENT}.tmp")
    return sorted(out)

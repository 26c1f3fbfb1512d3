"""Recovering a damaged memory store from its last good snapshot and the log after it."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil

from effjax.durable import fsync_dir
from effjax.memory.snapshot import (
    CURRENT,
    orphans,
    parse_name,
    read_snapshot,
    snapshot_folders,
    snapshot_name,
    write_current,
    write_snapshot,
)
from effjax.memory.store import MemoryStore
from effjax.memory.wal import (
    CorruptStoreError,
    LogScan,
    LogWriter,
    log_name,
    scan_log,
)


@dataclasses.dataclass(frozen=True)
class RepairReport:
    """What `repair_store` found and did.

    Attributes:
      repaired: whether files were rewritten (False: the store opened cleanly as it was).
      snapshot: the verified snapshot recovered from (None: the log alone).
      snapshot_seq: the last change that snapshot holds (0 without one).
      replayed: log records applied after it.
      seq: the store's last change after repair.
      episodes: ids of the live episodes after repair.
      lost_ids: ids of episodes named by readable log records that could not be replayed
        (they follow a gap: a missing or unreadable record).
      problems: one line per problem found (damaged files, unreadable records, gaps, torn
        writes), naming the file.
      moved_to: the folder the old files were moved into (nothing is deleted), or None.
    """

    repaired: bool
    snapshot: str | None
    snapshot_seq: int
    replayed: int
    seq: int
    episodes: tuple[int, ...]
    lost_ids: tuple[int, ...]
    problems: tuple[str, ...]
    moved_to: pathlib.Path | None


def repair_store(path: str | os.PathLike) -> RepairReport:
    """Rebuilds a damaged store from its last good snapshot and the log that follows it.

    If the store opens cleanly nothing is changed. Otherwise every snapshot folder that
    verifies against its manifest is a candidate (and so is an empty store, for a log that
    reaches back to seq 1); the one after which the log's readable records run on furthest
    without a gap (ties: the newer snapshot) is loaded and those records are replayed.
    Then a fresh snapshot is written and verified, the old logs are moved into
    `quarantine-<n>/`, a new log is started and CURRENT is switched to the snapshot; the
    old snapshot folders and leftovers are moved there too (CURRENT is copied). An interrupted
    repair is finished by running it again.

    Args:
      path: the store folder (not open for writing elsewhere).

    Returns:
      A `RepairReport`; `lost_ids` and `problems` say what could not be recovered.

    Raises:
      FileNotFoundError: there is no folder at path.
      RuntimeError: another process holds the store's writer lock.
    """
    path = pathlib.Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"expected a store folder at {path}, found none")
    holder = MemoryStore(path, auto_consolidate=False)
    holder._take_lock()
    try:
        return _repair(path)
    finally:
        holder.close()


def _repair(path: pathlib.Path) -> RepairReport:
    try:
        check = MemoryStore(path, auto_consolidate=False)
        state = check._scan()
        check._install(state)
    except CorruptStoreError as e:
        problems = [str(e)]
    else:
        torn = [f"{s.path}: a torn final write of {s.torn} bytes at byte {s.end} (never "
                "acknowledged; dropped by the next writer open)" for s in state.logs if s.torn]
        return RepairReport(False, state.current, state.seq, len(state.replay), check._seq,
                            tuple(sorted(check._episodes)), (), tuple(torn), None)

    # Every readable log record, by sequence number.
    records: dict[int, tuple[LogScan, int]] = {}
    logs = []
    for p in sorted(path.glob("wal-*.log")):
        logs.append(p)
        try:
            scan = scan_log(p, strict=False)
        except CorruptStoreError as e:
            problems.append(f"unusable log: {e}")
            continue
        problems += [f"{p}: {what} at byte {pos}" for pos, what in scan.problems]
        if scan.torn:
            problems.append(f"{p}: a torn final write of {scan.torn} bytes at byte {scan.end}")
        for i, r in enumerate(scan.records):
            if r["seq"] in records and records[r["seq"]][0].records[records[r["seq"]][1]] != r:
                problems.append(f"{p}: record seq {r['seq']} at byte {scan.offsets[i]} differs "
                                f"from the one in {records[r['seq']][0].path.name}; kept that")
            records.setdefault(r["seq"], (scan, i))

    # Every snapshot that verifies is a candidate, as is an empty store.
    candidates = [(0, 0, None, None)]
    for folder in snapshot_folders(path):
        try:
            manifest, files = read_snapshot(folder, None)
        except CorruptStoreError as e:
            problems.append(f"{folder}: unusable snapshot: {e}")
            continue
        candidates.append((manifest["seq"], manifest["gen"], folder, (manifest, files)))

    def reach(seq: int) -> int:
        while seq + 1 in records:
            seq += 1
        return seq

    candidates.sort(key=lambda c: (reach(c[0]), c[0], c[1]), reverse=True)
    for seq, _, folder, snap in candidates:  # the empty store always loads
        recovered = _recover(path, seq, folder, snap, records, reach(seq), problems)
        if recovered is not None:
            store, end = recovered
            break

    if end < max(records, default=0):
        problems.append(f"log records {end + 1}..{max(records)} were not replayed: seq "
                        f"{end + 1} is missing, unreadable or inapplicable")
    lost = sorted({scan.records[i]["id"] for s, (scan, i) in records.items() if s > end})

    # Write the recovered state as a fresh snapshot and log; move the old files aside.
    gens = [parse_name(f.name)[1] for f in snapshot_folders(path) if parse_name(f.name)]
    gen = max(gens, default=0) + 1
    files, counts = store._snapshot_files()
    name = snapshot_name(end, gen)
    digest = write_snapshot(path, name, files, dict(counts, gen=gen))
    k = 1
    while (path / f"quarantine-{k}").exists():
        k += 1
    quarantine = path / f"quarantine-{k}"
    quarantine.mkdir()
    for p in logs:  # oldest first
        os.replace(p, quarantine / p.name)
    fsync_dir(quarantine)
    fsync_dir(path)
    LogWriter(path / log_name(end + 1)).close()
    if (path / CURRENT).exists():
        shutil.copy2(path / CURRENT, quarantine / CURRENT)
    write_current(path, name, digest)
    for p in [f for f in snapshot_folders(path) if f.name != name] + orphans(path):
        os.replace(p, quarantine / p.name)
    fsync_dir(quarantine)
    fsync_dir(path)
    return RepairReport(True, None if folder is None else folder.name, seq, end - seq, end,
                        tuple(sorted(store._episodes)), tuple(lost), tuple(problems), quarantine)


def _recover(path, seq, folder, snap, records, end, problems):
    """A store holding a candidate snapshot and the log records after it up to `end`
    (fewer if one cannot be applied), and its last seq; None if the snapshot won't load."""
    while True:
        store = MemoryStore(path, auto_consolidate=False)
        if snap is not None:
            try:
                store._install_snapshot(folder, *snap)
            except CorruptStoreError as e:
                problems.append(f"{folder}: unusable snapshot: {e}")
                return None
        for s in range(seq + 1, end + 1):
            scan, i = records[s]
            try:
                store._apply(scan.records[i])
                if scan.records[i]["op"] == "add":
                    store.tagger.observe([scan.records[i]["text"]])
            except (KeyError, ValueError, TypeError, IndexError) as e:
                problems.append(f"{scan.path}: record seq {s} at byte {scan.offsets[i]} cannot "
                                f"be applied: {e!r}")
                end = s - 1
                break
        else:
            return store, end

"""The memory store's write-ahead log: checksummed records with contiguous sequence numbers.

A log file is named after the sequence number of its first record, `wal-<first>.log`
(12 digits), and holds records first, first + 1, ... one per line:

    <CRC-32 of the JSON, 8 hex digits> <JSON record>\\n

Every change to a store is one record with a `seq` one above the last. Rules a reader
checks (anything else is a `CorruptStoreError` naming the file):

- each record's checksum holds and its `seq` is the file's first number plus its index;
- consecutive files continue each other (the next file starts one after the last record);
- only the final line of the newest file may be cut short (a torn write: the process died
  inside `write`, before the call was acknowledged); a final line that is a whole record
  with a damaged line end is not a torn write.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import zlib

from effjax.durable import fsync_dir

_NAME = re.compile(r"^wal-(\d{12})\.log$")
OPS = ("add", "update", "delete")


class CorruptStoreError(RuntimeError):
    """A store's files are damaged (beyond a torn, unacknowledged final log write)."""


def log_name(first: int) -> str:
    """The file name of a log whose first record is `first`."""
    return f"wal-{first:012d}.log"


def record_line(record: dict) -> bytes:
    """One record as its checksummed log line."""
    body = json.dumps(record, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def _decode(line: bytes) -> dict | None:
    """The record of a log line (without its line end), or None if it is not one."""
    if len(line) <= 9 or line[8:9] != b" ":
        return None
    try:
        if int(line[:8], 16) != zlib.crc32(line[9:]):
            return None
        record = json.loads(line[9:])
    except ValueError:
        return None
    if (not isinstance(record, dict) or record.get("op") not in OPS
            or type(record.get("seq")) is not int):
        return None
    return record


@dataclasses.dataclass
class LogScan:
    """What one log file holds.

    Attributes:
      path: the file.
      first: the sequence number its name promises for its first record.
      records: its readable records, in file order.
      offsets: the byte offset of each record.
      end: bytes up to the end of the last whole record (where an append continues).
      torn: bytes of a torn final write after `end` (0 if none).
      problems: (byte offset, what is wrong) for each unreadable or misplaced record
        (filled only by a lenient scan; a strict scan raises on the first).
    """

    path: pathlib.Path
    first: int
    records: list[dict]
    offsets: list[int]
    end: int
    torn: int
    problems: list[tuple[int, str]]

    @property
    def last(self) -> int:
        """The sequence number of its last record (first - 1 when it has none)."""
        return self.first + len(self.records) - 1


def list_logs(folder: pathlib.Path) -> list[pathlib.Path]:
    """The log files in a store folder, oldest first.

    Raises:
      CorruptStoreError: a file looks like a log (`wal-*.log`) but its name is not one.
    """
    out = []
    for p in folder.glob("wal-*.log"):
        if not _NAME.match(p.name):
            raise CorruptStoreError(f"{p}: expected a log name like {log_name(1)}, "
                                    f"found {p.name!r}")
        out.append(p)
    return sorted(out, key=lambda p: p.name)


def scan_log(path: pathlib.Path, *, strict: bool = True) -> LogScan:
    """Reads a log file without changing it.

    Args:
      path: a `wal-<first>.log` file.
      strict: raise on the first unreadable or misplaced record; otherwise list them in
        `problems` and keep every readable record.

    Returns:
      A `LogScan`.

    Raises:
      CorruptStoreError: (strict) a record's checksum fails, its sequence number is not
        the next one, or a final line is a whole record with a damaged line end.
    """
    m = _NAME.match(path.name)
    if not m:
        raise CorruptStoreError(f"{path}: expected a log name like {log_name(1)}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise CorruptStoreError(f"{path}: unreadable log file: {e}") from e
    scan = LogScan(path, int(m.group(1)), [], [], 0, 0, [])

    def problem(pos: int, what: str) -> None:
        if strict:
            raise CorruptStoreError(f"{path}: {what} at byte {pos}")
        scan.problems.append((pos, what))

    pos = 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:  # a final line without its line end
            if _decode(data[pos:-1]) is not None:
                problem(pos, "a whole record with a damaged line end")
            else:
                scan.torn = len(data) - pos
            break
        record = _decode(data[pos:nl])
        if record is None:
            problem(pos, "unreadable record (checksum mismatch or not a record)")
        elif strict and record["seq"] != scan.first + len(scan.records):
            problem(pos, f"expected record seq {scan.first + len(scan.records)}, found seq "
                         f"{record['seq']} (a record is missing or out of place)")
        else:
            scan.records.append(record)
            scan.offsets.append(pos)
            scan.end = nl + 1
        pos = nl + 1
    return scan


def check_chain(root: pathlib.Path, scans: list[LogScan], seq: int, *,
                snapshot: str | None) -> None:
    """Checks that the logs continue each other and the snapshot they follow.

    Args:
      root: the store folder.
      scans: strict scans of every log file, oldest first.
      seq: the last change the snapshot holds (0 without one).
      snapshot: the snapshot's name, for messages (None without one).

    Raises:
      CorruptStoreError: a file does not start where the one before it ends, a torn
        write is not at the end of the newest file, or the log the snapshot was
        switched to (`wal-<seq + 1>.log`) is missing.
    """
    for before, after in zip(scans, scans[1:], strict=False):
        if before.torn:
            raise CorruptStoreError(f"{before.path}: a torn write at byte {before.end}, but "
                                    f"it is not the newest log ({after.path.name} follows)")
        if after.first != before.last + 1:
            raise CorruptStoreError(
                f"{after.path}: expected the log to continue at seq {before.last + 1} "
                f"({log_name(before.last + 1)}) after {before.path.name}, found a file "
                f"starting at seq {after.first}")
    if not scans:
        if snapshot is not None:
            raise CorruptStoreError(f"{root / log_name(seq + 1)} is missing: expected it to "
                                    f"continue snapshot {snapshot} (seq {seq}), found no log")
        return
    names = {s.path.name for s in scans}
    if log_name(seq + 1) not in names:
        what = f"snapshot {snapshot} (seq {seq})" if snapshot else "an empty store"
        raise CorruptStoreError(
            f"{root / log_name(seq + 1)} is missing: expected it to continue {what}, found "
            f"{', '.join(sorted(names))} (covering seq {scans[0].first}..{scans[-1].last})")


class LogWriter:
    """Appends records to one log file; each append is durable when it returns.

    Args:
      path: the log file (created if missing; the folder entry is fsync'ed).
      truncate_at: cut the file to this many bytes first (dropping a torn write).
    """

    def __init__(self, path: pathlib.Path, *, truncate_at: int | None = None):
        self.path = path
        created = not path.exists()
        self._file = open(path, "ab")
        if truncate_at is not None:
            self._file.truncate(truncate_at)
            os.fsync(self._file.fileno())
        if created:
            fsync_dir(path.parent)

    def append(self, records: list[dict]) -> None:
        """Writes records (serialized before anything is written) and fsyncs them."""
        data = b"".join(record_line(r) for r in records)
        self._file.write(data)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

"""SwiftMem's memory store: durable episodes, temporal and tag indexes, co-consolidation.

On disk a store is a folder:

    LOCK                      held (flock) by the one writing process
    CURRENT                   names the live snapshot and its manifest's SHA-256 (sealed)
    snap-<seq>-<gen>/         arrays.npz (embeddings in consolidated order, ids, clusters),
                              episodes.jsonl, meta.json (DAG, tagger statistics) and
                              MANIFEST (each file's size and SHA-256, the counts; sealed)
    wal-<first>.log           write-ahead log of every add / update / delete, records
                              first, first + 1, ... (see `effjax.memory.wal`)

Protocol (`effjax.memory.snapshot` and `effjax.memory.wal` have the details):

- Every change is one log record with the next sequence number, appended and fsync'ed
  before the call returns, so an acknowledged episode survives a killed process.
- A snapshot at seq S is written into `.tmp-<name>` (manifest last), renamed into place
  and verified; then `wal-<S+1>.log` is created, then CURRENT is switched to the snapshot;
  only then are older logs (oldest first) and snapshot folders removed. So CURRENT only
  ever names a verified snapshot, and `wal-<S+1>.log` exists whenever CURRENT names S.
- Opening verifies CURRENT, the manifest and every snapshot file against their digests,
  checks that the logs' sequence numbers run on without a gap from the snapshot's, and
  replays the records after it. A torn final write of the newest log (never acknowledged)
  is dropped: by a writer (which truncates it and logs a warning), or skipped by a
  readonly open (which changes nothing). Anything else raises `CorruptStoreError`
  naming the file and what was expected and found; `repair_store` recovers what the
  log and the last good snapshot hold.
- A missing CURRENT is an error when snapshot folders exist and the log does not reach
  back to seq 1 (the snapshot would be needed); if it does, the log alone is the store.
- A writer's open removes what interrupted writes left: `.tmp-*` / `.trash-*` folders,
  CURRENT.tmp, snapshot folders CURRENT does not name, logs the snapshot supersedes.

The end of the newest log cannot be told from a crash: a log cut at a line boundary
reads as the writes after the cut never having happened. An `add_batch` is one write of
several records: killed part-way, the records written whole survive (their episodes appear
although the call never returned); nothing acknowledged is ever lost.

Consolidation (clustering, the tag DAG, the cluster-contiguous embedding layout) writes a
new snapshot, so reopening rebuilds nothing. Searches run concurrently with writes
from other threads: they capture the arrays under a lock and score outside it, and rows
are never written after they are published.

This class composes the parts: the log (`effjax.memory.wal`), the snapshots
(`effjax.memory.snapshot`), the in-memory indexes (`effjax.memory.index`) and the query
planning (`effjax.memory.planning`).
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import io
import json
import logging
import math
import numbers
import os
import pathlib
import threading
import zipfile

import numpy as np
from jaxtyping import Float, Int

from effjax.durable import fsync_dir
from effjax.memory.embedtext import DEFAULT_TEMPLATE, check_template, embedding_text
from effjax.memory.index import Index
from effjax.memory.planning import Plan, plan
from effjax.memory.snapshot import (
    CURRENT,
    discard,
    orphans,
    read_current,
    read_snapshot,
    snapshot_folders,
    snapshot_name,
    write_current,
    write_snapshot,
)
from effjax.memory.tags import KeyphraseTagger, TagDAG, Tagger
from effjax.memory.timeparse import TimeHint, parse_time_hint, parse_timestamp
from effjax.memory.wal import (
    CorruptStoreError,
    LogScan,
    LogWriter,
    check_chain,
    list_logs,
    log_name,
    scan_log,
)

MODES = ("swift", "flat")
MIN_TIMESTAMP = 0.0
MAX_TIMESTAMP = 253370764800.0  # 9999-01-01T00:00:00Z, excluded
SNAPSHOT_FILES = ("arrays.npz", "episodes.jsonl", "meta.json")
EXHAUSTIVE_BELOW = 16384  # swift searches of at most this many rows score them all
_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Episode:
    """One remembered utterance or event."""

    id: int
    text: str
    speaker: str
    timestamp: float
    session: str | None = None
    metadata: dict | None = None
    tags: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Hit:
    """A search result: the episode and its cosine similarity to the query."""

    episode: Episode
    score: float


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """Ranked hits and how they were found.

    Attributes:
      hits: best first.
      path: the index path used, e.g. "temporal+dag(fine=16)" or "flat".
      candidates: episodes scored.
      fallback: why a wider search was run, or a time hint was ignored; None otherwise.
      time_range: the (start, end) applied, or None.
      tags: the tags (DAG nodes) the search was restricted to.
    """

    hits: list[Hit]
    path: str
    candidates: int
    fallback: str | None = None
    time_range: tuple[float | None, float | None] | None = None
    tags: tuple[str, ...] = ()

    @property
    def ids(self) -> list[int]:
        return [h.episode.id for h in self.hits]


# ------------------------------------------------------------------------ input rules
def _check_text(text, name="text") -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected {name} to be a non-empty string, got {text!r}")
    return text


def _check_timestamp(value, name="timestamp") -> float:
    """Seconds since 1970-01-01 UTC of a timestamp, within the store's range.

    Real numbers of any type (Python or NumPy ints and floats) are epoch seconds;
    anything else goes through `parse_timestamp`. The range keeps every datetime the
    time-hint parser derives from a stored time ("this year", "today") valid.

    Raises:
      ValueError: a bool, NaN, an infinity, a time outside [MIN_TIMESTAMP, MAX_TIMESTAMP)
        or an unparseable value, naming `name` and the value.
    """
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"expected {name} to be a time, got the bool {value!r}")
    if isinstance(value, numbers.Real):
        try:
            t = float(value)
        except OverflowError:
            t = math.inf
    else:
        t = parse_timestamp(value, name=name)
    if not (math.isfinite(t) and MIN_TIMESTAMP <= t < MAX_TIMESTAMP):
        raise ValueError(f"expected {name} to be a finite time with {MIN_TIMESTAMP:.0f} <= "
                         f"seconds < {MAX_TIMESTAMP:.0f} (1970-01-01 up to 9999-01-01 UTC), "
                         f"got {value!r}")
    return t


def _check_int(value, name: str, minimum: int) -> int:
    """An int (Python or NumPy, not bool) >= minimum, as a Python int."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral) or (
            int(value) < minimum):
        raise ValueError(f"expected {name} to be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_session(value, name="session") -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"expected {name} to be a string or None, got {value!r}")
    return None if value is None else str(value)


def _check_metadata(value, name="metadata") -> dict | None:
    """A metadata dict that comes back unchanged from the log (JSON, string keys)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"expected {name} to be a dict or None, got {type(value).__name__}")
    try:
        same = json.loads(json.dumps(value, allow_nan=False)) == value
    except (TypeError, ValueError):
        same = False
    if not same:
        raise ValueError(f"expected {name} to be JSON data that reads back unchanged (string "
                         f"keys, lists not tuples, finite numbers), got {value!r}")
    return value


@dataclasses.dataclass
class _DiskState:
    """What a store folder holds, read and verified (nothing applied yet)."""

    current: str | None
    manifest: dict | None
    files: dict[str, bytes] | None
    seq: int
    logs: list[LogScan]
    replay: list[tuple[LogScan, int]]


class MemoryStore:
    """A SwiftMem memory: add episodes, search them by meaning, time and tag.

    Open one with `MemoryStore.open(path)` (or `open(None)` for a memory-only store).

    Input rules (checked when a call is made, ValueError naming the argument and value):
    timestamps are real numbers of any type (Python or NumPy ints and floats, not bool)
    taken as seconds since 1970-01-01 UTC, or anything `parse_timestamp` reads, and must
    be finite with MIN_TIMESTAMP (0) <= t < MAX_TIMESTAMP (9999-01-01 UTC); ids, `k` and
    the routing options are Python or NumPy ints (not bool); sessions are strings or None;
    metadata is JSON data that reads back unchanged. Searching an empty store returns a
    `SearchResult` with no hits.

    Args (of `open`):
      path: the store's folder (created if missing), or None for no persistence.
      encoder: text -> unit-norm embeddings (`.encode(texts)`, `.dim`); default the
        MiniLM `Encoder`, built on first use.
      tagger: a `Tagger`; default `KeyphraseTagger()`.
      readonly: open without taking the writer lock and without changing any file
        (another process may be writing; this view is the state at opening). The
        folder must exist.
      cluster_size: target episodes per fine topic at consolidation.
      auto_consolidate: consolidate when the unclustered tail outgrows a quarter of the
        store (and at first once it holds 4 clusters' worth).
      nprobe, beam, min_candidates: search defaults (fine topics probed, broad topics
        descended, fewest episodes scored before widening).
      max_tag_episodes: a keyphrase the query names adds its episodes to the candidates
        when it tags at most this many (specific tags only).
      exhaustive_below: a swift search scores every row, without routing, when the store
        (or what its time / speaker / session restriction leaves) holds at most this many
        episodes; the default is where routing starts to pay on a 2-core CPU
        (`experiments/results/swiftmem.md`). Said in `SearchResult.path` ("exhaustive(n)").
      embed_template: what each episode's embedding is computed from, a format string over
        {speaker}, {date}, {session} and {text} (default "{speaker} ({date}): {text}";
        "{text}" embeds the bare text; see `effjax.memory.embedtext`). Texts are stored and
        returned unchanged and queries are embedded as written. Embeddings are logged, so
        a store reopened with another template keeps the old episodes' embeddings.

    Raises (of `open`):
      CorruptStoreError: the store's files are damaged; see the module docstring.
      RuntimeError: another process holds the writer lock.
    """

    def __init__(self, path, *, encoder=None, tagger: Tagger | None = None, readonly=False,
                 cluster_size: int = 128, auto_consolidate: bool = True, nprobe: int = 16,
                 beam: int = 8, min_candidates: int = 512, max_tag_episodes: int = 1024,
                 exhaustive_below: int = EXHAUSTIVE_BELOW,
                 embed_template: str = DEFAULT_TEMPLATE):
        self.embed_template = check_template(embed_template)
        cluster_size, nprobe, beam = (_check_int(v, name, 1) for name, v in (
            ("cluster_size", cluster_size), ("nprobe", nprobe), ("beam", beam)))
        min_candidates, max_tag_episodes, exhaustive_below = (
            _check_int(v, name, 0) for name, v in (
                ("min_candidates", min_candidates), ("max_tag_episodes", max_tag_episodes),
                ("exhaustive_below", exhaustive_below)))
        self.max_tag_episodes, self.exhaustive_below = max_tag_episodes, exhaustive_below
        self.path = None if path is None else pathlib.Path(path)
        self._encoder = encoder
        self.tagger = tagger if tagger is not None else KeyphraseTagger()
        self.readonly = readonly
        self.cluster_size = cluster_size
        self.auto_consolidate = auto_consolidate
        self.nprobe, self.beam, self.min_candidates = nprobe, beam, min_candidates
        self._lock = threading.RLock()
        self._episodes: dict[int, Episode] = {}
        self._index = Index()
        self._next_id = 0
        self._seq = 0
        self._gen = 0  # the live snapshot's number (0: none yet)
        self._wal: LogWriter | None = None
        self._lockfile = None

    # ----------------------------------------------------------------- opening and closing
    @classmethod
    def open(cls, path: str | os.PathLike | None, **options) -> MemoryStore:
        """Opens (or creates) the store at path; see the class docstring for options."""
        store = cls(path, **options)
        if store.path is not None:
            try:
                store._load()
            except BaseException:
                store.close()
                raise
        return store

    def _take_lock(self) -> None:
        self._lockfile = open(self.path / "LOCK", "a+")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            self._lockfile.close()
            self._lockfile = None
            raise RuntimeError(f"{self.path} is open for writing by another process; "
                               "open it with readonly=True to read") from e

    def _load(self) -> None:
        if self.readonly:
            if not self.path.is_dir():
                raise FileNotFoundError(f"expected a store folder at {self.path} for a readonly "
                                        "open, found none")
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self._take_lock()
        state = self._scan_consistent()
        self._install(state)
        if not self.readonly:
            self._tidy(state)
            if not state.logs:
                self._wal = LogWriter(self.path / log_name(self._seq + 1))
                return
            last = state.logs[-1]  # appends continue it, after any torn write
            if last.torn:
                _log.warning("%s: dropped a torn final write of %d bytes at byte %d (a write "
                             "that was never acknowledged)", last.path, last.torn, last.end)
            self._wal = LogWriter(last.path, truncate_at=last.end if last.torn else None)

    def _marker(self) -> tuple:
        """What a writer changes when it switches snapshots (CURRENT, the log files)."""
        try:
            current = (self.path / CURRENT).read_bytes()
        except FileNotFoundError:
            current = None
        return current, tuple(p.name for p in self.path.glob("wal-*.log"))

    def _scan_consistent(self, tries: int = 5) -> _DiskState:
        """`_scan`, retried (readonly) while a writer switching snapshots moves files."""
        attempt = 1
        while True:
            before = self._marker()
            try:
                return self._scan()
            except (CorruptStoreError, FileNotFoundError):
                if not self.readonly or attempt == tries or self._marker() == before:
                    raise
            attempt += 1

    def _scan(self) -> _DiskState:
        """Reads and verifies the folder's snapshot and logs without changing anything."""
        root = self.path
        current = read_current(root)
        name = manifest = files = None
        if current is not None:
            _, name, digest = current
            if not (root / name).is_dir():
                raise CorruptStoreError(f"{root / CURRENT}: expected the snapshot folder it "
                                        f"names, {name}, found none")
            manifest, files = read_snapshot(root / name, digest)
        seq = 0 if manifest is None else manifest["seq"]
        logs = [scan_log(p) for p in list_logs(root)]
        if current is None:
            folders = [p.name for p in snapshot_folders(root)]
            if folders and (not logs or logs[0].first != 1):
                found = (f"the log starts at seq {logs[0].first}" if logs else "no log")
                raise CorruptStoreError(
                    f"{root / CURRENT}: expected it to name the live snapshot, found it "
                    f"missing while snapshot folders {', '.join(folders)} exist and {found}, "
                    f"so the earlier changes are only in a snapshot; run "
                    f"effjax.memory.repair_store({str(root)!r})")
        check_chain(root, logs, seq, snapshot=name)
        replay = [(s, i) for s in logs for i, r in enumerate(s.records) if r["seq"] > seq]
        return _DiskState(name, manifest, files, seq, logs, replay)

    def _install(self, state: _DiskState) -> None:
        """Applies a scanned state: the snapshot, then the log records after it."""
        if state.manifest is not None:
            self._install_snapshot(self.path / state.current, state.manifest, state.files)
        for scan, i in state.replay:
            record = scan.records[i]
            try:
                self._apply(record)
                if record["op"] == "add":  # as `add_batch` did before tagging
                    self.tagger.observe([record["text"]])
            except (KeyError, ValueError, TypeError, IndexError) as e:
                raise CorruptStoreError(f"{scan.path}: record seq {record['seq']} at byte "
                                        f"{scan.offsets[i]} cannot be applied: {e!r}") from e

    def _tidy(self, state: _DiskState) -> None:
        """Removes what interrupted writes left (a writer's open, after a verified load)."""
        removed = orphans(self.path)
        removed += [p for p in snapshot_folders(self.path) if p.name != state.current]
        keep = {log_name(state.seq + 1)} | ({state.logs[-1].path.name} if state.logs else set())
        removed += [s.path for s in state.logs if s.last <= state.seq and s.path.name not in keep]
        for p in removed:  # logs oldest first: an interruption leaves a run without gaps
            _log.info("%s: removing %s left by an interrupted write", self.path, p.name)
            if p.is_dir():
                discard(p)
            else:
                p.unlink()
        if removed:
            fsync_dir(self.path)

    def close(self) -> None:
        """Flushes and releases the store (its log and writer lock)."""
        with self._lock:
            if self._wal is not None:
                self._wal.close()
                self._wal = None
            if self._lockfile is not None:
                fcntl.flock(self._lockfile, fcntl.LOCK_UN)
                self._lockfile.close()
                self._lockfile = None

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def encoder(self):
        if self._encoder is None:
            from effjax.memory.encoder import Encoder

            self._encoder = Encoder()
        return self._encoder

    def __len__(self) -> int:
        return len(self._episodes)

    def __contains__(self, episode_id) -> bool:
        try:
            return _check_int(episode_id, "episode_id", 0) in self._episodes
        except ValueError:
            return False

    def get(self, episode_id: int) -> Episode:
        """The episode with this id.

        Raises:
          ValueError: episode_id is not an int >= 0.
          KeyError: there is no such episode.
        """
        episode_id = _check_int(episode_id, "episode_id", 0)
        try:
            return self._episodes[episode_id]
        except KeyError:
            raise KeyError(f"no episode with id {episode_id!r}") from None

    def episodes(self) -> list[Episode]:
        """All live episodes, in id order."""
        return [self._episodes[i] for i in sorted(self._episodes)]

    @property
    def dag(self) -> TagDAG | None:
        """The tag DAG of the last consolidation (None before the first)."""
        return self._index.dag

    def layout(self) -> tuple[Float[np.ndarray, "n d"], Int[np.ndarray, " k1"]]:
        """The co-consolidated embedding rows and each fine topic's row range.

        Returns:
          (embeddings, offsets): fine topic j owns rows offsets[j]:offsets[j+1] of the
          consolidated part (rows added since the last consolidation follow it).
        """
        return self._index.emb[:self._index.n], self._index.offsets

    def embedding(self, episode_id: int) -> np.ndarray:
        """The stored embedding of an episode."""
        episode_id = self.get(episode_id).id
        return self._index.emb[self._index.id_row[episode_id]].copy()

    # ----------------------------------------------------------------------- writing
    def add(self, text: str, *, speaker: str, timestamp, session: str | None = None,
            metadata: dict | None = None, embedding: np.ndarray | None = None) -> int:
        """Remembers one episode; returns its id once it is durable.

        Args:
          text: what was said or happened (non-empty).
          speaker: who said it (non-empty).
          timestamp: when: epoch seconds (any real number type) or anything
            `parse_timestamp` accepts, within the range in the class docstring.
          session: optional session / conversation key (a string).
          metadata: optional JSON data (a dict that reads back unchanged).
          embedding: optional precomputed (d,) embedding from this store's encoder.

        Returns:
          The new episode's id.

        Raises:
          ValueError: an argument breaks the input rules (named in the message).
        """
        return self.add_batch([text], speakers=[speaker], timestamps=[timestamp],
                              sessions=[session], metadatas=[metadata],
                              embeddings=None if embedding is None else embedding[None])[0]

    def add_batch(self, texts: list[str], *, speakers: list[str], timestamps: list,
                  sessions: list | None = None, metadatas: list | None = None,
                  embeddings: np.ndarray | None = None) -> list[int]:
        """Remembers many episodes with one encoder pass and one fsync; see `add`.

        Returns:
          The new ids, in order, once all are durable.
        """
        m = len(texts)
        sessions = [None] * m if sessions is None else list(sessions)
        metadatas = [None] * m if metadatas is None else list(metadatas)
        for name, seq in (("speakers", speakers), ("timestamps", timestamps),
                          ("sessions", sessions), ("metadatas", metadatas)):
            if len(seq) != m:
                raise ValueError(f"expected {name} to have one entry per text ({m}), "
                                 f"got {len(seq)}")
        for i in range(m):
            _check_text(texts[i], f"texts[{i}]")
            _check_text(speakers[i], f"speakers[{i}]")
            sessions[i] = _check_session(sessions[i], f"sessions[{i}]")
            _check_metadata(metadatas[i], f"metadatas[{i}]")
        stamps = [_check_timestamp(t, f"timestamps[{i}]") for i, t in enumerate(timestamps)]
        emb = self._embeddings(texts if embeddings is not None else [
            self._embedding_text(texts[i], speakers[i], stamps[i], sessions[i])
            for i in range(m)], embeddings)
        self._check_writable()
        with self._lock:
            self.tagger.observe(list(texts))
            tags = self.tagger.tag(list(texts))
            ids = list(range(self._next_id, self._next_id + m))
            records = [dict(op="add", seq=self._seq + 1 + i, id=ids[i], text=texts[i],
                            speaker=speakers[i], timestamp=stamps[i], session=sessions[i],
                            metadata=metadatas[i], tags=tags[i], emb=self._b64(emb[i]))
                       for i in range(m)]
            self._write(records)
            for r in records:
                self._apply(r, emb=emb[r["id"] - ids[0]])
            self._maybe_consolidate()
        return ids

    def update(self, episode_id: int, *, text: str | None = None, speaker: str | None = None,
               timestamp=None, session: str | None = None, metadata: dict | None = None) -> None:
        """Changes an episode's fields (re-embedded when the string it is embedded from
        changes, re-tagged when the text does).

        Raises:
          ValueError: an argument breaks the input rules.
          KeyError: there is no such episode.
        """
        old = self.get(episode_id)
        fields = {"text": old.text if text is None else _check_text(text),
                  "speaker": old.speaker if speaker is None else _check_text(speaker, "speaker"),
                  "timestamp": old.timestamp if timestamp is None
                  else _check_timestamp(timestamp, "timestamp"),
                  "session": old.session if session is None else _check_session(session),
                  "metadata": old.metadata if metadata is None else _check_metadata(metadata)}
        embedded = self._embedding_text(fields["text"], fields["speaker"], fields["timestamp"],
                                        fields["session"])
        emb = (self.embedding(old.id) if embedded == self._embedding_text(
            old.text, old.speaker, old.timestamp, old.session)
            else self._embeddings([embedded], None)[0])
        self._check_writable()
        with self._lock:
            tags = list(old.tags) if text is None else self.tagger.tag([fields["text"]])[0]
            record = dict(op="update", seq=self._seq + 1, id=old.id, tags=tags,
                          emb=self._b64(emb), **fields)
            self._write([record])
            self._apply(record, emb=emb)

    def delete(self, episode_id: int) -> None:
        """Forgets an episode.

        Raises:
          ValueError: episode_id is not an int >= 0.
          KeyError: there is no such episode.
        """
        episode_id = self.get(episode_id).id
        self._check_writable()
        with self._lock:
            record = dict(op="delete", seq=self._seq + 1, id=episode_id)
            self._write([record])
            self._apply(record)

    def _check_writable(self) -> None:
        if self.readonly:
            raise RuntimeError(f"store {self.path} was opened readonly")

    def _embedding_text(self, text, speaker, timestamp, session) -> str:
        return embedding_text(text, speaker=speaker, timestamp=timestamp, session=session,
                              template=self.embed_template)

    def _embeddings(self, texts, embeddings) -> np.ndarray:
        if embeddings is None:
            emb = np.asarray(self.encoder.encode(list(texts)), np.float32)
        else:
            emb = np.asarray(embeddings, np.float32)
            dim = self._index.dim
            if emb.ndim != 2 or emb.shape[0] != len(texts) or (
                    dim is not None and emb.shape[1] != dim):
                want = f"({len(texts)}, {dim or 'd'})"
                raise ValueError(f"expected embeddings of shape {want}, got {emb.shape}")
            if not np.all(np.isfinite(emb)):
                raise ValueError("expected finite embeddings")
        return emb

    def _b64(self, emb: np.ndarray) -> str | None:
        """An embedding as logged (None when there is no log to write)."""
        return None if self._wal is None else base64.b64encode(emb.tobytes()).decode()

    def _write(self, records: list[dict]) -> None:
        if self._wal is not None:
            self._wal.append(records)

    def _apply(self, r: dict, emb: np.ndarray | None = None) -> None:
        """Applies one log record to the in-memory state."""
        self._seq = r["seq"]
        if r["op"] == "delete" or r["op"] == "update":
            self._index.remove(self._episodes.pop(r["id"]))
        if r["op"] == "delete":
            return
        if emb is None:
            emb = np.frombuffer(base64.b64decode(r["emb"]), np.float32)
        ep = Episode(r["id"], r["text"], r["speaker"], r["timestamp"], r["session"],
                     r["metadata"], tuple(r["tags"]))
        self._episodes[ep.id] = ep
        self._next_id = max(self._next_id, ep.id + 1)
        self._index.add(ep)
        self._index.append_row(ep.id, emb)

    # ----------------------------------------------------------------- consolidation
    def _maybe_consolidate(self) -> None:
        if not self.auto_consolidate:
            return
        index = self._index
        tail = index.n - index.ncons
        if (index.dag is None and len(self) >= 4 * self.cluster_size) or (
                index.dag is not None and tail > max(self.cluster_size, index.ncons // 4)):
            self.consolidate()

    def consolidate(self, *, seed: int = 0) -> None:
        """Re-clusters the memory, rebuilds the tag DAG, lays embeddings out one fine topic
        after another (co-consolidation) and writes a snapshot."""
        self._check_writable()
        with self._lock:
            if self._index.consolidate(self._episodes, self.cluster_size, seed=seed) and (
                    self.path is not None):
                self._snapshot()

    def _snapshot_files(self) -> tuple[dict[str, bytes], dict]:
        """The snapshot's files and the manifest's counts, from the in-memory state."""
        index = self._index
        buf = io.BytesIO()
        np.savez(buf, **index.arrays())
        episodes = b"".join(json.dumps(dataclasses.asdict(ep), ensure_ascii=False,
                                       allow_nan=False).encode() + b"\n"
                            for ep in self._episodes.values())
        meta = dict(seq=self._seq, ncons=index.ncons, next_id=self._next_id,
                    tagger=dict(max_tags=self.tagger.max_tags, df=dict(self.tagger.df),
                                docs=self.tagger.docs)
                    if isinstance(self.tagger, KeyphraseTagger) else None,
                    dag=index.dag_meta())
        files = {"arrays.npz": buf.getvalue(), "episodes.jsonl": episodes,
                 "meta.json": json.dumps(meta).encode()}
        counts = dict(seq=self._seq, next_id=self._next_id, episodes=len(self._episodes),
                      rows=index.n, dim=index.dim)
        return files, counts

    def _snapshot(self) -> None:
        """Writes a snapshot of everything logged so far and switches to it (module
        docstring: verified snapshot, then the new log, then CURRENT, then clean-up)."""
        seq, gen = self._seq, self._gen + 1
        name = snapshot_name(seq, gen)
        files, counts = self._snapshot_files()
        digest = write_snapshot(self.path, name, files, dict(counts, gen=gen))
        new_log = self.path / log_name(seq + 1)
        writer = None if self._wal.path == new_log else LogWriter(new_log)
        try:
            write_current(self.path, name, digest)
        except BaseException as e:
            if writer is not None:
                writer.close()
                if isinstance(e, Exception):  # the process goes on: CURRENT names the old
                    new_log.unlink(missing_ok=True)  # snapshot, so writes go to the old log
            raise
        self._gen = gen
        if writer is not None:
            self._wal.close()
            self._wal = writer
        for log in list_logs(self.path):  # oldest first: a crash leaves a run without gaps
            if log != new_log:
                log.unlink()
        for folder in snapshot_folders(self.path):
            if folder.name != name:
                discard(folder)
        fsync_dir(self.path)

    def _install_snapshot(self, folder: pathlib.Path, manifest: dict,
                          files: dict[str, bytes]) -> None:
        """Loads a verified snapshot's files into the (empty) in-memory state.

        Raises:
          CorruptStoreError: naming the file whose contents disagree with the manifest.
        """
        if sorted(files) != sorted(SNAPSHOT_FILES):
            raise CorruptStoreError(f"{folder / 'MANIFEST'}: expected files "
                                    f"{sorted(SNAPSHOT_FILES)}, found {sorted(files)}")
        fname = "arrays.npz"
        try:
            with np.load(io.BytesIO(files[fname]), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            fname = "episodes.jsonl"
            episodes = [json.loads(line) for line in files[fname].decode().splitlines()]
            fname = "meta.json"
            meta = json.loads(files[fname])
        except (OSError, ValueError, zipfile.BadZipFile, UnicodeDecodeError) as e:
            raise CorruptStoreError(f"{folder / fname}: unreadable: {e}") from e
        found = dict(episodes=len(episodes), rows=len(arrays.get("row_id", ())),
                     seq=meta.get("seq"), next_id=meta.get("next_id"))
        want = {k: manifest.get(k) for k in found}
        if found != want:
            raise CorruptStoreError(f"{folder}: expected {want} (from MANIFEST), found {found} "
                                    "in its files")
        try:
            self._restore(arrays, episodes, meta)
        except (KeyError, ValueError, TypeError, IndexError) as e:
            raise CorruptStoreError(f"{folder}: its files disagree with each other: {e!r}") from e
        self._gen = manifest["gen"]

    def _restore(self, arrays: dict, episodes: list[dict], meta: dict) -> None:
        self._seq, self._next_id = meta["seq"], meta["next_id"]
        self._index.restore(arrays, meta["dag"], ncons=meta["ncons"], next_id=self._next_id)
        for e in episodes:
            ep = Episode(**{**e, "tags": tuple(e["tags"])})
            self._episodes[ep.id] = ep
            self._index.add(ep)
        if meta["tagger"] is not None and isinstance(self.tagger, KeyphraseTagger):
            self.tagger.max_tags = meta["tagger"]["max_tags"]
            self.tagger.df.update(meta["tagger"]["df"])
            self.tagger.docs = meta["tagger"]["docs"]

    # ----------------------------------------------------------------------- searching
    def search(self, query: str, k: int = 10, *, time_range=None, tags=None,
               speaker: str | None = None, session: str | None = None, mode: str = "swift",
               reference=None, query_embedding: np.ndarray | None = None,
               nprobe: int | None = None, beam: int | None = None,
               min_candidates: int | None = None) -> SearchResult:
        """The k episodes most similar to the query, within the restrictions given.

        Args:
          query: the query text (non-empty).
          k: number of hits (>= 1).
          time_range: None (no restriction), a (start, end) pair of timestamps (either may be
            None), a `TimeHint`, or "auto" to parse a hint from the query
            (`parse_time_hint`, relative to `reference`, default the latest episode).
          tags: restrict to episodes under these DAG nodes: keyphrases, "fine:j",
            "coarse:i". Unknown tags fall back to the unrestricted search (said in
            `fallback`).
          speaker, session: restrict to one speaker's / session's timeline.
          mode: "swift" (temporal index + tag DAG + consolidated layout) or "flat"
            (exhaustive over the same restrictions).
          reference: "now" for `time_range="auto"`.
          query_embedding: the query's embedding, if already computed.
          nprobe, beam, min_candidates: override the store's routing defaults.

        Returns:
          A `SearchResult` (with no hits when the store is empty). A time hint in the
          query that falls outside datetime's range is ignored (said in `fallback`).

        Raises:
          ValueError: an argument breaks the input rules (named in the message).
        """
        _check_text(query, "query")
        k = _check_int(k, "k", 1)
        if mode not in MODES:
            raise ValueError(f"expected mode in {MODES}, got {mode!r}")
        nprobe = self.nprobe if nprobe is None else _check_int(nprobe, "nprobe", 1)
        beam = self.beam if beam is None else _check_int(beam, "beam", 1)
        min_candidates = (self.min_candidates if min_candidates is None
                          else _check_int(min_candidates, "min_candidates", 0))
        if query_embedding is not None:
            q = np.asarray(query_embedding, np.float32).reshape(-1)
            dim = self._index.dim
            if (dim is not None and q.shape != (dim,)) or not np.all(np.isfinite(q)):
                raise ValueError(f"expected query_embedding to be {dim or 'd'} finite "
                                 f"numbers, got shape {np.shape(query_embedding)}")
        span, hint_note = self._time_range(query, time_range, reference)
        if self._index.dim is None:  # nothing was ever added: nothing to score
            return SearchResult([], "empty", 0, hint_note, span)
        if query_embedding is None:
            q = self._embeddings([query], None)[0]
        with self._lock:
            emb, row_id = self._index.emb, self._index.row_id
            found = plan(self._index, query, q, k, mode=mode, span=span, tags=tags,
                         speaker=speaker, session=session, nprobe=nprobe, beam=beam,
                         min_candidates=min_candidates, max_tag_episodes=self.max_tag_episodes,
                         exhaustive_below=self.exhaustive_below)
        fallback = "; ".join(f for f in (hint_note, found.fallback) if f) or None
        scores, cand = _score(q, emb, row_id, found)
        best = np.argpartition(-scores, k)[:k] if len(scores) > k else np.arange(len(scores))
        best = best[np.argsort(-scores[best], kind="stable")]
        hits = []
        for i, score in zip(row_id[cand[best]].tolist(), scores[best].tolist(), strict=True):
            ep = self._episodes.get(i)
            if math.isfinite(score) and ep is not None:
                hits.append(Hit(ep, score))
        return SearchResult(hits, found.path, int(np.isfinite(scores).sum()), fallback, span,
                            found.tags)

    def _time_range(self, query, time_range, reference):
        """The (start, end) a search is restricted to, or None, and a note on a time hint
        that was ignored (or None)."""
        if time_range is None:
            return None, None
        hint = time_range
        if isinstance(time_range, str):
            if time_range != "auto":
                raise ValueError(f"expected time_range to be None, 'auto', a TimeHint or a "
                                 f"(start, end) pair, got {time_range!r}")
            reference = (max((e.timestamp for e in self._episodes.values()), default=0.0)
                         if reference is None else _check_timestamp(reference, "reference"))
            try:
                hint = parse_time_hint(query, reference)
            except (OverflowError, ValueError) as e:  # e.g. "20000 years ago", "in May 0000"
                return None, (f"the time hint in the query is outside the dates datetime "
                              f"handles ({e}); searched without it")
            if hint is None:
                return None, None
        if isinstance(hint, TimeHint):
            if hint.anchor is None:
                return (hint.start, hint.end), None
            found = self.search(hint.anchor, 1, mode="flat")
            if not found.hits:
                return None, None
            t = found.hits[0].episode.timestamp
            return ((None, t) if hint.relation == "before" else (t, None)), None
        if not isinstance(time_range, tuple | list) or len(time_range) != 2:
            raise ValueError(f"expected time_range to be None, 'auto', a TimeHint or a "
                             f"(start, end) pair, got {time_range!r}")
        start, end = (None if t is None else _check_timestamp(t, f"time_range[{i}]")
                      for i, t in enumerate(time_range))
        if start is not None and end is not None and start > end:
            raise ValueError(f"expected time_range start <= end, got start={time_range[0]!r} "
                             f"end={time_range[1]!r}")
        return (start, end), None


def _score(q: Float[np.ndarray, " d"], emb: Float[np.ndarray, "cap d"],
           row_id: Int[np.ndarray, " cap"], found: Plan
           ) -> tuple[Float[np.ndarray, " c"], Int[np.ndarray, " c"]]:
    """Cosine scores of a plan's candidate rows (its slices, then its rows); dead rows
    score -inf. Returns (scores, rows scored)."""
    rows = np.asarray(found.rows, np.int64)
    cand = [np.arange(a, b) for a, b in found.slices] + [rows]
    scores = [emb[a:b] @ q for a, b in found.slices] + [emb[rows] @ q]
    cand, scores = np.concatenate(cand), np.concatenate(scores)
    return np.where(row_id[cand] >= 0, scores, -np.inf), cand

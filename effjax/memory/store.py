"""SwiftMem's memory store: durable episodes, temporal and tag indexes, co-consolidation.

On disk a store is a folder:

    LOCK                      held (flock) by the one writing process
    CURRENT                   names the live snapshot (replaced atomically)
    snap-<seq>/               arrays.npz (embeddings in consolidated order, ids, clusters),
                              episodes.jsonl, meta.json (DAG, tagger statistics)
    wal-<seq>.log             write-ahead log of every add / update / delete after <seq>

Every write is appended to the log and fsync'ed before the call returns, so an
acknowledged episode survives a killed process; a torn last line (the write that was
never acknowledged) is dropped on reopening, anything else unreadable is an error.
Consolidation (clustering, the tag DAG, the cluster-contiguous embedding layout) writes a
new snapshot, so reopening rebuilds nothing. Searches run concurrently with writes
from other threads: they capture the arrays under a lock and score outside it, and rows
are never written after they are published.
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import json
import os
import pathlib
import shutil
import threading
import zlib

import numpy as np
from jaxtyping import Float, Int

from effjax.memory.tags import (
    KeyphraseTagger,
    TagDAG,
    Tagger,
    assign,
    build_dag,
    candidates,
    spherical_kmeans,
    words,
)
from effjax.memory.temporal import TemporalIndex
from effjax.memory.timeparse import TimeHint, parse_time_hint, parse_timestamp

MODES = ("swift", "flat")


class CorruptStoreError(RuntimeError):
    """A store's files are damaged beyond a torn final log line."""


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
      fallback: why a wider search was run, or None.
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


def _check_text(text, name="text") -> str:
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"expected {name} to be a non-empty string, got {text!r}")
    return text


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _record_line(record: dict) -> bytes:
    body = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def _read_log(path: pathlib.Path, last: bool) -> list[dict]:
    """Records of a log file; a torn final line of the last file is cut off."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        line = data[pos:] if end < 0 else data[pos:end]
        ok = end >= 0 and len(line) > 9 and line[8:9] == b" "
        if ok:
            try:
                ok = int(line[:8], 16) == zlib.crc32(line[9:])
            except ValueError:
                ok = False
        if not ok:
            if last and (end < 0 or end + 1 >= len(data)):  # the unacknowledged torn write
                with open(path, "r+b") as f:
                    f.truncate(pos)
                    os.fsync(f.fileno())
                break
            raise CorruptStoreError(f"unreadable log record at byte {pos} of {path}")
        out.append(json.loads(line[9:]))
        pos = end + 1
    return out


class MemoryStore:
    """A SwiftMem memory: add episodes, search them by meaning, time and tag.

    Open one with `MemoryStore.open(path)` (or `open(None)` for a memory-only store).

    Args (of `open`):
      path: the store's folder (created if missing), or None for no persistence.
      encoder: text -> unit-norm embeddings (`.encode(texts)`, `.dim`); default the
        MiniLM `Encoder`, built on first use.
      tagger: a `Tagger`; default `KeyphraseTagger()`.
      readonly: open without taking the writer lock (another process may be writing;
        this view is the state at opening).
      cluster_size: target episodes per fine topic at consolidation.
      auto_consolidate: consolidate when the unclustered tail outgrows a quarter of the
        store (and at first once it holds 4 clusters' worth).
      nprobe, beam, min_candidates: search defaults (fine topics probed, broad topics
        descended, fewest episodes scored before widening).
      max_tag_episodes: a keyphrase the query names adds its episodes to the candidates
        when it tags at most this many (specific tags only).
      max_entity_episodes: a speaker the query names (entity tag) adds their episodes when
        they said at most this many.
    """

    def __init__(self, path, *, encoder=None, tagger: Tagger | None = None, readonly=False,
                 cluster_size: int = 128, auto_consolidate: bool = True, nprobe: int = 16,
                 beam: int = 8, min_candidates: int = 512, max_tag_episodes: int = 1024,
                 max_entity_episodes: int = 4096):
        for name, v in (("cluster_size", cluster_size), ("nprobe", nprobe), ("beam", beam)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"expected {name} to be an int >= 1, got {v!r}")
        for name, v in (("min_candidates", min_candidates), ("max_tag_episodes", max_tag_episodes),
                        ("max_entity_episodes", max_entity_episodes)):
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"expected {name} to be an int >= 0, got {v!r}")
        self.max_tag_episodes, self.max_entity_episodes = max_tag_episodes, max_entity_episodes
        self.path = None if path is None else pathlib.Path(path)
        self._encoder = encoder
        self.tagger = tagger if tagger is not None else KeyphraseTagger()
        self.readonly = readonly
        self.cluster_size = cluster_size
        self.auto_consolidate = auto_consolidate
        self.nprobe, self.beam, self.min_candidates = nprobe, beam, min_candidates
        self._lock = threading.RLock()
        self._episodes: dict[int, Episode] = {}
        self._dim: int | None = None
        self._emb = np.zeros((0, 0), np.float32)
        self._row_id = np.zeros(0, np.int64)
        self._row_fine = np.zeros(0, np.int32)
        self._id_row = np.zeros(0, np.int64)
        self._n = 0
        self._ncons = 0
        self._offsets = np.zeros(1, np.int64)
        self._dag: TagDAG | None = None
        self._kw: dict[str, set[int]] = {}
        self._speaker_words: dict[str, set[str]] = {}
        self._temporal = TemporalIndex()
        self._next_id = 0
        self._seq = 0
        self._wal = None
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

    def _load(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.readonly:
            self._lockfile = open(self.path / "LOCK", "a+")
            try:
                fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                self._lockfile.close()
                self._lockfile = None
                raise RuntimeError(f"{self.path} is open for writing by another process; "
                                   "open it with readonly=True to read") from e
        current = self.path / "CURRENT"
        if current.exists():
            self._load_snapshot(self.path / current.read_text().strip())
        logs = sorted(self.path.glob("wal-*.log"))
        for i, log in enumerate(logs):
            for record in _read_log(log, last=i == len(logs) - 1 and not self.readonly):
                if record["seq"] > self._seq:
                    self._apply(record)
        if not self.readonly:
            self._open_log(logs[-1] if logs else None)

    def _open_log(self, existing: pathlib.Path | None) -> None:
        log = existing or self.path / f"wal-{self._seq + 1:012d}.log"
        self._wal = open(log, "ab")
        if existing is None:
            _fsync_dir(self.path)

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

    def __contains__(self, episode_id: int) -> bool:
        return episode_id in self._episodes

    def get(self, episode_id: int) -> Episode:
        """The episode with this id (KeyError if there is none)."""
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
        return self._dag

    def layout(self) -> tuple[Float[np.ndarray, "n d"], Int[np.ndarray, " k1"]]:
        """The co-consolidated embedding rows and each fine topic's row range.

        Returns:
          (embeddings, offsets): fine topic j owns rows offsets[j]:offsets[j+1] of the
          consolidated part (rows added since the last consolidation follow it).
        """
        return self._emb[:self._n], self._offsets

    def embedding(self, episode_id: int) -> np.ndarray:
        """The stored embedding of an episode."""
        self.get(episode_id)
        return self._emb[self._id_row[episode_id]].copy()

    # ----------------------------------------------------------------------- writing
    def add(self, text: str, *, speaker: str, timestamp, session: str | None = None,
            metadata: dict | None = None, embedding: np.ndarray | None = None) -> int:
        """Remembers one episode; returns its id once it is durable.

        Args:
          text: what was said or happened (non-empty).
          speaker: who said it (non-empty).
          timestamp: when (anything `parse_timestamp` accepts).
          session: optional session / conversation key.
          metadata: optional JSON-serializable dict.
          embedding: optional precomputed (d,) embedding from this store's encoder.

        Returns:
          The new episode's id.
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
            if metadatas[i] is not None and not isinstance(metadatas[i], dict):
                raise ValueError(f"expected metadatas[{i}] to be a dict or None, "
                                 f"got {type(metadatas[i]).__name__}")
        stamps = [parse_timestamp(t, name=f"timestamps[{i}]") for i, t in enumerate(timestamps)]
        emb = self._embeddings(texts, embeddings)
        self._check_writable()
        with self._lock:
            self.tagger.observe(list(texts))
            tags = self.tagger.tag(list(texts))
            ids = list(range(self._next_id, self._next_id + m))
            records = [dict(op="add", seq=self._seq + 1 + i, id=ids[i], text=texts[i],
                            speaker=speakers[i], timestamp=stamps[i], session=sessions[i],
                            metadata=metadatas[i], tags=tags[i], emb=self._b64(emb[i]))
                       for i in range(m)]
            self._log(records)
            for r in records:
                self._apply(r, emb=emb[r["id"] - ids[0]])
            self._maybe_consolidate()
        return ids

    def update(self, episode_id: int, *, text: str | None = None, speaker: str | None = None,
               timestamp=None, session: str | None = None, metadata: dict | None = None) -> None:
        """Changes an episode's fields (a new text is re-embedded and re-tagged)."""
        old = self.get(episode_id)
        fields = {"text": old.text if text is None else _check_text(text),
                  "speaker": old.speaker if speaker is None else _check_text(speaker, "speaker"),
                  "timestamp": old.timestamp if timestamp is None else parse_timestamp(timestamp),
                  "session": old.session if session is None else session,
                  "metadata": old.metadata if metadata is None else metadata}
        emb = (self.embedding(episode_id) if text is None
               else self._embeddings([fields["text"]], None)[0])
        self._check_writable()
        with self._lock:
            tags = list(old.tags) if text is None else self.tagger.tag([fields["text"]])[0]
            record = dict(op="update", seq=self._seq + 1, id=episode_id, tags=tags,
                          emb=self._b64(emb), **fields)
            self._log([record])
            self._apply(record, emb=emb)

    def delete(self, episode_id: int) -> None:
        """Forgets an episode."""
        self.get(episode_id)
        self._check_writable()
        with self._lock:
            record = dict(op="delete", seq=self._seq + 1, id=episode_id)
            self._log([record])
            self._apply(record)

    def _check_writable(self) -> None:
        if self.readonly:
            raise RuntimeError(f"store {self.path} was opened readonly")

    def _embeddings(self, texts, embeddings) -> np.ndarray:
        if embeddings is None:
            emb = np.asarray(self.encoder.encode(list(texts)), np.float32)
        else:
            emb = np.asarray(embeddings, np.float32)
            if emb.ndim != 2 or emb.shape[0] != len(texts) or (
                    self._dim is not None and emb.shape[1] != self._dim):
                want = f"({len(texts)}, {self._dim or 'd'})"
                raise ValueError(f"expected embeddings of shape {want}, got {emb.shape}")
            if not np.all(np.isfinite(emb)):
                raise ValueError("expected finite embeddings")
        return emb

    def _b64(self, emb: np.ndarray) -> str | None:
        """An embedding as logged (None when there is no log to write)."""
        return None if self._wal is None else base64.b64encode(emb.tobytes()).decode()

    def _log(self, records: list[dict]) -> None:
        if self._wal is not None:
            self._wal.write(b"".join(_record_line(r) for r in records))
            self._wal.flush()
            os.fsync(self._wal.fileno())

    def _apply(self, r: dict, emb: np.ndarray | None = None) -> None:
        """Applies one log record to the in-memory state."""
        self._seq = r["seq"]
        if r["op"] == "delete" or r["op"] == "update":
            old = self._episodes.pop(r["id"])
            self._temporal.remove(old.timestamp, old.id, self._keys(old))
            for t in old.tags:
                self._kw[t].discard(old.id)
                if not self._kw[t]:
                    del self._kw[t]
            self._row_id[self._id_row[old.id]] = -1
            self._id_row[old.id] = -1
        if r["op"] == "delete":
            return
        if emb is None:
            emb = np.frombuffer(base64.b64decode(r["emb"]), np.float32)
        ep = Episode(r["id"], r["text"], r["speaker"], r["timestamp"], r["session"],
                     r["metadata"], tuple(r["tags"]))
        self._episodes[ep.id] = ep
        self._next_id = max(self._next_id, ep.id + 1)
        self._index(ep)
        self._append_row(ep.id, emb)

    def _index(self, ep: Episode) -> None:
        """Puts an episode on its timelines, its keyphrase tags and its speaker's name."""
        self._temporal.add(ep.timestamp, ep.id, self._keys(ep))
        for t in ep.tags:
            self._kw.setdefault(t, set()).add(ep.id)
        for w in words(ep.speaker):
            if len(w) >= 3:
                self._speaker_words.setdefault(w, set()).add(ep.speaker)

    @staticmethod
    def _keys(ep: Episode) -> tuple:
        return (("speaker", ep.speaker),) + ((("session", ep.session),) if ep.session else ())

    def _append_row(self, episode_id: int, emb: np.ndarray) -> None:
        if self._dim is None:
            self._dim = emb.shape[0]
            self._emb = np.zeros((0, self._dim), np.float32)
        if self._n == len(self._emb):  # grow into fresh arrays: readers keep the old ones
            cap = max(1024, 2 * len(self._emb))
            emb_buf = np.zeros((cap, self._dim), np.float32)
            emb_buf[:self._n] = self._emb[:self._n]
            self._emb = emb_buf
            self._row_id = np.concatenate([self._row_id, np.full(cap - self._n, -1, np.int64)])
            self._row_fine = np.concatenate([self._row_fine,
                                             np.zeros(cap - self._n, np.int32)])
        if episode_id >= len(self._id_row):
            grow = max(1024, 2 * len(self._id_row), episode_id + 1) - len(self._id_row)
            self._id_row = np.concatenate([self._id_row, np.full(grow, -1, np.int64)])
        row = self._n
        self._emb[row] = emb
        self._row_id[row] = episode_id
        self._row_fine[row] = 0 if self._dag is None else int(np.argmax(self._dag.fine @ emb))
        self._id_row[episode_id] = row
        self._n = row + 1

    # ----------------------------------------------------------------- consolidation
    def _maybe_consolidate(self) -> None:
        if not self.auto_consolidate:
            return
        tail = self._n - self._ncons
        if (self._dag is None and len(self) >= 4 * self.cluster_size) or (
                self._dag is not None and tail > max(self.cluster_size, self._ncons // 4)):
            self.consolidate()

    def consolidate(self, *, seed: int = 0) -> None:
        """Re-clusters the memory, rebuilds the tag DAG, lays embeddings out one fine topic
        after another (co-consolidation) and writes a snapshot."""
        self._check_writable()
        with self._lock:
            rows = np.nonzero(self._row_id[:self._n] >= 0)[0]
            emb = self._emb[rows]
            k2 = max(1, min(len(rows), round(len(rows) / self.cluster_size)))
            if len(rows) == 0:
                return
            fine = spherical_kmeans(emb, k2, seed=seed)
            fine_of = assign(emb, fine)
            ids = self._row_id[rows]
            tags = [list(self._episodes[int(i)].tags) for i in ids]
            counts = {t: len(s) for t, s in self._kw.items()}
            dag = build_dag(emb, fine_of, fine, tags, counts, seed=seed)
            order = np.argsort(fine_of, kind="stable")
            n = len(rows)
            cap = max(1024, 2 * n)
            new_emb = np.zeros((cap, emb.shape[1]), np.float32)
            new_emb[:n] = emb[order]
            new_row_id = np.full(cap, -1, np.int64)
            new_row_id[:n] = ids[order]
            new_fine = np.zeros(cap, np.int32)
            new_fine[:n] = fine_of[order]
            id_row = np.full(len(self._id_row), -1, np.int64)
            id_row[ids[order]] = np.arange(n)
            self._emb, self._row_id, self._row_fine, self._id_row = (new_emb, new_row_id,
                                                                     new_fine, id_row)
            self._offsets = np.searchsorted(fine_of[order], np.arange(k2 + 1)).astype(np.int64)
            self._n = self._ncons = n
            self._dag = dag
            if self.path is not None:
                self._snapshot()

    def _snapshot(self) -> None:
        name = f"snap-{self._seq:012d}"
        tmp = self.path / f".tmp-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        n = self._n
        dag = self._dag
        arrays = dict(emb=self._emb[:n], row_id=self._row_id[:n], row_fine=self._row_fine[:n],
                      offsets=self._offsets)
        if dag is not None:
            arrays.update(coarse=dag.coarse, fine=dag.fine)
        with open(tmp / "arrays.npz", "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp / "episodes.jsonl", "wb") as f:
            for ep in self._episodes.values():
                f.write(json.dumps(dataclasses.asdict(ep), ensure_ascii=False).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        meta = dict(seq=self._seq, ncons=self._ncons, next_id=self._next_id,
                    tagger=dict(max_tags=self.tagger.max_tags, df=dict(self.tagger.df),
                                docs=self.tagger.docs)
                    if isinstance(self.tagger, KeyphraseTagger) else None,
                    dag=None if dag is None else dict(
                        fine_parents=dag.fine_parents, coarse_children=dag.coarse_children,
                        fine_keyphrases=dag.fine_keyphrases, sizes=dag.sizes, names=dag.names))
        with open(tmp / "meta.json", "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        final = self.path / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        with open(self.path / "CURRENT.tmp", "w") as f:
            f.write(name)
            f.flush()
            os.fsync(f.fileno())
        os.replace(self.path / "CURRENT.tmp", self.path / "CURRENT")
        _fsync_dir(self.path)
        # The snapshot holds everything logged so far: start a fresh log, drop the old ones.
        old_logs = list(self.path.glob("wal-*.log"))
        if self._wal is not None:
            self._wal.close()
            self._open_log(None)
        for old in old_logs:
            if self._wal is None or old.name != pathlib.Path(self._wal.name).name:
                old.unlink()
        for old in self.path.glob("snap-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def _load_snapshot(self, folder: pathlib.Path) -> None:
        try:
            meta = json.loads((folder / "meta.json").read_text())
            arrays = np.load(folder / "arrays.npz")
            episodes = [json.loads(line) for line in
                        (folder / "episodes.jsonl").read_text().splitlines()]
        except (OSError, ValueError) as e:
            raise CorruptStoreError(f"unreadable snapshot {folder}: {e}") from e
        n = len(arrays["row_id"])
        self._dim = arrays["emb"].shape[1]
        cap = max(1024, 2 * n)
        self._emb = np.zeros((cap, self._dim), np.float32)
        self._emb[:n] = arrays["emb"]
        self._row_id = np.full(cap, -1, np.int64)
        self._row_id[:n] = arrays["row_id"]
        self._row_fine = np.zeros(cap, np.int32)
        self._row_fine[:n] = arrays["row_fine"]
        self._offsets = arrays["offsets"]
        self._n, self._ncons = n, meta["ncons"]
        self._seq, self._next_id = meta["seq"], meta["next_id"]
        self._id_row = np.full(max(1024, 2 * self._next_id), -1, np.int64)
        live = self._row_id[:n] >= 0
        self._id_row[self._row_id[:n][live]] = np.nonzero(live)[0]
        for e in episodes:
            ep = Episode(**{**e, "tags": tuple(e["tags"])})
            self._episodes[ep.id] = ep
            self._index(ep)
        if meta["tagger"] is not None and isinstance(self.tagger, KeyphraseTagger):
            self.tagger.max_tags = meta["tagger"]["max_tags"]
            self.tagger.df.update(meta["tagger"]["df"])
            self.tagger.docs = meta["tagger"]["docs"]
        if meta["dag"] is not None:
            d = meta["dag"]
            self._dag = TagDAG(arrays["coarse"], arrays["fine"], d["fine_parents"],
                               d["coarse_children"], d["fine_keyphrases"], d["sizes"], d["names"])

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
          A `SearchResult`.
        """
        _check_text(query, "query")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"expected k to be an int >= 1, got {k!r}")
        if mode not in MODES:
            raise ValueError(f"expected mode in {MODES}, got {mode!r}")
        nprobe = self.nprobe if nprobe is None else nprobe
        beam = self.beam if beam is None else beam
        min_candidates = self.min_candidates if min_candidates is None else min_candidates
        span = self._time_range(query, time_range, reference)
        q = (self._embeddings([query], None)[0] if query_embedding is None
             else np.asarray(query_embedding, np.float32).reshape(-1))
        with self._lock:
            emb, row_id, n = self._emb, self._row_id, self._n
            restrict, notes = self._restriction(span, speaker, session)
            fallback, used_tags = None, ()
            if mode == "flat" or n == 0:  # every row as one slice: no gathered copy
                rows = np.zeros(0, np.int64) if restrict is None else restrict
                slices = [(0, n)] if restrict is None else []
                path = "+".join(notes + ["flat"])
            else:
                rows, slices, route, fallback, used_tags = self._route(
                    query, q, k, tags, restrict, nprobe, beam, min_candidates)
                path = "+".join(notes + [route])
        scores, cand = _score(q, emb, row_id, rows, slices)
        best = np.argpartition(-scores, k)[:k] if len(scores) > k else np.arange(len(scores))
        best = best[np.argsort(-scores[best], kind="stable")]
        hits = []
        for b in best:
            ep = self._episodes.get(int(row_id[cand[b]]))
            if np.isfinite(scores[b]) and ep is not None:
                hits.append(Hit(ep, float(scores[b])))
        return SearchResult(hits, path, int(np.isfinite(scores).sum()), fallback, span,
                            used_tags)

    def _time_range(self, query, time_range, reference):
        """The (start, end) a search is restricted to, or None."""
        if time_range is None:
            return None
        hint = time_range
        if isinstance(time_range, str):
            if time_range != "auto":
                raise ValueError(f"expected time_range to be None, 'auto', a TimeHint or a "
                                 f"(start, end) pair, got {time_range!r}")
            if reference is None:
                reference = max((e.timestamp for e in self._episodes.values()), default=0.0)
            hint = parse_time_hint(query, reference)
            if hint is None:
                return None
        if isinstance(hint, TimeHint):
            if hint.anchor is None:
                return hint.start, hint.end
            found = self.search(hint.anchor, 1, mode="flat")
            if not found.hits:
                return None
            t = found.hits[0].episode.timestamp
            return (None, t) if hint.relation == "before" else (t, None)
        if not isinstance(time_range, tuple | list) or len(time_range) != 2:
            raise ValueError(f"expected time_range to be None, 'auto', a TimeHint or a "
                             f"(start, end) pair, got {time_range!r}")
        start, end = (None if t is None else parse_timestamp(t, name=f"time_range[{i}]")
                      for i, t in enumerate(time_range))
        if start is not None and end is not None and start > end:
            raise ValueError(f"expected time_range start <= end, got start={time_range[0]!r} "
                             f"end={time_range[1]!r}")
        return start, end

    def _restriction(self, span, speaker, session):
        """Rows allowed by a time range and speaker / session (None = all), and path notes."""
        keys = [("speaker", speaker)] if speaker is not None else []
        keys += [("session", session)] if session is not None else []
        if span is None and not keys:
            return None, []
        start, end = span if span is not None else (None, None)
        ids = None
        for key in keys or ["*"]:
            found = self._temporal.range(start, end, key)
            ids = found if ids is None else np.intersect1d(ids, found)
        rows = self._id_row[ids]
        notes = [f"temporal({len(rows)})"]
        return rows[rows >= 0], notes

    def _route(self, query, q, k, tags, restrict, nprobe, beam, min_candidates):
        """Candidate rows and consolidated slices for a swift search."""
        fallback, used = None, ()
        if tags is not None:
            tags = [tags] if isinstance(tags, str) else list(tags)
            known = [t for t in tags if self._tag_known(t)]
            if known:
                rows = self._tag_rows(known)
                if restrict is not None:
                    rows = np.intersect1d(rows, restrict)
                return rows, [], f"tags({','.join(known)})", None, tuple(known)
            fallback = f"no episode carries the tags {tags}; searched without them"
        if self._dag is None:
            rows = restrict if restrict is not None else np.zeros(0, np.int64)
            if restrict is not None:
                return rows, [], "temporal-only", fallback, used
            return rows, [(0, self._n)], "exhaustive(no clusters yet)", fallback, used
        if restrict is not None and len(restrict) <= max(min_candidates, k):
            return restrict, [], "temporal-only", fallback, used
        fines = self._dag.route(q, beam, nprobe)
        sizes = self._offsets[fines + 1] - self._offsets[fines]
        if sizes.sum() < min_candidates:  # widen to the next closest fine topics
            order = np.argsort(-(self._dag.fine @ q))
            extra = order[~np.isin(order, fines)]
            cum = sizes.sum() + np.cumsum(self._offsets[extra + 1] - self._offsets[extra])
            fines = np.concatenate([fines, extra[:int(np.searchsorted(cum, min_candidates)) + 1]])
        # Keyphrase tags and speakers (entity tags) the query names add their episodes.
        named = sorted(t for t in set(candidates(query)) & self._kw.keys()
                       if len(self._kw[t]) <= self.max_tag_episodes)
        people = self._named_speakers(query)
        extra = [self._tag_rows(named) if named else np.zeros(0, np.int64)]
        for ids in people.values():
            rows = self._id_row[ids]
            extra.append(rows[rows >= 0])
        extra = np.unique(np.concatenate(extra))
        extra = extra[(extra >= self._ncons) | ~np.isin(self._row_fine[extra], fines)]
        used = (tuple(f"fine:{f}" for f in fines) + tuple(named)
                + tuple(f"speaker:{p}" for p in people))
        route = (f"dag(coarse={beam},fine={len(fines)},keyphrases={len(named)},"
                 f"speakers={len(people)})")
        if restrict is None:
            tail = np.arange(self._ncons, self._n)
            tail = tail[np.isin(self._row_fine[tail], fines)]
            slices = [(int(self._offsets[f]), int(self._offsets[f + 1])) for f in fines]
            return np.union1d(tail, extra), slices, route, fallback, used
        rows = np.union1d(restrict[np.isin(self._row_fine[restrict], fines)],
                          np.intersect1d(extra, restrict))
        if len(rows) < k:
            return restrict, [], route, (f"fewer than k={k} episodes of the time range in the "
                                         "routed topics; searched the whole range"), used
        return rows, [], route, fallback, used

    def _named_speakers(self, query: str) -> dict[str, np.ndarray]:
        """Episode ids of each speaker the query names (a word of the name, 3+ letters,
        case-insensitive) whose timeline holds at most `max_entity_episodes` episodes."""
        found = set()
        for w in words(query):
            found |= self._speaker_words.get(w, set())
        timelines = {p: self._temporal.range(None, None, ("speaker", p)) for p in sorted(found)}
        return {p: ids for p, ids in timelines.items() if len(ids) <= self.max_entity_episodes}

    def _tag_known(self, tag: str) -> bool:
        if tag.startswith(("fine:", "coarse:")):
            return self._dag is not None and tag in self._dag.sizes
        return tag in self._kw

    def _tag_rows(self, tags: list[str]) -> np.ndarray:
        """Rows of the episodes under DAG nodes (expanded down the DAG)."""
        fines, ids = set(), set()
        for t in tags:
            if t.startswith("coarse:"):
                fines.update(self._dag.coarse_children[int(t.split(":")[1])])
            elif t.startswith("fine:"):
                fines.add(int(t.split(":")[1]))
            else:
                ids.update(self._kw[t])
        rows = [self._id_row[np.fromiter(ids, np.int64, len(ids))]]
        if fines:
            live = np.arange(self._n)
            rows.append(live[np.isin(self._row_fine[:self._n], list(fines))])
        rows = np.unique(np.concatenate(rows))
        return rows[(rows >= 0) & (self._row_id[rows] >= 0)]


def _score(q, emb, row_id, rows, slices) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores of candidate rows (a list of row arrays and contiguous slices);
    dead rows score -inf. Returns (scores, rows scored)."""
    cand = [np.arange(a, b) for a, b in slices] + [np.asarray(rows, np.int64)]
    scores = [emb[a:b] @ q for a, b in slices] + [emb[np.asarray(rows, np.int64)] @ q]
    cand, scores = np.concatenate(cand), np.concatenate(scores)
    return np.where(row_id[cand] >= 0, scores, -np.inf), cand

"""The memory store's in-memory indexes: embedding rows, timelines, tags and the tag DAG.

Rows hold the embeddings: consolidated rows first, one fine topic after another (fine
topic j owns rows offsets[j]:offsets[j+1]), then the rows added since the last
consolidation. A deleted or updated episode's row is marked dead (episode id -1) and never
written again; arrays that grow are replaced by fresh ones, so a reader that captured them
under the store's lock can score them outside it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from jaxtyping import Float, Int

from effjax.memory.tags import TagDAG, assign, build_dag, spherical_kmeans
from effjax.memory.temporal import TemporalIndex

if TYPE_CHECKING:
    from effjax.memory.store import Episode


def timeline_keys(ep: Episode) -> tuple[tuple[str, str], ...]:
    """The timelines an episode is on besides the global one: its speaker's and session's."""
    return (("speaker", ep.speaker),) + ((("session", ep.session),) if ep.session else ())


class Index:
    """The indexes over a store's live episodes (the store holds the episodes themselves).

    Attributes:
      dim: the embedding dimension d (None until the first embedding).
      emb: (capacity, d) float32 embeddings; rows [0, n) are in use.
      row_id: (capacity,) int64 episode id of each row, -1 for a dead or unused row.
      row_fine: (capacity,) int32 fine topic of each row (its nearest topic once a DAG
        exists, 0 before).
      id_row: (ids,) int64 row of each episode id, -1 for none.
      n: rows in use.
      ncons: consolidated rows (the first ncons).
      offsets: (fine topics + 1,) int64 row range of each fine topic.
      dag: the tag DAG of the last consolidation, or None.
      keyphrases: keyphrase tag -> ids of the episodes carrying it.
      temporal: timelines of episode ids (global, per speaker, per session).
    """

    def __init__(self):
        self.dim: int | None = None
        self.emb: Float[np.ndarray, "cap d"] = np.zeros((0, 0), np.float32)
        self.row_id: Int[np.ndarray, " cap"] = np.zeros(0, np.int64)
        self.row_fine: Int[np.ndarray, " cap"] = np.zeros(0, np.int32)
        self.id_row: Int[np.ndarray, " ids"] = np.zeros(0, np.int64)
        self.n = 0
        self.ncons = 0
        self.offsets: Int[np.ndarray, " k1"] = np.zeros(1, np.int64)
        self.dag: TagDAG | None = None
        self.keyphrases: dict[str, set[int]] = {}
        self.temporal = TemporalIndex()

    # ------------------------------------------------------------------- maintenance
    def add(self, ep: Episode) -> None:
        """Puts an episode on its timelines and its keyphrase tags."""
        self.temporal.add(ep.timestamp, ep.id, timeline_keys(ep))
        for t in ep.tags:
            self.keyphrases.setdefault(t, set()).add(ep.id)

    def remove(self, ep: Episode) -> None:
        """Takes an episode off its timelines and tags and marks its row dead."""
        self.temporal.remove(ep.timestamp, ep.id, timeline_keys(ep))
        for t in ep.tags:
            self.keyphrases[t].discard(ep.id)
            if not self.keyphrases[t]:
                del self.keyphrases[t]
        self.row_id[self.id_row[ep.id]] = -1
        self.id_row[ep.id] = -1

    def append_row(self, episode_id: int, emb: Float[np.ndarray, " d"]) -> None:
        """Stores an episode's embedding in a new row, under its nearest fine topic.

        Raises:
          ValueError: the embedding's shape is not (d,).
        """
        if self.dim is None:
            self.dim = emb.shape[0]
            self.emb = np.zeros((0, self.dim), np.float32)
        if emb.shape != (self.dim,):
            raise ValueError(f"expected an embedding of shape ({self.dim},), got {emb.shape}")
        if self.n == len(self.emb):  # grow into fresh arrays: readers keep the old ones
            cap = max(1024, 2 * len(self.emb))
            emb_buf = np.zeros((cap, self.dim), np.float32)
            emb_buf[:self.n] = self.emb[:self.n]
            self.emb = emb_buf
            self.row_id = np.concatenate([self.row_id, np.full(cap - self.n, -1, np.int64)])
            self.row_fine = np.concatenate([self.row_fine, np.zeros(cap - self.n, np.int32)])
        if episode_id >= len(self.id_row):
            grow = max(1024, 2 * len(self.id_row), episode_id + 1) - len(self.id_row)
            self.id_row = np.concatenate([self.id_row, np.full(grow, -1, np.int64)])
        row = self.n
        self.emb[row] = emb
        self.row_id[row] = episode_id
        self.row_fine[row] = 0 if self.dag is None else int(np.argmax(self.dag.fine @ emb))
        self.id_row[episode_id] = row
        self.n = row + 1

    def consolidate(self, episodes: Mapping[int, Episode], cluster_size: int, *,
                    seed: int = 0) -> bool:
        """Re-clusters the live rows, rebuilds the tag DAG and lays the rows out one fine
        topic after another (co-consolidation).

        Args:
          episodes: the live episodes by id (for their tags).
          cluster_size: target episodes per fine topic.
          seed: the clustering's seed.

        Returns:
          False when there is nothing to cluster (no live row), True otherwise.
        """
        rows = np.nonzero(self.row_id[:self.n] >= 0)[0]
        if len(rows) == 0:
            return False
        emb = self.emb[rows]
        k2 = max(1, min(len(rows), round(len(rows) / cluster_size)))
        fine = spherical_kmeans(emb, k2, seed=seed)
        fine_of = assign(emb, fine)
        ids = self.row_id[rows]
        tags = [list(episodes[int(i)].tags) for i in ids]
        counts = {t: len(s) for t, s in self.keyphrases.items()}
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
        id_row = np.full(len(self.id_row), -1, np.int64)
        id_row[ids[order]] = np.arange(n)
        self.emb, self.row_id, self.row_fine, self.id_row = new_emb, new_row_id, new_fine, id_row
        self.offsets = np.searchsorted(fine_of[order], np.arange(k2 + 1)).astype(np.int64)
        self.n = self.ncons = n
        self.dag = dag
        return True

    # --------------------------------------------------------------------- snapshots
    def arrays(self) -> dict[str, np.ndarray]:
        """The rows and the DAG's centroids, as a snapshot's arrays.npz holds them."""
        n, dag = self.n, self.dag
        arrays = dict(emb=self.emb[:n], row_id=self.row_id[:n], row_fine=self.row_fine[:n],
                      offsets=self.offsets)
        if dag is not None:
            arrays.update(coarse=dag.coarse, fine=dag.fine)
        return arrays

    def dag_meta(self) -> dict | None:
        """The DAG's structure as a snapshot's meta.json holds it (None without a DAG)."""
        dag = self.dag
        return None if dag is None else dict(
            fine_parents=dag.fine_parents, coarse_children=dag.coarse_children,
            fine_keyphrases=dag.fine_keyphrases, sizes=dag.sizes, names=dag.names)

    def restore(self, arrays: Mapping[str, np.ndarray], dag_meta: dict | None, *, ncons: int,
                next_id: int) -> None:
        """Loads the rows and the DAG of a snapshot (`arrays`, `dag_meta`) into an empty
        index; the episodes are added with `add` after."""
        n = len(arrays["row_id"])
        cap = max(1024, 2 * n)
        if n:  # a snapshot without rows leaves the dimension to the first episode
            self.dim = arrays["emb"].shape[1]
            self.emb = np.zeros((cap, self.dim), np.float32)
            self.emb[:n] = arrays["emb"]
        self.row_id = np.full(cap, -1, np.int64)
        self.row_id[:n] = arrays["row_id"]
        self.row_fine = np.zeros(cap, np.int32)
        self.row_fine[:n] = arrays["row_fine"]
        self.offsets = arrays["offsets"]
        self.n, self.ncons = n, ncons
        self.id_row = np.full(max(1024, 2 * next_id), -1, np.int64)
        live = self.row_id[:n] >= 0
        self.id_row[self.row_id[:n][live]] = np.nonzero(live)[0]
        if dag_meta is not None:
            d = dag_meta
            self.dag = TagDAG(arrays["coarse"], arrays["fine"], d["fine_parents"],
                              d["coarse_children"], d["fine_keyphrases"], d["sizes"], d["names"])

    # ----------------------------------------------------------------------- lookups
    def live_rows(self, ids: Int[np.ndarray, " m"]) -> Int[np.ndarray, " r"]:
        """The rows of those episode ids that have one."""
        rows = self.id_row[ids]
        return rows[rows >= 0]

    def tag_known(self, tag: str) -> bool:
        """Whether a tag names a DAG node ("fine:j", "coarse:i") or a keyphrase in use."""
        if tag.startswith(("fine:", "coarse:")):
            return self.dag is not None and tag in self.dag.sizes
        return tag in self.keyphrases

    def tag_rows(self, tags: list[str]) -> Int[np.ndarray, " r"]:
        """Live rows of the episodes under DAG nodes (expanded down the DAG) or keyphrases."""
        fines, ids = set(), set()
        for t in tags:
            if t.startswith("coarse:"):
                fines.update(self.dag.coarse_children[int(t.split(":")[1])])
            elif t.startswith("fine:"):
                fines.add(int(t.split(":")[1]))
            else:
                ids.update(self.keyphrases[t])
        rows = [self.id_row[np.fromiter(ids, np.int64, len(ids))]]
        if fines:
            live = np.arange(self.n)
            rows.append(live[np.isin(self.row_fine[:self.n], list(fines))])
        rows = np.unique(np.concatenate(rows))
        return rows[(rows >= 0) & (self.row_id[rows] >= 0)]

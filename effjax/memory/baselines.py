"""Retrieval baselines in SwiftMem's harness: exhaustive NumPy / JAX / FAISS, FAISS IVF and HNSW.

Each index is built over unit-norm embeddings and answers `search(q, k) -> rows` by inner
product (= cosine), best first; `nbytes` is the memory its search structures hold
(embeddings included). The approximate ones expose their search knob as an attribute
(`FaissIVF.nprobe`, `FaissHNSW.ef_search`) so one build serves a sweep. FAISS runs with as
many OpenMP threads as NumPy's BLAS has.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float, Int


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    best = np.argpartition(-scores, k)[:k] if len(scores) > k else np.arange(len(scores))
    return best[np.argsort(-scores[best], kind="stable")]


class FlatNumpy:
    """Exhaustive search: one matrix-vector product and a partial sort."""

    name = "flat-numpy"

    def __init__(self, emb: Float[np.ndarray, "n d"]):
        self.emb = np.ascontiguousarray(emb, np.float32)

    @property
    def nbytes(self) -> int:
        return self.emb.nbytes

    def search(self, q: Float[np.ndarray, " d"], k: int,
               rows: Int[np.ndarray, " r"] | None = None) -> Int[np.ndarray, " k"]:
        """Top k rows by inner product; `rows` restricts the search to those rows (a
        speaker, session or time filter), else every row."""
        if rows is None:
            return _top(self.emb @ q, k)
        rows = np.asarray(rows, np.int64)
        return rows[_top(self.emb[rows] @ q, k)]


@functools.partial(jax.jit, static_argnames="k")
def _flat_top_k(emb, q, k):
    return jax.lax.top_k(emb @ q, k)[1]


class FlatJax:
    """Exhaustive search as one jitted XLA program (matrix-vector product and top-k)."""

    name = "flat-jax"

    def __init__(self, emb: Float[np.ndarray, "n d"]):
        self.emb = jnp.asarray(emb, jnp.float32)

    @property
    def nbytes(self) -> int:
        return self.emb.nbytes

    def search(self, q: Float[np.ndarray, " d"], k: int) -> Int[np.ndarray, " k"]:
        return np.asarray(_flat_top_k(self.emb, jnp.asarray(q, jnp.float32),
                                      min(k, self.emb.shape[0])))


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a project dependency
        raise ImportError("the FAISS baselines need `pip install faiss-cpu`") from e
    from threadpoolctl import threadpool_info

    blas = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    faiss.omp_set_num_threads(max(blas, default=1))
    return faiss


def _faiss_search(index, q, k) -> np.ndarray:
    rows = index.search(np.asarray(q, np.float32)[None], k)[1][0]
    return rows[rows >= 0]


class FaissFlat:
    """FAISS exhaustive inner-product index (IndexFlatIP)."""

    name = "faiss-flat"

    def __init__(self, emb: Float[np.ndarray, "n d"]):
        faiss = _faiss()
        self.index = faiss.IndexFlatIP(emb.shape[1])
        self.index.add(np.ascontiguousarray(emb, np.float32))

    @property
    def nbytes(self) -> int:
        return self.index.ntotal * self.index.d * 4

    def search(self, q: Float[np.ndarray, " d"], k: int) -> Int[np.ndarray, " k"]:
        return _faiss_search(self.index, q, k)


class FaissIVF:
    """FAISS inverted-file index (IndexIVFFlat, inner product): k-means lists, exact scores
    within the `nprobe` lists nearest the query.

    Args:
      emb: unit-norm rows (also the k-means training set; FAISS samples 256 per list).
      nlist: number of lists.
      nprobe: lists searched per query (settable after building).
      seed: k-means seed.
    """

    name = "faiss-ivf"

    def __init__(self, emb: Float[np.ndarray, "n d"], nlist: int = 1024, nprobe: int = 16,
                 seed: int = 0):
        faiss = _faiss()
        x = np.ascontiguousarray(emb, np.float32)
        self.quantizer = faiss.IndexFlatIP(x.shape[1])
        self.index = faiss.IndexIVFFlat(self.quantizer, x.shape[1], nlist,
                                        faiss.METRIC_INNER_PRODUCT)
        self.index.cp.seed = seed
        self.index.train(x)
        self.index.add(x)
        self.nprobe = nprobe

    @property
    def nprobe(self) -> int:
        return self.index.nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self.index.nprobe = int(value)

    @property
    def nbytes(self) -> int:  # vectors and ids in the lists, and the centroids
        return self.index.ntotal * (self.index.d * 4 + 8) + self.index.nlist * self.index.d * 4

    def search(self, q: Float[np.ndarray, " d"], k: int) -> Int[np.ndarray, " k"]:
        return _faiss_search(self.index, q, k)


class FaissHNSW:
    """FAISS HNSW graph index over inner product.

    Args:
      emb: unit-norm rows.
      m: graph degree.
      ef_construction: beam width when building.
      ef_search: beam width when searching (settable after building).
    """

    name = "faiss-hnsw"

    def __init__(self, emb: Float[np.ndarray, "n d"], m: int = 32, ef_construction: int = 64,
                 ef_search: int = 64):
        faiss = _faiss()
        self.index = faiss.IndexHNSWFlat(emb.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction
        self.index.add(np.ascontiguousarray(emb, np.float32))
        self.ef_search = ef_search

    @property
    def ef_search(self) -> int:
        return self.index.hnsw.efSearch

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        self.index.hnsw.efSearch = int(value)

    @property
    def nbytes(self) -> int:  # vectors, neighbour lists (int32) and their offsets (int64)
        h = self.index.hnsw
        return (self.index.ntotal * self.index.d * 4 + h.neighbors.size() * 4
                + h.offsets.size() * 8 + h.levels.size() * 4)

    def search(self, q: Float[np.ndarray, " d"], k: int) -> Int[np.ndarray, " k"]:
        return _faiss_search(self.index, q, k)


BASELINES = {cls.name: cls for cls in (FlatNumpy, FlatJax, FaissFlat, FaissIVF, FaissHNSW)}

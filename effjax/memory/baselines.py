"""Retrieval baselines in SwiftMem's harness: exhaustive numpy / JAX, FAISS flat and HNSW.

Each index is built over unit-norm embeddings and answers `search(q, k) -> rows` by inner
product (= cosine), best first.
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

    def search(self, q: Float[np.ndarray, " d"], k: int) -> Int[np.ndarray, " k"]:
        return _top(self.emb @ q, k)


@functools.partial(jax.jit, static_argnames="k")
def _flat_top_k(emb, q, k):
    return jax.lax.top_k(emb @ q, k)[1]


class FlatJax:
    """Exhaustive search as one jitted XLA program (matrix-vector product and top-k)."""

    name = "flat-jax"

    def __init__(self, emb: Float[np.ndarray, "n d"]):
        self.emb = jnp.asarray(emb, jnp.float32)

    def search(self, q: Float[np.ndarray, " d"], k: int) -> Int[np.ndarray, " k"]:
        return np.asarray(_flat_top_k(self.emb, jnp.asarray(q, jnp.float32),
                                      min(k, self.emb.shape[0])))


def _faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - faiss-cpu is a project dependency
        raise ImportError("the FAISS baselines need `pip install faiss-cpu`") from e
    return faiss


class FaissFlat:
    """FAISS exhaustive inner-product index (IndexFlatIP)."""

    name = "faiss-flat"

    def __init__(self, emb: Float[np.ndarray, "n d"]):
        faiss = _faiss()
        self.index = faiss.IndexFlatIP(emb.shape[1])
        self.index.add(np.ascontiguousarray(emb, np.float32))

    def search(self, q: Float[np.ndarray, " d"], k: int) -> Int[np.ndarray, " k"]:
        rows = self.index.search(np.asarray(q, np.float32)[None], k)[1][0]
        return rows[rows >= 0]


class FaissHNSW:
    """FAISS HNSW graph index over inner product.

    Args:
      emb: unit-norm rows.
      m: graph degree.
      ef_construction, ef_search: beam widths when building and searching.
    """

    name = "faiss-hnsw"

    def __init__(self, emb: Float[np.ndarray, "n d"], m: int = 32, ef_construction: int = 64,
                 ef_search: int = 64):
        faiss = _faiss()
        self.index = faiss.IndexHNSWFlat(emb.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction
        self.index.hnsw.efSearch = ef_search
        self.index.add(np.ascontiguousarray(emb, np.float32))

    def search(self, q: Float[np.ndarray, " d"], k: int) -> Int[np.ndarray, " k"]:
        rows = self.index.search(np.asarray(q, np.float32)[None], k)[1][0]
        return rows[rows >= 0]


BASELINES = {cls.name: cls for cls in (FlatNumpy, FlatJax, FaissFlat, FaissHNSW)}

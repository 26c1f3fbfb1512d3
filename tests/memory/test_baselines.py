"""Every baseline index returns brute-force top-k (HNSW: nearly)."""

import numpy as np
import pytest

from effjax.memory import BASELINES, FaissHNSW


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = rng.standard_normal((20, 32)).astype(np.float32)
    return x, q / np.linalg.norm(q, axis=1, keepdims=True)


@pytest.mark.parametrize("name", ["flat-numpy", "flat-jax", "faiss-flat"])
def test_exact_baselines(data, name):
    x, qs = data
    index = BASELINES[name](x)
    for q in qs:
        want = np.argsort(-(x.astype(np.float64) @ q), kind="stable")[:10]
        assert list(index.search(q, 10)) == list(want)


def test_hnsw_recall(data):
    x, qs = data
    index = FaissHNSW(x, m=16, ef_search=128)
    recall = np.mean([len(set(index.search(q, 10)) & set(np.argsort(-(x @ q))[:10])) / 10
                      for q in qs])
    assert recall >= 0.9

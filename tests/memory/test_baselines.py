"""Every baseline index returns brute-force top-k (HNSW: nearly)."""

import numpy as np
import pytest

from effjax.memory import BASELINES, FaissFlat, FaissHNSW, FaissIVF, FlatJax, FlatNumpy


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


def test_ivf_probing_every_list_is_exact(data):
    x, qs = data
    index = FaissIVF(x, nlist=16, nprobe=1)
    some = np.mean([len(set(index.search(q, 10)) & set(np.argsort(-(x @ q))[:10])) / 10
                    for q in qs])
    index.nprobe = 16  # every list: the exact top 10
    assert index.nprobe == 16
    for q in qs:
        assert list(index.search(q, 10)) == list(np.argsort(-(x.astype(np.float64) @ q),
                                                            kind="stable")[:10])
    assert some < 1.0  # one list of 16 misses some (random 32-d data)
    assert index.nbytes == 3000 * (32 * 4 + 8) + 16 * 32 * 4


def test_filtered_flat_and_sizes(data):
    x, qs = data
    rows = np.arange(0, 3000, 3)
    found = FlatNumpy(x).search(qs[0], 5, rows=rows)
    assert list(found) == list(rows[np.argsort(-(x[rows] @ qs[0]), kind="stable")[:5]])
    assert FlatNumpy(x).nbytes == FlatJax(x).nbytes == FaissFlat(x).nbytes == x.nbytes
    hnsw = FaissHNSW(x, m=16)
    hnsw.ef_search = 200
    assert hnsw.ef_search == 200 and hnsw.nbytes > x.nbytes + 3000 * 16 * 2 * 4

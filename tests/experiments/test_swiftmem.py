"""The SwiftMem experiment: its helpers and report (fast), its real loop on the tiny config
(slow)."""

import math

import numpy as np
import pytest

from configs.swiftmem import get_config
from experiments.swiftmem import (
    _report,
    evidence_recall,
    exact_top,
    growth_exponent,
    percentiles,
    run,
    synthetic_embeddings,
)


def test_evidence_recall_and_percentiles():
    assert evidence_recall(["a", "b", "c"], ("b", "z"), 2) == 0.5
    assert evidence_recall(["a", "b", "c"], ("c",), 2) == 0.0
    assert evidence_recall(["a"], (), 5) == 0.0
    p50, p95 = percentiles([1e-6 * x for x in range(1, 101)])
    assert p50 == pytest.approx(50.5) and p95 == pytest.approx(95.05)


def test_exact_top():
    rng = np.random.default_rng(0)
    emb, q = rng.standard_normal((500, 8)), rng.standard_normal((70, 8))
    want = np.argsort(-(emb @ q.T), axis=0, kind="stable")[:5].T
    np.testing.assert_array_equal(exact_top(emb, q, 5, chunk=16), want)


def test_growth_exponent():
    ns = [1e4, 1e5, 1e6]
    assert growth_exponent(ns, [2 * n for n in ns]) == pytest.approx(1.0)
    assert growth_exponent(ns, [math.sqrt(n) for n in ns]) == pytest.approx(0.5)


def _method(r10, p50):
    cell = {f"r@{k}": r10 for k in (5, 10, 25)}
    cell.update({f"r@{k}/c{c}": r10 for k in (5, 10, 25) for c in (1, 2, 3, 4)})
    return dict(cell, p50_us=p50, p95_us=2 * p50, build_s=1.0, candidates=10.0)


def test_report_states_the_claims():
    config = get_config()
    rows = {"flat (store, exhaustive)": _method(0.30, 100.0)}
    rows.update({label: _method(0.29, 200.0) for label, _ in config.locomo_settings})
    cells = {"locomo": dict(rows=rows, questions=10, conversations=1, episodes=400,
                            ingest_s=1.0, encode_p50_us=900.0)}
    for n, flat_us in ((10_000, 1_000.0), (1_000_000, 100_000.0)):
        methods = {name: dict(_method(0.20, flat_us), agree10=1.0)
                   for name in ("flat-numpy", "flat-jax", "faiss-flat", "faiss-hnsw")}
        methods["SwiftMem nprobe=16"] = dict(_method(0.195, 300.0 * (n / 10_000) ** 0.2),
                                             agree10=0.9)
        methods["SwiftMem nprobe=64"] = dict(_method(0.17, 900.0), agree10=0.95)
        cells[f"scale/{n}"] = dict(methods=methods, layout=dict(contiguous_us=10.0,
                                                                scattered_us=25.0))
    text = _report(config, cells)
    assert "within 3 points **holds**" in text
    assert "N=1,000,000, SwiftMem nprobe=16: p50 132.7x lower" in text and "**holds**" in text
    assert "SwiftMem nprobe=64: p50 111.1x lower than flat at R@10 3.0 points below it: " \
           "**fails**" in text
    assert "exponent 0.20" in text and "2.50x" in text


def test_synthetic_embeddings_resume(tmp_path):
    class Counting:
        def __init__(self):
            self.dim, self.calls = 4, 0

        def encode(self, texts):
            self.calls += 1
            return np.full((len(texts), 4), float(len(texts)), np.float32)

    enc = Counting()
    a = synthetic_embeddings(25, seed=0, chunk=10, cache=tmp_path, encoder=enc)
    assert a.shape == (25, 4) and enc.calls == 3 and a[-1, 0] == 5.0
    (tmp_path / "synthetic-s0-00000010-00000020.npy").unlink()
    b = synthetic_embeddings(25, seed=0, chunk=10, cache=tmp_path, encoder=enc)
    assert enc.calls == 4 and np.array_equal(a, b)


@pytest.mark.slow
def test_tiny_run():
    report = run(get_config("tiny"))
    assert "## LoCoMo" in report and "N=4,000" in report and "faiss-hnsw" in report

"""The SwiftMem experiment: its helpers and report (fast), its real loop on the tiny config
(slow)."""

import numpy as np
import pytest

from configs.swiftmem import get_config
from effjax.memory import Turn, corpus_episodes
from experiments.swiftmem import (
    FLAT,
    PLANNER,
    ROUTED,
    _report,
    agree_at_10,
    best_points,
    distractor_embeddings,
    evidence_recall,
    exact_top,
    median_difference,
    paired_latency,
    percentiles,
    reader_prompt,
    run,
)


def test_evidence_recall_and_percentiles():
    assert evidence_recall(["a", "b", "c"], ("b", "z"), 2) == 0.5
    assert evidence_recall(["a", "b", "c"], ("c",), 2) == 0.0
    assert evidence_recall(["a"], (), 5) == 0.0
    p50, p95 = percentiles([1e-6 * x for x in range(1, 101)])
    assert p50 == pytest.approx(50.5) and p95 == pytest.approx(95.05)


def test_exact_top_and_agreement():
    rng = np.random.default_rng(0)
    emb, q = rng.standard_normal((500, 8)), rng.standard_normal((70, 8))
    want = np.argsort(-(emb @ q.T), axis=0, kind="stable")[:5].T
    np.testing.assert_array_equal(exact_top(emb, q, 5, chunk=16), want)
    exact = [list(range(10)), list(range(10))]
    assert agree_at_10([list(range(10)), list(range(5)) + [90, 91, 92, 93, 94]], exact) == 0.75


def test_best_points():
    pts = [dict(method="a", knob="1", agree10=0.90, p50_us=10.0),
           dict(method="a", knob="2", agree10=0.96, p50_us=30.0),
           dict(method="a", knob="3", agree10=0.99, p50_us=50.0),
           dict(method="b", knob="1", agree10=0.80, p50_us=5.0),
           dict(method="b", knob="2", agree10=0.93, p50_us=9.0)]
    best = best_points(pts, 0.95)
    assert best["a"]["knob"] == "2" and best["a"]["reached"]
    assert best["b"]["knob"] == "2" and not best["b"]["reached"]


def test_paired_latency_and_median_difference():
    calls = []
    a, b = paired_latency(lambda i: calls.append(("a", i)), lambda i: calls.append(("b", i)),
                          [3, 4, 5])
    assert len(a) == len(b) == 3
    assert calls == [("a", 3), ("b", 3), ("a", 3), ("b", 3), ("b", 4), ("a", 4),
                     ("a", 5), ("b", 5)]  # warm-ups, then alternating order
    d, lo, hi = median_difference([2.0] * 50 + [3.0] * 51, [1.0] * 101)
    assert d == 2.0 and lo <= 2.0 <= hi and lo >= 1.0
    d, lo, hi = median_difference([1.0] * 100, [1.0] * 100)
    assert d == lo == hi == 0.0


def test_reader_prompt_orders_turns_by_time():
    turns = [Turn("D1:2", "Bo", "second", "s", 1683504060.0),
             Turn("D1:1", "Al", "first", "s", 1683504000.0)]
    p = reader_prompt(turns, "Who spoke first?")
    assert "(8 May 2023) Al: first\n(8 May 2023) Bo: second" in p
    assert p.endswith("Question: Who spoke first?\nAnswer:")


def _recall(r):
    cell = {f"r@{k}": r for k in (5, 10, 25)}
    cell.update({f"r@{k}/c{c}": r for k in (5, 10, 25) for c in (1, 2, 3, 4)})
    return cell


def test_report_states_the_claims():
    config = get_config()
    names = [n for n, _ in config.templates]
    rows = {}
    for name, r in zip(names, (0.30, 0.45, 0.55), strict=True):
        rows[f"{name} / {FLAT}"] = dict(_recall(r), p50_us=100.0, p95_us=150.0,
                                        candidates=500.0, paths=["flat"],
                                        r10_per_question=[r] * 10)
        rows[f"{name} / {ROUTED}"] = dict(_recall(r - 0.02), p50_us=300.0, p95_us=400.0,
                                          candidates=150.0, paths=["dag"],
                                          r10_per_question=[r - 0.02] * 10)
    rows[f"{names[-1]} / {PLANNER}"] = dict(_recall(0.55), p50_us=101.0, p95_us=150.0,
                                            candidates=500.0, paths=["exhaustive"])
    rng = np.random.default_rng(0)
    flat = list(100 + rng.normal(0, 5, 400))
    cells = {"locomo": dict(rows=rows, questions=10, conversations=1, episodes=400,
                            ingest_s={n: 1.0 for n in names}, fine_topics=12.5,
                            paired=dict(planner_us=list(rng.permutation(flat)), flat_us=flat)),
             "reader": dict(questions=list(range(40)), f1={
                 f"{names[0]} / {FLAT}": [0.1] * 20 + [0.0] * 20,
                 f"{names[-1]} / {FLAT}": [0.3] * 20 + [0.2] * 20,
                 f"{names[-1]} / {ROUTED}": [0.3] * 20 + [0.2] * 19 + [0.0]})}
    pts = [dict(_recall(0.2), method="SwiftMem", knob="nprobe=16, beam=8", agree10=0.96,
                p50_us=1500.0, p95_us=2000.0, build_s=50.0, bytes=2**30),
           dict(_recall(0.2), method="SwiftMem exhaustive path", knob="", agree10=1.0,
                p50_us=95000.0, p95_us=99000.0, build_s=0.0, bytes=2**30),
           dict(_recall(0.2), method="faiss-ivf", knob="nprobe=32", agree10=0.97,
                p50_us=900.0, p95_us=1000.0, build_s=20.0, bytes=2**30),
           dict(_recall(0.2), method="flat-numpy", knob="", agree10=1.0, p50_us=90000.0,
                p95_us=95000.0, build_s=0.0, bytes=2**30)]
    cells["scale/1000000"] = dict(points=pts, fine_topics=1953,
                                  layout=dict(contiguous_us=10.0, scattered_us=25.0))
    text = _report(config, cells)
    assert "flat R@10 30.0 (bare text) -> 55.0 (speaker + date), +25.0 points, 95% " \
           "interval [+25.0, +25.0]" in text
    assert "Forced routing vs exhaustive with speaker + date: -2.0 points [-2.0, -2.0]" in text
    assert "not measurably slower) **holds**" in text
    assert "| speaker + date / flat (exhaustive) - bare text / flat (exhaustive) | +20.0 |" in text
    assert "nprobe=16, beam=8, agree@10 96.0, p50 1.50 ms, build 50.0 s" in text
    assert "build <= 60 s: **holds**" in text and "faiss-ivf nprobe=32 0.90 ms" in text
    assert "60.0x" in text and "2.50x" in text
    assert "N=1,000,000: routed 1500 us (nprobe=16, beam=8) vs exhaustive 95000 us" in text
    cells["locomo"]["paired"]["planner_us"] = [x + 1.0 for x in flat]  # slower every time
    assert "not measurably slower) **fails**" in _report(config, cells)


def test_distractor_embeddings_resume(tmp_path):
    class Counting:
        def __init__(self):
            self.dim, self.calls, self.seen = 4, 0, []

        def encode(self, texts):
            self.calls += 1
            self.seen += texts
            return np.full((len(texts), 4), float(len(texts)), np.float32)

    enc = Counting()
    eps = corpus_episodes(40, seed=0)
    a = distractor_embeddings(eps, 25, seed=0, chunk=10, cache=tmp_path, encoder=enc,
                              template="{speaker}: {text}")
    assert a.shape == (25, 4) and enc.calls == 3 and a[-1, 0] == 10.0  # whole chunks
    assert enc.seen[0] == f"{eps.speakers[0]}: {eps.texts[0]}"
    (chunk,) = tmp_path.glob("corpus-n40-s0-t*-00000010-00000020.npy")
    chunk.unlink()
    b = distractor_embeddings(eps, 25, seed=0, chunk=10, cache=tmp_path, encoder=enc,
                              template="{speaker}: {text}")
    assert enc.calls == 4 and np.array_equal(a, b)
    distractor_embeddings(eps, 30, seed=0, chunk=10, cache=tmp_path, encoder=enc,
                          template="{speaker}: {text}")  # within the cached chunks
    assert enc.calls == 4
    distractor_embeddings(eps, 10, seed=0, chunk=10, cache=tmp_path, encoder=enc,
                          template="{text}")  # another template: its own files
    assert enc.calls == 5


@pytest.mark.slow
def test_tiny_run():
    report = run(get_config("tiny"))
    assert "## LoCoMo" in report and "N = 4,000" in report and "faiss-ivf" in report
    assert "answer F1" in report

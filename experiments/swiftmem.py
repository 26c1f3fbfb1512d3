"""SwiftMem: LoCoMo evidence recall and search latency, and a 10^4..10^6 scale test.

    python -m experiments.swiftmem [--config=configs/swiftmem.py[:tiny]]

LoCoMo: each conversation goes into its own on-disk `MemoryStore` (MiniLM embeddings),
every answerable question (categories 1-4) is searched, and evidence recall@k (the
fraction of the question's evidence turns among the top k) is reported per category with
search latency (query embedding excluded, timed separately) for SwiftMem settings, the
store's exhaustive mode and the baselines over the same embeddings.

Scale: all LoCoMo turns are planted among N - L distinct synthetic episodes
(`effjax.memory.synthetic_episodes`, all really encoded by MiniLM and cached); the same
questions are searched in the whole memory by every method. Results are cached per cell
in JSON (an interrupted run resumes); the report is rewritten from the cache.
"""

from __future__ import annotations

import dataclasses
import gc
import pathlib
import shutil

import numpy as np
from tqdm import tqdm

from effjax.durable import atomic_write
from effjax.memory import BASELINES, Encoder, MemoryStore, load_locomo, synthetic_episodes
from experiments.common import (
    HOLDS,
    load_cells,
    main_with_config,
    markdown_table,
    pyplot,
    save_figure,
    stopwatch,
    verdict,
    write_report,
)

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop"}


def synthetic_embeddings(n: int, *, seed: int, chunk: int, cache: pathlib.Path,
                         encoder: Encoder) -> np.ndarray:
    """Embeddings of `synthetic_episodes(n, seed=seed)`, encoded chunk by chunk into cache
    files (an interrupted run resumes at the first missing chunk)."""
    cache.mkdir(parents=True, exist_ok=True)
    texts = synthetic_episodes(n, seed=seed).texts
    parts = []
    for start in tqdm(range(0, n, chunk), desc="encoding synthetic episodes", unit="chunk"):
        f = cache / f"synthetic-s{seed}-{start:08d}-{min(n, start + chunk):08d}.npy"
        if not f.exists():
            emb = encoder.encode(texts[start:start + chunk])
            atomic_write(f, lambda fh, emb=emb: np.save(fh, emb))
        parts.append(np.load(f))
    return np.concatenate(parts) if parts else np.zeros((0, encoder.dim), np.float32)


def evidence_recall(ranked: list, evidence: tuple, k: int) -> float:
    """Fraction of the evidence found among the first k ranked keys (0 with no evidence)."""
    if not evidence:
        return 0.0
    top = set(ranked[:k])
    return sum(e in top for e in evidence) / len(evidence)


def percentiles(seconds: list[float]) -> tuple[float, float]:
    """(p50, p95) in microseconds."""
    us = np.asarray(seconds) * 1e6
    return float(np.percentile(us, 50)), float(np.percentile(us, 95))


def _questions(conv):
    return [q for q in conv.questions if q.category in CATEGORIES]


def _recall_cell(ranked_per_q, questions, ks) -> dict:
    """Recall@k overall and per category, from each question's ranked evidence keys."""
    out = {}
    for k in ks:
        r = [evidence_recall(ranked, q.evidence, k)
             for ranked, q in zip(ranked_per_q, questions, strict=True)]
        out[f"r@{k}"] = float(np.mean(r))
        for c in CATEGORIES:
            rc = [x for x, q in zip(r, questions, strict=True) if q.category == c]
            out[f"r@{k}/c{c}"] = float(np.mean(rc)) if rc else float("nan")
    return out


def locomo_cells(config, convs, encoder, cells) -> None:
    """LoCoMo recall and latency for every method (one cell per method, all conversations)."""
    labels = [label for label, _ in config.locomo_settings]
    if "locomo" in cells and set(labels) <= set(cells["locomo"]["rows"]):
        return
    cache = pathlib.Path(config.cache_dir)
    k = max(config.ks)
    stores, questions, qembs, encode_s, ingest_s = [], [], [], [], 0.0
    for conv in tqdm(convs, desc="LoCoMo ingest", unit="conversation"):
        path = cache / f"locomo-{conv.sample_id}"
        shutil.rmtree(path, ignore_errors=True)
        elapsed = stopwatch()
        store = MemoryStore.open(path, encoder=encoder, cluster_size=config.locomo_cluster_size,
                                 auto_consolidate=False)
        store.add_batch([t.text for t in conv.turns], speakers=[t.speaker for t in conv.turns],
                        timestamps=[t.timestamp for t in conv.turns],
                        sessions=[t.session for t in conv.turns],
                        metadatas=[{"dia_id": t.dia_id} for t in conv.turns])
        store.consolidate()
        ingest_s += elapsed()
        qs = _questions(conv)
        for q in qs:  # query embedding, timed one by one as an agent would
            elapsed = stopwatch()
            qembs.append(encoder.encode([q.question])[0])
            encode_s.append(elapsed())
        stores.append(store)
        questions.append(qs)
    rows = {}
    settings = [("flat (store, exhaustive)", {"mode": "flat"}), *config.locomo_settings]
    for label, options in settings:
        ranked, lat, cand, i = [], [], [], 0
        for store, qs in zip(stores, questions, strict=True):
            store.search(qs[0].question, k, query_embedding=qembs[i], **options)  # warm-up
            for q in qs:
                elapsed = stopwatch()
                r = store.search(q.question, k, query_embedding=qembs[i], **options)
                lat.append(elapsed())
                ranked.append([h.episode.metadata["dia_id"] for h in r.hits])
                cand.append(r.candidates)
                i += 1
        p50, p95 = percentiles(lat)
        rows[label] = dict(_recall_cell(ranked, sum(questions, []), config.ks), p50_us=p50,
                           p95_us=p95, candidates=float(np.mean(cand)))
    for name, cls in BASELINES.items():
        ranked, lat, i = [], [], 0
        for store, qs in zip(stores, questions, strict=True):
            eps = store.episodes()
            emb = np.stack([store.embedding(e.id) for e in eps])
            index = cls(emb, **_hnsw_options(config) if name == "faiss-hnsw" else {})
            index.search(qembs[i], k)
            for _ in qs:
                elapsed = stopwatch()
                found = index.search(qembs[i], k)
                lat.append(elapsed())
                ranked.append([eps[j].metadata["dia_id"] for j in found])
                i += 1
        p50, p95 = percentiles(lat)
        rows[name] = dict(_recall_cell(ranked, sum(questions, []), config.ks), p50_us=p50,
                          p95_us=p95, candidates=float(np.mean([len(s) for s in stores])))
    for store in stores:
        store.close()
    cells["locomo"] = dict(rows=rows, questions=len(qembs), conversations=len(convs),
                           episodes=sum(len(s) for s in stores),
                           ingest_s=ingest_s, encode_p50_us=percentiles(encode_s)[0])


def _hnsw_options(config) -> dict:
    return dict(m=config.hnsw_m, ef_construction=config.hnsw_ef_construction,
                ef_search=config.hnsw_ef_search)


def exact_top(emb: np.ndarray, qemb: np.ndarray, k: int, chunk: int = 64) -> np.ndarray:
    """Exact top-k rows of every query (chunked matrix products), best first."""
    out = np.empty((len(qemb), k), np.int64)
    for s in range(0, len(qemb), chunk):
        scores = emb @ qemb[s:s + chunk].T
        top = np.argpartition(-scores, k, axis=0)[:k].T
        order = np.argsort(-np.take_along_axis(scores.T, top, axis=1), axis=1, kind="stable")
        out[s:s + chunk] = np.take_along_axis(top, order, axis=1)
    return out


def scale_cell(config, n, planted, synth, synth_emb, questions, qemb, evidence_rows) -> dict:
    """One memory size: build every index, then recall@k and latency of each.

    SwiftMem and HNSW answer every question (recall) and the first `latency_queries` are
    timed; the exact methods (flat numpy / JAX / FAISS) share the exact ranking (computed
    once in batch for recall) and are timed on the same questions, their agreement with it
    checked (`agree@10`)."""
    k = max(config.ks)
    lt, le = planted
    m = n - len(lt["texts"])
    emb = np.concatenate([le, synth_emb[:m]])
    texts = lt["texts"] + synth.texts[:m]
    speakers = lt["speakers"] + synth.speakers[:m]
    stamps = list(lt["timestamps"]) + list(synth.timestamps[:m])
    timed = np.arange(min(config.latency_queries, len(questions)))
    exact = exact_top(emb, qemb, k)
    out = {"methods": {}}

    def recall(ranked):
        return _recall_cell([[evidence_rows.get(int(r)) for r in rk] for rk in ranked],
                            questions, config.ks)

    def measure(label, search, build_s, every_query):
        search(qemb[0], 0)  # warm-up (compiles the JAX baseline)
        ranked, lat = [], []
        for i in (range(len(questions)) if every_query else timed):
            elapsed = stopwatch()
            rows = search(qemb[i], i)
            if i < len(timed):
                lat.append(elapsed())
            ranked.append(list(rows))
        p50, p95 = percentiles(lat)
        cell = recall(ranked) if every_query else recall(exact)
        cell.update(p50_us=p50, p95_us=p95, build_s=build_s, agree10=float(np.mean(
            [len(set(a[:10]) & set(b[:10])) / 10 for a, b in zip(ranked, exact, strict=False)])))
        out["methods"][label] = cell

    elapsed = stopwatch()
    store = MemoryStore.open(None, cluster_size=config.scale_cluster_size, auto_consolidate=False,
                             encoder=_NoEncoder(emb.shape[1]))
    for s in range(0, n, 50_000):
        store.add_batch(texts[s:s + 50_000], speakers=speakers[s:s + 50_000],
                        timestamps=stamps[s:s + 50_000], embeddings=emb[s:s + 50_000])
    add_s = elapsed()
    elapsed = stopwatch()
    store.consolidate()
    out["consolidate_s"], out["add_s"] = elapsed(), add_s
    out["fine_topics"] = len(store.dag.fine)
    for label, options in config.scale_settings:
        routes = []

        def search(q, i, options=options, routes=routes):
            r = store.search(questions[i].question, k, query_embedding=q, **options)
            routes.append(r.tags)
            return r.ids  # ids = rows of `emb`: episodes were added in that order

        measure(label, search, out["consolidate_s"], every_query=True)
        out["methods"][label]["candidates"] = float(np.mean(
            [sum(store.dag.sizes[t] for t in ts if t.startswith("fine:")) for ts in routes]))
        if label == config.scale_settings[0][0]:
            out["layout"] = _layout_effect(store, routes[1:len(timed) + 1], qemb[timed])
    store = None  # free the store's arrays before the baselines copy the embeddings
    gc.collect()
    for name, cls in BASELINES.items():
        elapsed = stopwatch()
        index = cls(emb, **_hnsw_options(config) if name == "faiss-hnsw" else {})
        build_s = elapsed()
        measure(name, lambda q, i, index=index: index.search(q, k), build_s,
                every_query=name == "faiss-hnsw")
        del index
        gc.collect()
    return out


class _NoEncoder:
    """The scale test passes every embedding; a text reaching the encoder is a bug."""

    def __init__(self, dim):
        self.dim = dim

    def encode(self, texts):
        raise RuntimeError("the scale test passes embeddings; nothing should be encoded")


def _layout_effect(store, routes, qemb) -> dict:
    """Scoring time of the routed candidates with the co-consolidated (topic-contiguous)
    layout vs the same candidates scattered in insertion order (gathered by index)."""
    emb, offsets = store.layout()
    perm = np.random.default_rng(0).permutation(len(emb))
    scattered = emb[perm]
    where = np.empty_like(perm)
    where[perm] = np.arange(len(perm))
    contiguous_s, scattered_s = [], []
    for ts, q in zip(routes, qemb, strict=True):
        fines = [int(t.split(":")[1]) for t in ts if t.startswith("fine:")]
        elapsed = stopwatch()
        np.concatenate([emb[offsets[f]:offsets[f + 1]] @ q for f in fines])
        contiguous_s.append(elapsed())
        rows = where[np.concatenate([np.arange(offsets[f], offsets[f + 1]) for f in fines])]
        elapsed = stopwatch()
        scattered[rows] @ q
        scattered_s.append(elapsed())
    return dict(contiguous_us=percentiles(contiguous_s)[0],
                scattered_us=percentiles(scattered_s)[0])


def run(config) -> str:
    """Runs (or resumes) the study and writes the report; returns the report."""
    cells = load_cells(config.cache)
    if config.compute:
        convs = load_locomo(config.locomo_dir or None)
        if config.conversations:
            convs = convs[:config.conversations]
        encoder = Encoder()
        locomo_cells(config, convs, encoder, cells)
        cells.save()
        turns = [t for c in convs for t in c.turns]
        planted = ({"texts": [t.text for t in turns], "speakers": [t.speaker for t in turns],
                    "timestamps": [t.timestamp for t in turns]},
                   encoder.encode([t.text for t in turns]))
        evidence_rows, row = {}, 0
        for c in convs:
            for t in c.turns:
                evidence_rows[row] = (c.sample_id, t.dia_id)
                row += 1
        questions = [q for c in convs for q in _questions(c)]
        keyed = [dataclasses.replace(q, evidence=tuple((c.sample_id, e) for e in q.evidence))
                 for c in convs for q in _questions(c)]  # dia_ids repeat across conversations
        qemb = encoder.encode([q.question for q in questions])
        n_max = max(config.sizes)  # a few more than needed: the cache is keyed by the sizes
        synth = synthetic_episodes(n_max, seed=config.synthetic_seed)
        synth_emb = synthetic_embeddings(n_max, seed=config.synthetic_seed,
                                         chunk=config.encode_chunk,
                                         cache=pathlib.Path(config.cache_dir), encoder=encoder)
        for n in config.sizes:
            key = f"scale/{n}"
            labels = [label for label, _ in config.scale_settings]
            if key not in cells or not set(labels) <= set(cells[key]["methods"]):
                print(f"scale test at N={n:,}", flush=True)
                cells[key] = scale_cell(config, n, planted, synth, synth_emb, keyed, qemb,
                                        evidence_rows)
                cells.save()
    report = write_report(config.output, _report(config, cells))
    _plot(config, cells)
    return report


def _sizes(cells):
    return sorted(int(k.split("/")[1]) for k in cells if k.startswith("scale/"))


def growth_exponent(ns, p50s) -> float:
    """Slope of log(latency) against log(N): 1 = linear, < 1 = sub-linear."""
    return float(np.polyfit(np.log(ns), np.log(p50s), 1)[0])


def _report(config, cells) -> str:
    out = ["# SwiftMem: agent memory retrieval on LoCoMo and at scale", "",
           "Command: `python -m experiments.swiftmem` (config `configs/swiftmem.py`). "
           "Embeddings: MiniLM-L6 (all-MiniLM-L6-v2) in JAX, float32. Latency is the search "
           "call alone (the query embedding is computed once beforehand and timed apart), on "
           "this 2-core CPU, so ratios within one table are what counts.", ""]
    loc = cells.get("locomo")
    if loc:
        rows = loc["rows"]
        flat = rows["flat (store, exhaustive)"]
        out += ["## LoCoMo (evidence recall, categories 1-4)", "",
                f"{loc['episodes']:,} turns in {loc['conversations']} per-"
                f"conversation stores, {loc['questions']} questions. Ingest (encode, tag, log, "
                f"consolidate) {loc['ingest_s']:.1f} s; one query embedding p50 "
                f"{loc['encode_p50_us'] / 1000:.1f} ms.", ""]
        head = (["method"] + [f"R@{k}" for k in config.ks]
                + [f"R@10 {CATEGORIES[c]}" for c in CATEGORIES]
                + ["scored", "p50 us", "p95 us", "p50 / flat p50"])
        table = [[label] + [f"{100 * r[f'r@{k}']:.1f}" for k in config.ks]
                 + [f"{100 * r[f'r@10/c{c}']:.1f}" for c in CATEGORIES]
                 + [f"{r['candidates']:.0f}", f"{r['p50_us']:.0f}", f"{r['p95_us']:.0f}",
                    f"{r['p50_us'] / flat['p50_us']:.2f}x"] for label, r in rows.items()]
        out += [markdown_table(head, table), ""]
    sizes = _sizes(cells)
    if sizes:
        methods = list(cells[f"scale/{sizes[-1]}"]["methods"])
        out += ["## Scale: LoCoMo turns planted among synthetic episodes", "",
                "Every question searched in the whole memory (all conversations and the "
                "synthetic episodes); R@10 of the evidence over all questions (the exact methods "
                "share the exact ranking); latency over the first "
                f"{config.latency_queries} questions; `agree@10` = top-10 overlap with the "
                "exact ranking; build = index construction (SwiftMem: clustering + DAG + "
                "co-consolidation).", ""]
        head = ["N", "method", "R@10", "agree@10", "p50 us", "p95 us", "p50 speed-up vs flat",
                "build s"]
        table = []
        for n in sizes:
            ms = cells[f"scale/{n}"]["methods"]
            for label in methods:
                r = ms[label]
                table.append([f"{n:,}", label, f"{100 * r['r@10']:.1f}",
                              f"{100 * r['agree10']:.0f}",
                              f"{r['p50_us']:.0f}", f"{r['p95_us']:.0f}",
                              f"{ms['flat-numpy']['p50_us'] / r['p50_us']:.1f}x",
                              f"{r['build_s']:.1f}"])
        out += [markdown_table(head, table), ""]
        head = ["method", "latency growth exponent (log p50 vs log N)"]
        out += [markdown_table(head, [[m, f"{growth_exponent(sizes, [cells[f'scale/{n}']['methods'][m]['p50_us'] for n in sizes]):.2f}"]  # noqa: E501
                                      for m in methods]), ""]
        lay = [(n, cells[f"scale/{n}"].get("layout")) for n in sizes]
        out += ["### Co-consolidation", "",
                "Scoring the routed candidates of the first SwiftMem setting: topic-contiguous "
                "layout vs the same rows scattered (gathered by index), p50.", "",
                markdown_table(["N", "contiguous us", "scattered us", "speed-up"],
                               [[f"{n:,}", f"{lo['contiguous_us']:.0f}",
                                 f"{lo['scattered_us']:.0f}",
                                 f"{lo['scattered_us'] / lo['contiguous_us']:.2f}x"]
                                for n, lo in lay if lo]), ""]
    out += _claims(config, cells)
    return "\n".join(out)


def _claims(config, cells) -> list[str]:
    out = ["## The issue's must-shows", ""]
    loc = cells.get("locomo")
    if loc:
        rows = loc["rows"]
        flat = rows["flat (store, exhaustive)"]
        label = config.locomo_settings[0][0]
        s = rows[label]
        gap = 100 * (flat["r@10"] - s["r@10"])
        out.append(f"- LoCoMo: {label} R@10 {100 * s['r@10']:.1f} vs flat "
                   f"{100 * flat['r@10']:.1f} ({gap:.1f} points below): within 3 points "
                   f"{verdict(gap <= 3, words=HOLDS, bold=True)}; latency p50 "
                   f"{s['p50_us']:.0f} us vs {flat['p50_us']:.0f} us "
                   f"({flat['p50_us'] / s['p50_us']:.2f}x).")
    sizes = _sizes(cells)
    if sizes:
        n = sizes[-1]
        ms = cells[f"scale/{n}"]["methods"]
        flat = ms["flat-numpy"]
        for label, _ in config.scale_settings:
            s = ms[label]
            speed = flat["p50_us"] / s["p50_us"]
            gap = 100 * (flat["r@10"] - s["r@10"])
            ok = speed >= 20 and gap <= 2
            out.append(f"- N={n:,}, {label}: p50 {speed:.1f}x lower than flat at R@10 "
                       f"{gap:.1f} points below it: {verdict(ok, words=HOLDS, bold=True)} "
                       f"(FAISS HNSW: {flat['p50_us'] / ms['faiss-hnsw']['p50_us']:.1f}x, "
                       f"R@10 {100 * ms['faiss-hnsw']['r@10']:.1f}).")
        if len(sizes) > 1:
            label = config.scale_settings[0][0]
            e = growth_exponent(sizes, [cells[f"scale/{m}"]["methods"][label]["p50_us"]
                                        for m in sizes])
            out.append(f"- Latency growth of {label}: exponent {e:.2f} over N = "
                       f"{sizes[0]:,}..{sizes[-1]:,} (sub-linear: "
                       f"{verdict(e < 0.9, words=HOLDS, bold=True)}).")
    return out + [""]


def _plot(config, cells) -> None:
    sizes = _sizes(cells)
    if len(sizes) < 2:
        return
    plt = pyplot()
    methods = list(cells[f"scale/{sizes[-1]}"]["methods"])
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for m in methods:
        a.loglog(sizes, [cells[f"scale/{n}"]["methods"][m]["p50_us"] / 1000 for n in sizes],
                 "o-", label=m)
        b.semilogx(sizes, [100 * cells[f"scale/{n}"]["methods"][m]["r@10"] for n in sizes],
                   "o-", label=m)
    a.set(xlabel="episodes in memory", ylabel="p50 search latency (ms)",
          title="Search latency vs memory size")
    b.set(xlabel="episodes in memory", ylabel="LoCoMo evidence recall@10 (%)",
          title="Recall among distractors")
    a.grid(True, which="both", alpha=0.3)
    b.grid(True, alpha=0.3)
    a.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, config.plot)


if __name__ == "__main__":
    main_with_config(run, "swiftmem")

"""QuantClaw: precision routing on a mixed agent workload, against fixed-precision serving.

    python -m experiments.quantclaw [--config=configs/quantclaw.py[:tiny]]

Five task types (arithmetic, tool calls, capital-city lookups, continuation and one-line
summaries of WikiText-2 paragraphs), each request served by SmolLM2-135M at three tiers
(bfloat16, MXFP8 and MXFP4 projection weights). Every (request, tier) generation runs once
(greedy, so deterministic) and is cached; each routing row then picks a tier per request:
all-16 / all-8 / all-4, uniform random, oracle (the cheapest tier whose score equals the
16-bit one), and QuantClaw (detector + the policy profiled on separate requests +
escalation when the validator rejects the answer). Cost is the weight bytes moved
(bytes per token x generated tokens, summed over escalations); latency is measured.
"""

from __future__ import annotations

import numpy as np

import effjax
from effjax.agents import (
    VALIDATORS,
    Detection,
    EmbeddingDetector,
    Policy,
    PrecisionRouter,
    RuleDetector,
    Sensitivity,
    TaskDetector,
    build_variants,
    parse_tool_call,
    profile_sensitivity,
)
from effjax.data import load_corpus
from effjax.memory import STOPWORDS, words
from experiments.common import (
    HOLDS,
    for_model,
    load_cells,
    main_with_config,
    markdown_table,
    model_line,
    stopwatch,
    verdict,
    write_report,
)
from experiments.speculative import arithmetic_tasks, first_integer

PAPER = ("confirmed", "not confirmed")  # verdicts on the paper's figures
TASKS = ("arithmetic", "tool_call", "lookup", "continuation", "summarization")
CAPITALS = (("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"),
            ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Russia", "Moscow"), ("China", "Beijing"),
            ("Greece", "Athens"), ("Portugal", "Lisbon"), ("Austria", "Vienna"),
            ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Poland", "Warsaw"),
            ("Ireland", "Dublin"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Cuba", "Havana"),
            ("Thailand", "Bangkok"), ("Argentina", "Buenos Aires"), ("Finland", "Helsinki"),
            ("Denmark", "Copenhagen"), ("Hungary", "Budapest"), ("Belgium", "Brussels"),
            ("Canada", "Ottawa"), ("Australia", "Canberra"), ("India", "New Delhi"),
            ("Mexico", "Mexico City"), ("Turkey", "Ankara"), ("Chile", "Santiago"))
CITIES = ("Oslo", "Paris", "Tokyo", "Lima", "Cairo", "Boston", "Madrid", "Seoul", "Rome",
          "Dublin", "Denver", "Austin", "Prague", "Lagos", "Quito", "Hanoi")
TOOL_PROMPT = (
    'Tools: get_weather(city), set_timer(minutes), send_email(to, subject).\n'
    'Answer with one JSON tool call.\n'
    'Request: Set a timer for 5 minutes.\n'
    'Call: {{"name": "set_timer", "arguments": {{"minutes": 5}}}}\n'
    'Request: Email Ann about lunch.\n'
    'Call: {{"name": "send_email", "arguments": {{"to": "Ann", "subject": "lunch"}}}}\n'
    "Request: What's the weather in {city}?\n"
    "Call:")


def _content(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOPWORDS]


def _f1(pred: list[str], ref: list[str]) -> float:
    common = sum(min(pred.count(w), ref.count(w)) for w in set(pred))
    if not pred or not ref or not common:
        return 0.0
    p, r = common / len(pred), common / len(ref)
    return 2 * p * r / (p + r)


def workload(n: int, offset: int, paragraphs: list[str]) -> dict[str, list[tuple[str, object]]]:
    """n requests per task type as (prompt, score(text) -> quality in [0, 1]); `offset`
    picks disjoint questions (profiling vs evaluation); paragraphs: 2n of them, n to
    continue and n to summarize."""
    out = {t: [] for t in TASKS}
    for prompt, answer in arithmetic_tasks(n, seed=100 + offset):
        out["arithmetic"].append((prompt, lambda text, a=answer: float(first_integer(text) == a)))
    for i in range(n):
        city = CITIES[(offset + i) % len(CITIES)]
        out["tool_call"].append((TOOL_PROMPT.format(city=city), lambda text, c=city: float(
            (call := parse_tool_call(text)) is not None and call["name"] == "get_weather"
            and str(call["arguments"].get("city", "")).lower() == c.lower())))
        country, capital = CAPITALS[(offset + i) % len(CAPITALS)]
        out["lookup"].append((
            f"Q: What is the capital of Kenya?\nA: Nairobi\nQ: What is the capital of "
            f"{country}?\nA:", lambda text, c=capital: float(
                c.lower() in text.strip().split("\n")[0].lower())))
    paras = paragraphs[:2 * n]
    for i in range(n):
        w = paras[i].split()
        ref = " ".join(w[60:90])
        out["continuation"].append((" ".join(w[:60]), lambda text, ref=ref:
                                    _f1(_content(text), _content(ref))))
        src = " ".join(paras[n + i].split()[:90])
        out["summarization"].append((
            f"Text: {src}\nSummary in one sentence:",
            lambda text, s=src: float(np.mean([t in set(_content(s)) for t in _content(text)]))
            if _content(text) else 0.0))
    return out


def _paragraphs(count: int) -> list[str]:
    corpus = load_corpus("wikitext2", split="test")
    paras = [line.strip() for text in corpus.texts for line in text.split("\n")
             if len(line.split()) >= 100 and not line.strip().startswith("=")]
    if len(paras) < count:
        raise ValueError(f"only {len(paras)} WikiText-2 paragraphs of 100+ words; need {count}")
    return paras[:count]


def run(config) -> str:
    """Runs (or resumes) the study and writes the report; returns it."""
    config = for_model(config)  # files named for a non-default model
    cells = load_cells(config.cache)
    n, m = config.requests, config.profile_requests
    if config.compute:
        lm = effjax.load(config.model)
        tiers = dict(config.tiers)
        embedding = None
        if config.embedding_detector:
            from effjax.memory import Encoder

            embedding = EmbeddingDetector(Encoder())
        detector = TaskDetector(RuleDetector(), embedding)
        router = PrecisionRouter(build_variants(lm.params, tiers), lm.config, lm.tokenizer,
                                 detector=detector)
        paras = _paragraphs(2 * (n + m))
        if "profile" not in cells:
            prof = profile_sensitivity(router, workload(m, n, paras[2 * n:]),
                                       tolerance=config.tolerance, z=config.z,
                                       max_new_tokens=config.max_new_tokens, stop=("\n",))
            cells["profile"] = dict(quality=prof.quality, tiers=prof.tiers, valid=prof.valid,
                                    no_escalation=sorted(prof.no_escalation),
                                    bytes={t: v.bytes for t, v in router.variants.items()})
            cells.save()
        warm = set()  # (tier, prompt-length bucket) already compiled: latency excludes jit
        for task, reqs in workload(n, 0, paras[:2 * n]).items():
            for i, (prompt, score) in enumerate(reqs):
                key = f"{task}/{i}"
                if key in cells:
                    continue
                elapsed = stopwatch()
                detection, _ = router.route(prompt)
                routing = elapsed()
                runs = {}
                bucket = -(-len(lm.tokenizer(prompt)["input_ids"]) // 16)
                for tier in router.policy.order:
                    for _ in range(1 if (tier, bucket) in warm else 2):  # the 1st compiles
                        out = router.generate(prompt, max_new_tokens=config.max_new_tokens,
                                              task=task, tier=tier, stop=("\n",))
                    warm.add((tier, bucket))
                    check = VALIDATORS.get(detection.task)
                    runs[tier] = dict(text=out.text, quality=score(out.text),
                                      latency=out.latency_s, bytes=out.bytes_moved,
                                      valid_detected=check is None or check(out.text))
                cells[key] = dict(task=task, detected=detection.task,
                                  confidence=detection.confidence, source=detection.source,
                                  routing_s=routing, runs=runs)
                cells.save()
                print(f"{key}: detected {detection.task} ({detection.source}), quality "
                      + ", ".join(f"{t} {r['quality']:.2f}" for t, r in runs.items()),
                      flush=True)
    return write_report(config.output, _report(config, cells))


def route_rows(config, cells) -> dict[str, list[tuple[str, dict, float, float]]]:
    """Per routing row, per request: (task, the cell, quality, cost bytes, latency s)."""
    order = [t for t, _ in config.tiers]
    prof = cells["profile"]
    policy = Policy(tiers=prof["tiers"], order=tuple(order),
                    no_escalation=prof.get("no_escalation", ()))
    rng = np.random.default_rng(config.random_seed)
    reqs = [c for k, c in sorted(cells.items()) if "/" in k]
    rows = {f"all {t}": [] for t in reversed(order)}
    rows.update({"random": [], "oracle": [], "QuantClaw": []})
    for c in reqs:
        runs = c["runs"]
        for t in order:
            rows[f"all {t}"].append((c["task"], runs[t]["quality"], runs[t]["bytes"],
                                     runs[t]["latency"]))
        r = runs[order[rng.integers(len(order))]]
        rows["random"].append((c["task"], r["quality"], r["bytes"], r["latency"]))
        best = next(t for t in order if runs[t]["quality"] >= runs[order[-1]]["quality"])
        rows["oracle"].append((c["task"], runs[best]["quality"], runs[best]["bytes"],
                               runs[best]["latency"]))
        tier = policy.choose(Detection(c["detected"], c["confidence"], c["source"]))
        tried = policy.attempts(c["detected"], tier, lambda t, r=runs: r[t]["valid_detected"],
                                config.max_escalations)  # as PrecisionRouter.generate
        rows["QuantClaw"].append((c["task"], runs[tried[-1]]["quality"],
                                  sum(runs[t]["bytes"] for t in tried),
                                  c["routing_s"] + sum(runs[t]["latency"] for t in tried)))
    return rows


def _report(config, cells) -> str:
    out = ["# QuantClaw: precision routing on a mixed agent workload", "",
           model_line(config.model), "",
           f"Command: `python -m experiments.quantclaw`. {config.model}, tiers "
           + ", ".join(f"{t} = {f}" for t, f in config.tiers)
           + " (projection weights; embeddings and norms bfloat16 in every tier), greedy, "
           f"{config.max_new_tokens} new tokens, on this 2-core CPU.", ""]
    if "profile" not in cells or not any("/" in k for k in cells):
        return "\n".join(out + ["No results yet."])
    prof = cells["profile"]
    valid = prof.get("valid", {})
    sens = Sensitivity(quality=prof["quality"], tiers=prof["tiers"], valid=valid,
                       tolerance=config.tolerance, z=config.z)
    out += ["## Sensitivity profile (separate requests)", "",
            f"{config.profile_requests} requests per task at every tier; the policy tier is "
            f"the cheapest whose paired quality drop against 16-bit plus {config.z:g} "
            f"standard errors is at most {100 * config.tolerance:g} points. Valid: the "
            "share of results the task's validator accepts; a task escalates on a failed "
            "validation only where a more precise tier was more often valid.", "",
            markdown_table(["task"] + [t for t, _ in config.tiers] + ["valid", "policy tier",
                                                                       "escalates"],
                           [[task] + [f"{100 * q[t]:.1f}" for t, _ in config.tiers]
                            + [" / ".join(f"{100 * v:.0f}" for v in valid[task].values())
                               if task in valid else "-", prof["tiers"][task],
                               "yes" if sens.escalates(task) else "no"]
                            for task, q in prof["quality"].items()]),
            ""]
    rows = route_rows(config, cells)
    base = rows[f"all {config.tiers[-1][0]}"]
    base_cost = sum(r[2] for r in base)
    base_lat = np.mean([r[3] for r in base])
    tasks = [t for t in TASKS if any(r[0] == t for r in base)]
    table = []
    for label, rs in rows.items():
        per = [100 * np.mean([r[1] for r in rs if r[0] == t]) for t in tasks]
        lat = [r[3] for r in rs]
        table.append([label] + [f"{q:.1f}" for q in per] + [
            f"{np.mean(per):.1f}", f"{sum(r[2] for r in rs) / base_cost:.3f}",
            f"{1e3 * np.mean(lat):.0f}", f"{1e3 * np.percentile(lat, 95):.0f}"])
    out += ["## Routing rows (evaluation requests)", "",
            f"{len(base)} requests, {len(tasks)} task types; quality in points (accuracy for "
            "arithmetic / tool calls / lookups, content-word F1 with the true continuation, "
            "content-word precision against the source for summaries); cost = weight bytes "
            "moved relative to all-16-bit.", "",
            markdown_table(["row"] + tasks + ["mean", "cost", "mean ms", "p95 ms"], table), ""]
    reqs = [c for k, c in cells.items() if "/" in k]
    correct = np.mean([c["detected"] == c["task"] for c in reqs])
    routing_ms = [1e3 * c["routing_s"] for c in reqs]
    qc = rows["QuantClaw"]
    q16 = np.mean([100 * np.mean([r[1] for r in base if r[0] == t]) for t in tasks])
    qq = np.mean([100 * np.mean([r[1] for r in qc if r[0] == t]) for t in tasks])
    saving = 1 - sum(r[2] for r in qc) / base_cost
    lat_cut = 1 - np.mean([r[3] for r in qc]) / base_lat
    ok = q16 - qq <= 1.0
    out += ["## Claims", "",
            f"- Task detection: {100 * correct:.0f}% of requests routed as their true type; "
            f"routing overhead p50 {np.median(routing_ms):.2f} ms, max {max(routing_ms):.2f} ms "
            f"(target < 2 ms: {verdict(np.median(routing_ms) < 2, words=HOLDS, bold=True)} at "
            "p50).",
            f"- QuantClaw vs all-16-bit: cost saving {100 * saving:.1f}%, mean latency "
            f"{'reduction' if lat_cut >= 0 else 'increase'} {100 * abs(lat_cut):.1f}%, quality "
            f"{qq:.1f} vs {q16:.1f} points (loss {q16 - qq:.1f}; at most 1 point: "
            f"{verdict(ok, words=HOLDS, bold=True)}). The paper's 21.4% cost / 15.7% latency: "
            f"cost saving {verdict(ok and saving >= 0.214, words=PAPER, bold=True)}, "
            f"latency {verdict(ok and lat_cut >= 0.157, words=PAPER, bold=True)} here.",
            ""]
    return "\n".join(out)


if __name__ == "__main__":
    main_with_config(run, "quantclaw")

"""Speculative decoding on SmolLM2-135M: acceptance rules side by side, quantized self-drafts.

    python -m experiments.speculative [--config=configs/speculative.py[:tiny]]

Per (domain, draft, rule): mean tokens per target call, target calls per generated token,
wall-clock speedup over target-only decoding timed in the same run (greedy decoding for the
greedy-family rules, temperature sampling for exact sampling), agreement with the target's
own greedy output, the target's negative log-likelihood per generated token, and on
arithmetic the exact-match accuracy of the answer. Rows are cached in a JSON file as they
finish; the report and a plot are written at the end.
"""

from __future__ import annotations

import json
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

import effjax
from effjax.decoding import (
    AutoJudge,
    ExactSampling,
    GreedyMatch,
    KLJudge,
    SamplingConfig,
    TypicalAcceptance,
    early_exit_draft,
    generate,
    mine_mismatches,
    speculative_generate,
    train_judge,
)
from effjax.eval import markdown_table, write_atomic
from effjax.models import forward
from effjax.quant import quantize_params, recipe
from experiments.cli import (
    format_spec,
    load_cells,
    main_with_config,
    median_seconds,
    save_cells,
    save_figure,
)

RULES = {"greedy": GreedyMatch, "exact": ExactSampling, "typical": TypicalAcceptance,
         "kl": KLJudge, "autojudge": AutoJudge}


def make_rule(kind: str, options: dict, judge: dict | None = None):
    """The acceptance rule of a config row (`judge`: AutoJudge's trained weights and bias)."""
    if kind not in RULES:
        raise ValueError(f"rule kind must be one of {sorted(RULES)}, got {kind!r}")
    if kind == "autojudge":
        if judge is None:
            raise ValueError("an autojudge row needs a trained judge")
        return AutoJudge(np.asarray(judge["weights"], np.float32), judge["bias"], **options)
    return RULES[kind](**options)


def rule_rows(config) -> list[tuple[str, str, dict]]:
    """The config's rules, then one AutoJudge row per threshold."""
    return [*config.rules, *((f"AutoJudge P(important)<{t}", "autojudge", {"threshold": t})
                             for t in config.judge_thresholds)]


def arithmetic_tasks(n: int, seed: int) -> list[tuple[str, int]]:
    """(prompt, answer) pairs: two-digit sums and one-digit-by-two-digit products."""
    rng = np.random.RandomState(seed)
    tasks = []
    for i in range(n):
        a, b = int(rng.randint(10, 100)), int(rng.randint(2 if i % 2 else 10, 10 if i % 2 else 100))
        op, answer = ("*", a * b) if i % 2 else ("+", a + b)
        tasks.append((f"Question: What is {a} {op} {b}?\nAnswer: {a} {op} {b} =", answer))
    return tasks


def first_integer(text: str) -> int | None:
    """The first integer in a model's answer, or None."""
    m = re.search(r"-?\d+", text)
    return None if m is None else int(m.group())


def prose_prompts(lm, texts: list[str], n: int, length: int) -> list[list[int]]:
    """The first `length` tokens of the first n paragraphs (lines that are not WikiText
    headings) that have that many."""
    prompts = []
    for line in (line.strip() for text in texts for line in text.split("\n")):
        if not line or line.startswith("="):
            continue
        ids = lm.tokenizer(line)["input_ids"]
        if len(ids) >= length:
            prompts.append(ids[:length])
        if len(prompts) == n:
            return prompts
    raise ValueError(f"only {len(prompts)} paragraphs have {length} tokens; asked for {n}")


def target_nll(lm, prompts: list[list[int]], outs: list[list[int]]) -> float:
    """The target's mean negative log-likelihood per generated token (one padded forward)."""
    width = max(len(p) + len(o) for p, o in zip(prompts, outs, strict=True))
    tokens = np.zeros((len(prompts), width), np.int32)
    mask = np.zeros((len(prompts), width), bool)
    scored = np.zeros((len(prompts), width), bool)
    for i, (p, o) in enumerate(zip(prompts, outs, strict=True)):
        seq = p + o
        tokens[i, width - len(seq):] = seq
        mask[i, width - len(seq):] = True
        scored[i, width - len(o):] = True
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    logits, _ = forward(lm.params, jnp.asarray(tokens), config=lm.config,
                        positions=jnp.asarray(positions), mask=jnp.asarray(mask))
    logp = np.asarray(jax.nn.log_softmax(logits[:, :-1], axis=-1))
    picked = np.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    return float(-picked[scored[:, 1:]].mean())


def _agreement(outs: list[list[int]], ref: list[list[int]]) -> float:
    """Fraction of generated positions equal to the target's greedy output."""
    same = total = 0
    for o, r in zip(outs, ref, strict=True):
        total += max(len(o), len(r))
        same += sum(a == b for a, b in zip(o, r, strict=False))
    return same / max(total, 1)


def _accuracy(lm, outs, answers) -> float:
    got = [first_integer(lm.tokenizer.decode(o)) for o in outs]
    return float(np.mean([g == a for g, a in zip(got, answers, strict=True)]))


def make_draft(lm, spec: str):
    """(params, config, recipe) of a draft: "first:N" is the target's first N blocks
    (`early_exit_draft`), any other spec a weight-quantized copy of the target."""
    if spec.startswith("first:"):
        params, config = early_exit_draft(lm.params, lm.config, int(spec.split(":")[1]))
        return params, config, None
    r = recipe(format_spec(spec))
    return quantize_params(lm.params, r), lm.config, r


def _domains(lm, config) -> dict:
    corpus = effjax.data.load_corpus(config.prose_corpus, split=config.prose_split)
    tasks = arithmetic_tasks(config.arith_prompts, config.arith_seed)
    return {"prose": (prose_prompts(lm, corpus.texts, config.prose_prompts,
                                    config.prompt_tokens), None),
            "arithmetic": ([lm.tokenizer(q)["input_ids"] for q, _ in tasks],
                           [a for _, a in tasks])}


def train_draft_judge(lm, config, draft, draft_config, draft_recipe) -> dict:
    """AutoJudge for one draft: mismatches mined on arithmetic questions other than the
    evaluated ones (the answer: the first integer), then the judge fitted to them."""
    tasks = arithmetic_tasks(config.judge_prompts, config.judge_seed)
    prompts = [lm.tokenizer(q)["input_ids"] for q, _ in tasks]
    mined = mine_mismatches(lm.params, lm.config, draft, draft_config, prompts,
                            lambda toks: first_integer(lm.tokenizer.decode(toks)),
                            max_new_tokens=config.max_new_tokens, draft_recipe=draft_recipe,
                            eos_id=-1)
    out = {"mismatches": len(mined.important), "important": int(mined.important.sum())}
    try:
        w, b = train_judge(mined.features, mined.important)
    except ValueError as e:  # one class only: no judge to train
        return {**out, "error": str(e)}
    fit = np.mean((mined.features @ w + b > 0) == mined.important)
    return {**out, "weights": w.tolist(), "bias": b, "train_accuracy": float(fit)}


def _timed(fn, repeats: int):
    out = fn()  # warm-up: compiles
    return out, median_seconds(fn, repeats)


def _key(config, *parts) -> str:
    return json.dumps([*parts, config.model, config.k, config.prose_prompts, config.prompt_tokens,
                       config.arith_prompts, config.arith_seed, config.max_new_tokens],
                      sort_keys=True)


def run(config) -> str:
    """Runs the missing rows, then writes the report and the plot."""
    start = time.perf_counter()
    lm = effjax.load(config.model)
    cache = load_cells(config.cache)
    n = config.max_new_tokens
    domains = _domains(lm, config)
    sampling = SamplingConfig(temperature=1.0)
    refs, timings = {}, {}
    for name, (prompts, answers) in domains.items():
        greedy, g_sec = _timed(lambda p=prompts: generate(lm.params, lm.config, p,
                                                          max_new_tokens=n, eos_id=-1),
                               config.repeats)
        sampled, s_sec = _timed(lambda p=prompts: generate(
            lm.params, lm.config, p, max_new_tokens=n, eos_id=-1, sampling=sampling,
            key=jax.random.PRNGKey(1)), config.repeats)
        refs[name] = greedy
        timings[name] = {"greedy": g_sec, "sampling": s_sec}
        key = _key(config, name, "target")
        if key not in cache:
            cache[key] = {"greedy_seconds": g_sec, "sampling_seconds": s_sec,
                          "nll": target_nll(lm, prompts, greedy),
                          "sampling_nll": target_nll(lm, prompts, sampled),
                          "accuracy": None if answers is None else _accuracy(lm, greedy, answers)}
            save_cells(config.cache, cache)
    for draft_label, spec in config.drafts:
        draft, draft_config, r = make_draft(lm, spec)
        judge_key = _key(config, "judge", spec, config.judge_prompts, config.judge_seed)
        if config.judge_thresholds and judge_key not in cache:
            cache[judge_key] = train_draft_judge(lm, config, draft, draft_config, r)
            save_cells(config.cache, cache)
        judge = cache.get(judge_key)
        for label, kind, options in rule_rows(config):
            if kind == "autojudge" and "weights" not in judge:
                continue
            rule = make_rule(kind, dict(options), judge)
            for name, (prompts, answers) in domains.items():
                key = _key(config, name, spec, kind, dict(options))
                if key in cache:
                    continue
                out, sec = _timed(lambda p=prompts, rule=rule, draft=draft, dc=draft_config, r=r: (
                    speculative_generate(lm.params, lm.config, draft, dc, p, k=config.k,
                                         rule=rule, max_new_tokens=n, eos_id=-1,
                                         draft_recipe=r, key=jax.random.PRNGKey(1))),
                                  config.repeats)
                baseline = timings[name]["sampling" if kind == "exact" else "greedy"]
                generated = sum(len(t) for t in out.tokens)
                cache[key] = {
                    "seconds": sec,
                    "baseline_seconds": baseline,  # target-only, timed in the same run
                    "speedup": baseline / sec,
                    "tokens_per_call": out.tokens_per_call,
                    "calls_per_token": float(out.target_calls.sum()) / generated,
                    "agreement": _agreement(out.tokens, refs[name]),
                    "nll": target_nll(lm, prompts, out.tokens),
                    "accuracy": None if answers is None else _accuracy(lm, out.tokens, answers)}
                save_cells(config.cache, cache)
                print(name, draft_label, label, cache[key], flush=True)
    report = _report(config, cache, time.perf_counter() - start)
    write_atomic(config.output, report)
    _plot(config, cache)
    print(report, flush=True)
    return report


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def _report(config, cache, seconds) -> str:
    parts = [
        "# Speculative decoding on SmolLM2-135M",
        "",
        f"Command: `python -m experiments.speculative` (config `configs/speculative.py`); jax "
        f"{jax.__version__}, {jax.devices()[0].device_kind}. Target: {config.model} in float32. "
        "Drafts: weight-quantized copies of the target, or its first N blocks with its final "
        f"norm and head (`early_exit_draft`, untrained), k = {config.k} draft tokens "
        f"per round, {config.max_new_tokens} new tokens per prompt, batch = all prompts of a "
        f"domain. Prose: {config.prose_prompts} WikiText-2 {config.prose_split} paragraphs cut "
        f"to {config.prompt_tokens} tokens; arithmetic: {config.arith_prompts} questions (sums "
        "of two-digit numbers, products of a two-digit and a one-digit number), the answer's "
        "first integer must equal the result. Speedup: target-only decoding time over "
        "speculative time, both medians of timed runs after a warm-up in the same process "
        "(greedy decoding for the greedy-family rules, temperature-1 sampling for exact "
        "sampling; the target-only rows show the first run's times). "
        "Agreement: fraction of generated positions equal to the target's greedy output. NLL: "
        f"the target's negative log-likelihood per generated token. This run: {seconds:.0f} s.",
        ""]
    for name in ("prose", "arithmetic"):
        base = cache.get(_key(config, name, "target"))
        if base is None:
            continue
        rows = [["target only, greedy", "-", "1", "1", "1x", "1", _fmt(base["nll"]),
                 _fmt(base["accuracy"]), f"{base['greedy_seconds']:.2f}"],
                ["target only, sampling T=1", "-", "1", "1", "1x", "-",
                 _fmt(base["sampling_nll"]), "-", f"{base['sampling_seconds']:.2f}"]]
        for draft_label, spec in config.drafts:
            for label, kind, options in rule_rows(config):
                cell = cache.get(_key(config, name, spec, kind, dict(options)))
                rows.append([label, draft_label, *["not run"] * 7] if cell is None else [
                    label, draft_label, f"{cell['tokens_per_call']:.2f}",
                    f"{cell['calls_per_token']:.3f}", f"{cell['speedup']:.2f}x",
                    f"{cell['agreement']:.3f}", _fmt(cell["nll"]), _fmt(cell["accuracy"]),
                    f"{cell['seconds']:.2f}"])
        parts += [f"## {name}", "",
                  markdown_table(["rule", "draft", "tokens / target call",
                                  "target calls / token", "speedup", "agreement with greedy",
                                  "target NLL / token", "accuracy", "seconds"], rows),
                  ""]
    parts += [_claims(config, cache)]
    return "\n".join(parts)


def _claims(config, cache) -> str:
    lines = ["## Findings", ""]
    verdicts = []
    for draft_label, spec in config.drafts:
        judge = cache.get(_key(config, "judge", spec, config.judge_prompts, config.judge_seed))
        if judge is not None:
            lines.append(
                f"- {draft_label}: AutoJudge mined {judge['mismatches']} mismatches on "
                f"{config.judge_prompts} other arithmetic questions, {judge['important']} "
                "important (the answer changed); " + (
                    f"judge not trained: {judge['error']}" if "error" in judge else
                    f"fit accuracy {judge['train_accuracy']:.3f} on them"))
        # quality: answer accuracy on arithmetic (higher is better), the target's NLL per
        # generated token on prose (lower is better)
        for name, metric, sign in (("arithmetic", "accuracy", 1), ("prose", "nll", -1)):
            greedy = cache.get(_key(config, name, spec, "greedy", {}))
            kls = [(label, c) for label, kind, o in config.rules if kind == "kl"
                   if (c := cache.get(_key(config, name, spec, kind, dict(o)))) is not None]
            if greedy is None or not kls:
                continue
            best = max(kls, key=lambda lc: lc[1]["tokens_per_call"])
            lines.append(
                f"- {draft_label}, {name}: greedy match keeps {greedy['tokens_per_call']:.2f} "
                f"tokens per call ({greedy['speedup']:.2f}x); the loosest KL judge ({best[0]}) "
                f"keeps {best[1]['tokens_per_call']:.2f} ({best[1]['speedup']:.2f}x) at "
                f"{metric} {best[1][metric]:.3f} vs {greedy[metric]:.3f} for greedy match.")
            for label, kind, o in rule_rows(config):
                auto = cache.get(_key(config, name, spec, kind, dict(o)))
                if kind != "autojudge" or auto is None:
                    continue
                near = min(kls, key=lambda lc: abs(lc[1]["tokens_per_call"]
                                                   - auto["tokens_per_call"]))
                wins = any(c["tokens_per_call"] >= auto["tokens_per_call"]
                           and sign * c[metric] >= sign * auto[metric] for _, c in kls)
                verdicts.append((name, wins))
                shift = ", evaluated on prose: domain shift" if name == "prose" else ""
                lines.append(
                    f"  - {label} (trained on arithmetic{shift}): "
                    f"{auto['tokens_per_call']:.2f} tokens per call, {metric} "
                    f"{auto[metric]:.3f}; nearest KL judge ({near[0]}): "
                    f"{near[1]['tokens_per_call']:.2f}, {metric} {near[1][metric]:.3f}; a KL "
                    f"judge with at least as many tokens per call and {metric} at least as "
                    f"good: {'yes' if wins else 'no'}.")
    for name, what in (("arithmetic", "matches or beats AutoJudge"),
                       ("prose", "is more robust to the domain shift")):
        got = [w for n, w in verdicts if n == name]
        if got:
            lines.append(f"- Claim: the KL judge {what} ({name}, every AutoJudge row "
                         f"dominated or matched by a KL-judge row): "
                         f"{'confirmed' if all(got) else 'refuted'} "
                         f"({sum(got)} of {len(got)} rows).")
    if not verdicts:
        lines.append("- KL judge vs AutoJudge: not measured (no AutoJudge rows).")
    else:
        lines.append(f"- Resolution: {config.arith_prompts} arithmetic questions (accuracy moves "
                     f"in steps of {1 / config.arith_prompts:.3f}) and "
                     f"{len([r for r in config.rules if r[1] == 'kl'])} KL thresholds: a "
                     "verdict says whether one of those thresholds dominates each AutoJudge "
                     "row, not what a finer sweep would find.")
    return "\n".join(lines)


def _plot(config, cache) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (name, metric) in zip(axes, (("prose", "nll"), ("arithmetic", "accuracy")),
                                  strict=True):
        for draft_label, spec in config.drafts:
            cells = [(label, cache.get(_key(config, name, spec, kind, dict(o))))
                     for label, kind, o in rule_rows(config)]
            points = [(c["tokens_per_call"], c[metric], label) for label, c in cells
                      if c is not None and c[metric] is not None]
            if not points:
                continue
            x, y, labels = zip(*points, strict=True)
            ax.scatter(x, y, label=draft_label)
            for xi, yi, lab in zip(x, y, labels, strict=True):
                ax.annotate(lab.replace("KL judge ", "KL "), (xi, yi), fontsize=6)
        ax.set_xlabel("tokens per target call")
        ax.set_ylabel({"nll": "target NLL / token (lower is better)",
                       "accuracy": "answer accuracy"}[metric])
        ax.set_title(name)
        ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, config.plot)
    plt.close(fig)


if __name__ == "__main__":
    main_with_config(run, "speculative")

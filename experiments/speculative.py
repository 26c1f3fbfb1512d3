"""Speculative decoding: acceptance rules side by side on two draft/target pairs.

    python -m experiments.speculative [--config=configs/speculative.py[:tiny]]

Pairs: SmolLM2-135M with quantized (or truncated) copies of itself as drafts, on prose and
two-operand arithmetic questions; and the in-house arithmetic pair, the reasoning teacher
verifying a one-block draft trained on the same task, on the task's test problems and on
longer chains than the judge was mined on (the domain shift). Per (pair, domain, draft,
rule): mean tokens per target call, target calls per generated token, wall-clock speedup
over target-only decoding timed in the same run (greedy decoding for the greedy-family
rules, temperature sampling for exact sampling), agreement with the target's own greedy
output, the target's negative log-likelihood per generated token and, where answers can be
checked, exact-match accuracy. Rows are cached in a JSON file as they finish; the report
and a plot are written at the end.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

import effjax
from effjax.data import arithmetic
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
from effjax.formats import parse_format_spec
from effjax.models import forward
from effjax.quant import quantize_params, recipe
from experiments.common import (
    binomial_se,
    cell_key,
    fmt_number,
    for_model,
    load_cells,
    main_with_config,
    markdown_table,
    pyplot,
    save_figure,
    stopwatch,
    timed_call,
    verdict,
    within_two_se,
    write_report,
)

RULES = {"greedy": GreedyMatch, "exact": ExactSampling, "typical": TypicalAcceptance,
         "kl": KLJudge, "autojudge": AutoJudge}


@dataclasses.dataclass(frozen=True)
class Domain:
    """Prompts a pair is measured on.

    Attributes:
      prompts: token ids per prompt.
      accuracy: generated token ids per prompt -> exact-match accuracy (None: no answers).
      shifted: whether the AutoJudge was mined on another domain.
      what: one line for the report.
    """

    prompts: list[list[int]]
    accuracy: Callable[[list[list[int]]], float] | None
    shifted: bool
    what: str

    @property
    def metric(self) -> str:
        """The quality the findings compare: accuracy where answers exist, else NLL."""
        return "nll" if self.accuracy is None else "accuracy"


@dataclasses.dataclass(frozen=True)
class Pair:
    """A target, its drafts, its domains and how its AutoJudges are mined.

    Attributes:
      name: the report section's title.
      params, config: the target.
      drafts: (label, spec, (params, config, recipe)) per draft.
      domains: name -> `Domain`.
      judge_prompts: token ids of the prompts mismatches are mined on.
      answer: generated token ids -> a comparable answer (the mining labels).
      eos_id: generation stops after it (-1: never).
      settings: the pair's part of the experiment config.
      fields: what makes the pair's cache keys distinct.
      judge_fields: what makes its judges' keys distinct.
    """

    name: str
    params: dict
    config: effjax.models.LMConfig
    drafts: list
    domains: dict
    judge_prompts: list[list[int]]
    answer: Callable
    eos_id: int
    settings: object
    fields: tuple
    judge_fields: tuple


def make_rule(kind: str, options: dict, judge: dict | None = None):
    """The acceptance rule of a config row (`judge`: AutoJudge's trained weights and bias)."""
    if kind not in RULES:
        raise ValueError(f"rule kind must be one of {sorted(RULES)}, got {kind!r}")
    if kind == "autojudge":
        if judge is None:
            raise ValueError("an autojudge row needs a trained judge")
        return AutoJudge(np.asarray(judge["weights"], np.float32), judge["bias"], **options)
    return RULES[kind](**options)


def rule_rows(pc) -> list[tuple[str, str, dict]]:
    """A pair config's rules, then one AutoJudge row per threshold."""
    return [*pc.rules, *((f"AutoJudge P(important)<{t}", "autojudge", {"threshold": t})
                         for t in pc.judge_thresholds)]


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


def target_nll(params, config, prompts: list[list[int]], outs: list[list[int]]) -> float:
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
    logits, _ = forward(params, jnp.asarray(tokens), config=config,
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


def make_draft(target, spec: str):
    """(params, config, recipe) of a draft of `target` (anything with `params` and
    `config`): "first:N" is its first N blocks (`early_exit_draft`), "draft" the shipped
    one-block arithmetic draft, any other spec a weight-quantized copy of the target."""
    if spec.startswith("first:"):
        params, config = early_exit_draft(target.params, int(spec.split(":")[1]),
                                          config=target.config)
        return params, config, None
    if spec == "draft":
        draft = effjax.zoo.load("arith_draft")
        return draft.params, draft.config, None
    r = recipe(parse_format_spec(spec))
    return quantize_params(target.params, r), target.config, r


def smollm2_pair(pc) -> Pair:
    """A zoo LM (`pc.model`, SmolLM2 by default) on prose (WikiText-2 test paragraphs) and
    two-operand arithmetic questions; AutoJudge mined on other arithmetic questions."""
    lm = effjax.load(pc.model)
    corpus = effjax.data.load_corpus(pc.prose_corpus, split=pc.prose_split)
    tasks = arithmetic_tasks(pc.arith_prompts, pc.arith_seed)
    answers = [a for _, a in tasks]
    first = lambda toks: first_integer(lm.tokenizer.decode(toks))  # noqa: E731
    domains = {
        "prose": Domain(prose_prompts(lm, corpus.texts, pc.prose_prompts, pc.prompt_tokens),
                        None, True, f"{pc.prose_prompts} WikiText-2 {pc.prose_split} "
                        f"paragraphs cut to {pc.prompt_tokens} tokens"),
        "arithmetic": Domain(
            [lm.tokenizer(q)["input_ids"] for q, _ in tasks],
            lambda outs: float(np.mean([first(o) == a for o, a in zip(outs, answers,
                                                                      strict=True)])),
            False, f"{pc.arith_prompts} questions (sums of two-digit numbers, products of a "
            "two-digit and a one-digit number); the answer's first integer must equal the "
            "result")}
    judge = [lm.tokenizer(q)["input_ids"] for q, _ in arithmetic_tasks(pc.judge_prompts,
                                                                     pc.judge_seed)]
    return Pair(f"{pc.model} (float32)", lm.params, lm.config,
                [(label, spec, make_draft(lm, spec)) for label, spec in pc.drafts], domains,
                judge, first, -1, pc,
                (pc.model, pc.k, pc.prose_prompts, pc.prompt_tokens, pc.arith_prompts,
                 pc.arith_seed, pc.max_new_tokens), (pc.judge_prompts, pc.judge_seed))


def arith_pair(pc) -> Pair:
    """The reasoning teacher and its drafts on arithmetic test problems at `levels` and at
    `shift_levels`; AutoJudge mined on training problems at `levels`."""
    teacher = effjax.zoo.load("arith_teacher")
    target = types.SimpleNamespace(params=teacher.params, config=teacher.config)
    tok = arithmetic.CharTokenizer()
    lv = lambda levels: "level " + "/".join(map(str, levels))  # noqa: E731

    def domain(levels, shifted):
        items = arithmetic.problems(pc.seed, pc.problems, split="test", levels=levels)
        return Domain([tok.encode(p.prompt) for p in items],
                      lambda outs: arithmetic.exact_match([tok.decode(o) for o in outs], items),
                      shifted, f"{pc.problems} test problems at {lv(levels)} (exact match of "
                      "the answer after '#')")

    judge = arithmetic.problems(pc.judge_seed, pc.judge_problems, split="train",
                                levels=pc.levels)
    drafts = [(label, spec, make_draft(target, spec)) for label, spec in pc.drafts]
    return Pair("the arithmetic teacher (4 blocks, hidden 128, char vocabulary)", teacher.params,
                teacher.config, drafts,
                {f"arithmetic, {lv(pc.levels)}": domain(pc.levels, False),
                 f"arithmetic, {lv(pc.shift_levels)}": domain(pc.shift_levels, True)},
                [tok.encode(p.prompt) for p in judge],
                lambda toks: arithmetic.parse_answer(tok.decode(toks)), arithmetic.EOS_ID, pc,
                ("arith", pc.k, pc.problems, tuple(pc.levels), tuple(pc.shift_levels), pc.seed,
                 pc.max_new_tokens), (pc.judge_problems, pc.judge_seed, tuple(pc.levels)))


PAIRS = {"smollm2": smollm2_pair, "arith": arith_pair}


def train_draft_judge(pair: Pair, draft, draft_config, draft_recipe) -> dict:
    """AutoJudge for one draft: mismatches mined on the pair's judge prompts (other than the
    evaluated ones), then the judge fitted to them."""
    mined = mine_mismatches(pair.params, pair.config, draft, draft_config, pair.judge_prompts,
                            pair.answer, max_new_tokens=pair.settings.max_new_tokens,
                            draft_recipe=draft_recipe, eos_id=pair.eos_id)
    out = {"mismatches": len(mined.important), "important": int(mined.important.sum())}
    try:
        w, b = train_judge(mined.features, mined.important)
    except ValueError as e:  # one class only: no judge to train
        return {**out, "error": str(e)}
    fit = np.mean((mined.features @ w + b > 0) == mined.important)
    return {**out, "weights": w.tolist(), "bias": b, "train_accuracy": float(fit)}


def _key(pair_or_fields, *parts) -> str:
    fields = pair_or_fields.fields if isinstance(pair_or_fields, Pair) else pair_or_fields
    return cell_key(*parts, *fields)


def _judge_key(pair: Pair, spec: str) -> str:
    return _key(pair, "judge", spec, *pair.judge_fields)


def run_pair(pair: Pair, cache, config) -> None:
    """Runs a pair's missing rows into `cache` (`Cells`, saved after each)."""
    pc, n = pair.settings, pair.settings.max_new_tokens
    sampling = SamplingConfig(temperature=1.0)
    refs, timings = {}, {}
    for name, dom in pair.domains.items():
        greedy, g_sec, _ = timed_call(lambda p=dom.prompts: generate(
            pair.params, p, config=pair.config, max_new_tokens=n, eos_id=pair.eos_id),
            config.repeats)
        sampled, s_sec, _ = timed_call(lambda p=dom.prompts: generate(
            pair.params, p, max_new_tokens=n, eos_id=pair.eos_id,
            sampling=sampling, key=jax.random.PRNGKey(1), config=pair.config), config.repeats)
        refs[name], timings[name] = greedy, {"greedy": g_sec, "sampling": s_sec}
        cache.compute(_key(pair, name, "target"), lambda dom=dom, g=greedy, s=sampled,
                      t=timings[name]: _target_cell(pair, dom, g, s, t))
    for draft_label, spec, (draft, draft_config, r) in pair.drafts:
        if pc.judge_thresholds:
            cache.compute(_judge_key(pair, spec), lambda d=draft, dc=draft_config, r=r:
                          train_draft_judge(pair, d, dc, r))
        judge = cache.get(_judge_key(pair, spec))
        for label, kind, options in rule_rows(pc):
            if kind == "autojudge" and "weights" not in judge:
                continue
            rule = make_rule(kind, dict(options), judge)
            for name, dom in pair.domains.items():
                baseline = timings[name]["sampling" if kind == "exact" else "greedy"]
                cache.compute(_key(pair, name, spec, kind, dict(options)),
                              lambda dom=dom, rule=rule, draft=(draft, draft_config, r),
                              ref=refs[name], base=baseline: _rule_cell(
                                  pair, dom, rule, draft, ref, base, config.repeats),
                              log=f"{name} {draft_label} {label}")


def _target_cell(pair: Pair, dom: Domain, greedy: list[list[int]], sampled: list[list[int]],
                 seconds: dict[str, float]) -> dict:
    """Target-only decoding on one domain: its greedy and sampled outputs scored, and
    `seconds` ({"greedy", "sampling"}) they took."""
    def nll(outs):
        return target_nll(pair.params, pair.config, dom.prompts, outs)

    def accuracy(outs):
        return None if dom.accuracy is None else dom.accuracy(outs)

    return {"greedy_seconds": seconds["greedy"], "sampling_seconds": seconds["sampling"],
            "nll": nll(greedy), "sampling_nll": nll(sampled), "accuracy": accuracy(greedy),
            "sampling_accuracy": accuracy(sampled)}


def _rule_cell(pair: Pair, dom: Domain, rule, draft, ref: list[list[int]], baseline: float,
               repeats: int) -> dict:
    """One rule with one draft ((params, config, recipe)) on one domain; `ref`: the target's
    greedy output, `baseline`: target-only seconds timed in the same run."""
    params, config, r = draft
    out, sec, _ = timed_call(lambda: speculative_generate(
        pair.params, pair.config, params, config, dom.prompts, k=pair.settings.k, rule=rule,
        max_new_tokens=pair.settings.max_new_tokens, eos_id=pair.eos_id, draft_recipe=r,
        key=jax.random.PRNGKey(1)), repeats)
    return {"seconds": sec, "baseline_seconds": baseline, "speedup": baseline / sec,
            "tokens_per_call": out.tokens_per_call,
            "calls_per_token": float(out.target_calls.sum()) / sum(len(t) for t in out.tokens),
            "agreement": _agreement(out.tokens, ref),
            "nll": target_nll(pair.params, pair.config, dom.prompts, out.tokens),
            "accuracy": None if dom.accuracy is None else dom.accuracy(out.tokens)}


def run(config) -> str:
    """Runs the missing rows of every pair, then writes the report and the plot."""
    config = for_model(config, config.smollm2.model)  # files named for a non-default model
    elapsed = stopwatch()
    cache = load_cells(config.cache)
    pairs = [PAIRS[name](config[name]) for name in config.pairs]
    for pair in pairs:
        run_pair(pair, cache, config)
    report = write_report(config.output, _report(config, pairs, cache, elapsed()))
    _plot(pairs, cache, config.plot)
    return report


def _report(config, pairs: list[Pair], cache: dict, seconds: float) -> str:
    parts = [
        "# Speculative decoding: acceptance rules on two draft/target pairs",
        "",
        f"Command: `python -m experiments.speculative` (config `configs/speculative.py`); jax "
        f"{jax.__version__}, {jax.devices()[0].device_kind}. Per pair, k draft tokens per "
        "round, batch = all prompts of a domain. Speedup: target-only decoding time over "
        f"speculative time, both medians of {config.repeats} timed run(s) after an untimed "
        "one in the same process (greedy decoding for the greedy-family rules, temperature-1 "
        "sampling for exact sampling). Agreement: fraction of generated positions equal to "
        "the target's greedy output. NLL: the target's negative log-likelihood per generated "
        "token. AutoJudge is mined and trained per draft (on prompts other than the evaluated "
        f"ones). This run: {seconds:.0f} s.",
        ""]
    header = ["rule", "draft", "tokens / target call", "target calls / token", "speedup",
              "agreement with greedy", "target NLL / token", "accuracy", "seconds"]
    for pair in pairs:
        pc = pair.settings
        parts += [f"## {pair.name}", "", f"k = {pc.k}, at most {pc.max_new_tokens} new tokens. "
                  "Drafts: " + ", ".join(label for label, _, _ in pair.drafts) + ".", ""]
        for name, dom in pair.domains.items():
            base = cache.get(_key(pair, name, "target"))
            if base is None:
                continue
            rows = [["target only, greedy", "-", "1", "1", "1x", "1", fmt_number(base["nll"]),
                     fmt_number(base["accuracy"]), f"{base['greedy_seconds']:.2f}"],
                    ["target only, sampling T=1", "-", "1", "1", "1x", "-",
                     fmt_number(base["sampling_nll"]), fmt_number(base.get("sampling_accuracy")),
                     f"{base['sampling_seconds']:.2f}"]]
            for draft_label, spec, _ in pair.drafts:
                for label, kind, options in rule_rows(pc):
                    cell = cache.get(_key(pair, name, spec, kind, dict(options)))
                    rows.append([label, draft_label, *["not run"] * 7] if cell is None else [
                        label, draft_label, f"{cell['tokens_per_call']:.2f}",
                        f"{cell['calls_per_token']:.3f}", f"{cell['speedup']:.2f}x",
                        f"{cell['agreement']:.3f}", fmt_number(cell["nll"]),
                        fmt_number(cell["accuracy"]),
                        f"{cell['seconds']:.2f}"])
            parts += [f"### {name}", "", f"{dom.what}.", "", markdown_table(header, rows), ""]
        parts += [_claims(pair, cache), ""]
    return "\n".join(parts)


def _on_kl_curve(kind: str, options: dict) -> bool:
    """Whether a rule row is a point of the forward-KL judge's tau sweep."""
    return kind == "kl" and options.get("direction", "forward") == "forward"


def kl_curve(pair: Pair, cache: dict, name: str, spec: str) -> list[dict]:
    """The forward-KL judge cells of a (domain, draft), by tokens per call."""
    cells = [c for _, kind, o in pair.settings.rules if _on_kl_curve(kind, o)
             if (c := cache.get(_key(pair, name, spec, kind, dict(o)))) is not None]
    return sorted(cells, key=lambda c: c["tokens_per_call"])


def compare_at_matched_speed(curve: list[dict], auto: dict, metric: str, n: int
                             ) -> tuple[str, float | None]:
    """The KL judge against one AutoJudge row at AutoJudge's tokens per call.

    The KL curve's quality is interpolated linearly in tokens per call. Accuracy ties are
    differences within two standard errors of the difference (n prompts); NLL has no noise
    band. Outside the sweep's range the nearest end is compared only where one dominates.

    Returns:
      (verdict, interpolated KL quality or None): verdict "KL better", "tie",
      "AutoJudge better", or "not comparable" (outside the range, neither dominates).
    """
    xs = np.asarray([c["tokens_per_call"] for c in curve])
    ys = np.asarray([c[metric] for c in curve])
    x, y = auto["tokens_per_call"], auto[metric]
    sign = 1 if metric == "accuracy" else -1  # higher accuracy, lower NLL is better
    if x > xs[-1] or x < xs[0]:
        end = -1 if x > xs[-1] else 0
        kl_more = sign * ys[end] >= sign * y  # the end is at least as good ...
        if (end == 0) == bool(kl_more):  # ... and faster (x below), or worse and slower
            return ("KL better" if end == 0 else "AutoJudge better"), None
        return "not comparable", None
    kl = float(np.interp(x, xs, ys))
    diff = sign * (kl - y)
    tie = (within_two_se(kl, y, binomial_se(kl, n), binomial_se(y, n)) if metric == "accuracy"
           else diff == 0)
    return ("tie" if tie else "KL better" if diff > 0 else "AutoJudge better"), kl


def _claims(pair: Pair, cache: dict) -> str:
    pc = pair.settings
    lines = ["### Findings", ""]
    verdicts = {False: [], True: []}  # shifted -> verdicts
    for draft_label, spec, _ in pair.drafts:
        judge = cache.get(_judge_key(pair, spec))
        if judge is not None:
            lines.append(
                f"- {draft_label}: AutoJudge mined {judge['mismatches']} mismatches on "
                f"{len(pair.judge_prompts)} other prompts, {judge['important']} important "
                "(the answer changed); " + (
                    f"judge not trained: {judge['error']}" if "error" in judge else
                    f"fit accuracy {judge['train_accuracy']:.3f} on them"))
        for name, dom in pair.domains.items():
            metric = dom.metric
            greedy = cache.get(_key(pair, name, spec, "greedy", {}))
            curve = kl_curve(pair, cache, name, spec)
            if greedy is None or not curve:
                continue
            lines.append(
                f"- {draft_label}, {name}: greedy match keeps {greedy['tokens_per_call']:.2f} "
                f"tokens per call ({greedy['speedup']:.2f}x), {metric} {greedy[metric]:.3f}; "
                "the KL sweep spans " + ", ".join(
                    f"{c['tokens_per_call']:.2f} ({c['speedup']:.2f}x, {c[metric]:.3f})"
                    for c in curve) + " tokens per call (speedup, " + metric + ").")
            for label, kind, o in rule_rows(pc):
                auto = cache.get(_key(pair, name, spec, kind, dict(o)))
                if kind != "autojudge" or auto is None:
                    continue
                outcome, kl = compare_at_matched_speed(curve, auto, metric, len(dom.prompts))
                verdicts[dom.shifted].append(outcome)
                where = "domain shift: mined elsewhere" if dom.shifted else "in domain"
                lines.append(
                    f"  - {label} ({where}): {auto['tokens_per_call']:.2f} tokens per call, "
                    f"{metric} {auto[metric]:.3f}; KL judge at that speed: "
                    + ("outside the sweep" if kl is None else f"{kl:.3f}") + f": {outcome}.")
    for shifted, what in ((False, "matches or beats AutoJudge"),
                          (True, "is at least as good as AutoJudge under the domain shift")):
        got = [v for v in verdicts[shifted] if v != "not comparable"]
        if not verdicts[shifted]:
            continue
        ok = sum(v in ("KL better", "tie") for v in got)
        lines.append(
            f"- Claim: the KL judge {what} at matched tokens per call: "
            + ("not decided (no comparable row)" if not got else
               f"{verdict(ok == len(got))} ({ok} of {len(got)} "
               f"comparable rows tie or favour the KL judge; "
               f"{sum(v == 'KL better' for v in got)} favour it, "
               f"{len(verdicts[shifted]) - len(got)} not comparable)") + ".")
    return "\n".join(lines)


def _plot(pairs: list[Pair], cache: dict, path: str) -> None:
    plt = pyplot()
    panels = [(pair, name, dom) for pair in pairs for name, dom in pair.domains.items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
    for ax, (pair, name, dom) in zip(axes[0], panels, strict=True):
        metric = dom.metric
        for draft_label, spec, _ in pair.drafts:
            curve = kl_curve(pair, cache, name, spec)
            line = ax.plot([c["tokens_per_call"] for c in curve], [c[metric] for c in curve],
                           "-o", ms=3, label=f"{draft_label}: KL judge (tau sweep)")[0]
            for label, kind, o in rule_rows(pair.settings):
                c = cache.get(_key(pair, name, spec, kind, dict(o)))
                if c is None or _on_kl_curve(kind, o):  # drawn as the curve
                    continue
                marker = {"autojudge": "*", "greedy": "s", "exact": "^"}.get(kind, "D")
                ax.scatter(c["tokens_per_call"], c[metric], marker=marker,
                           color=line.get_color(), s=40 if kind == "autojudge" else 20)
                ax.annotate(label.replace("AutoJudge P(important)", "AJ").replace(
                    " acceptance", "").replace(" judge", ""), (c["tokens_per_call"], c[metric]),
                    fontsize=5)
        ax.set_xlabel("tokens per target call")
        ax.set_ylabel({"nll": "target NLL / token (lower is better)",
                       "accuracy": "exact-match accuracy"}[metric])
        ax.set_title(f"{pair.name.split(' (')[0]}\n{name}", fontsize=8)
        ax.legend(fontsize=5)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    main_with_config(run, "speculative")

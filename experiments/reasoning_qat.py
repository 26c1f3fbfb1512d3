"""Reasoning-QAT: PTQ, QAT (CE and distillation) and GRPO on the in-house arithmetic teacher.

    python -m experiments.reasoning_qat [--config=configs/reasoning_qat.py[:tiny]]
    python -m experiments.reasoning_qat --config=configs/reasoning_qat.py:smollm2  # GSM8K

For each weight format (INT4/3/2 per group of 32 with zero points, MXFP4) of every
projection: RTN and GPTQ (calibrated on arithmetic text, "aligned", or on WikiText-2
prose, "misaligned"); QAT with cross-entropy on the solutions from the aligned GPTQ init;
QAT with forward-KL distillation from the float teacher from the RTN init and from both
GPTQ inits; then GRPO (exact-match reward) from the aligned QAT-KD model. Exact match on
test problems, learning curves, step time against the float step of the same model, and
the paper's four findings stated as confirmed or refuted. Cells are cached in JSON
(resumable); QAT runs checkpoint.
With `config.model` a zoo name or Hugging Face directory, the same grid runs that model on
GSM8K (its tokenizer; calibration on GSM8K solutions vs prose).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable

import jax
import numpy as np

import effjax
from effjax import qat
from effjax.data import arithmetic as ar
from effjax.data import gsm8k, load_corpus
from effjax.quant import quantize_params, recipe
from experiments.common import (
    binomial_se,
    for_model,
    load_cells,
    main_with_config,
    markdown_table,
    median_seconds,
    model_line,
    projection_recipe,
    pyplot,
    save_figure,
    stopwatch,
    verdict,
    write_report,
)

DOMAINS = ("aligned", "misaligned")
# QAT runs: name -> (loss, initialization)
QAT_RUNS = {"qat_ce/gptq-aligned": ("ce", "gptq/aligned"),
            "kd/rtn": ("forward_kl", "rtn"),
            "kd/gptq-aligned": ("forward_kl", "gptq/aligned"),
            "kd/gptq-misaligned": ("forward_kl", "gptq/misaligned")}
ROWS = ("rtn", "gptq/aligned", "gptq/misaligned", *QAT_RUNS, "grpo/kd-gptq-aligned")


@dataclasses.dataclass(frozen=True)
class Task:
    """What the study runs on: a float teacher, its tokenizer and the task's data.

    Attributes:
      name: "arithmetic" (the in-house teacher) or "gsm8k" (a loaded model).
      params, config: the float teacher (the students start from its weights).
      tokenizer: `encode` / `decode`.
      eos_id: the token that ends a solution.
      seq_len, max_new_tokens: training row length, generation budget.
      test, curve, rl: problems for the final score, the learning curves and GRPO.
      batch_at: (seed, position, batch) -> a training batch.
      calib_text: domain -> calibration text.
      info: how the teacher was made.
    """

    name: str
    params: dict
    config: object
    tokenizer: object
    eos_id: int
    seq_len: int
    max_new_tokens: int
    test: list
    curve: list
    rl: list
    batch_at: Callable
    calib_text: Callable
    info: dict


def _prose() -> str:
    return "\n".join(t for t in load_corpus("auto", split="valid").texts if t.strip())


def make_task(config) -> Task:
    """The in-house arithmetic teacher, or (config.model set) a loaded model on GSM8K."""
    n_rl = config.grpo_iterations * config.grpo_prompts
    if config.model == "arith_teacher":
        teacher = qat.load_teacher()
        params, tconfig, info = teacher.params, teacher.config, teacher.extras["info"]
        return Task(
            "arithmetic", params, tconfig, ar.CharTokenizer(), ar.EOS_ID, 64, 48,
            ar.problems(config.data_seed + 1, config.test_problems, split="test"),
            ar.problems(config.data_seed + 2, config.curve_problems, split="test"),
            ar.problems(config.data_seed + 3, n_rl, split="train"),
            lambda seed, pos, b: ar.training_batch(seed, pos, b, 64),
            lambda d, n: ar.problem_text(config.data_seed + 7, n, split="train")
            if d == "aligned" else _prose(), {k: info[k] for k in ("steps", "seconds")})
    lm = effjax.load(config.model)
    tok = gsm8k.HFTokenizer(lm.tokenizer)
    train = gsm8k.load_gsm8k("train")
    test = gsm8k.load_gsm8k("test")
    eos = lm.config.eos_token_id
    return Task(
        "gsm8k", lm.params, lm.config, tok, -1 if eos is None else eos, config.seq_len,
        config.max_new_tokens, test[:config.test_problems],
        test[-config.curve_problems:], train[-n_rl:],
        lambda seed, pos, b: gsm8k.batch_at(train[:-n_rl], tok, seed, pos, b, config.seq_len),
        lambda d, n: "\n\n".join(p.prompt + p.solution for p in train[:400])
        if d == "aligned" else _prose(), {"source": lm.source})


def calibration(config, task: Task, domain: str) -> np.ndarray:
    """GPTQ windows: the task's own worked solutions (aligned) or WikiText-2 prose
    (misaligned), in the task's tokens."""
    n, w = config.calib_windows, config.calib_window
    ids = task.tokenizer.encode(task.calib_text(domain, 4 * n * w))
    if len(ids) < w:
        raise ValueError(f"{domain} calibration text has {len(ids)} tokens, fewer than {w}")
    k = min(n, len(ids) // w)
    return np.asarray(ids[:k * w], np.int32).reshape(k, w)


def _accuracy(params, task: Task, fmt_recipe, items) -> float:
    return qat.accuracy(quantize_params(params, fmt_recipe), items,
                        batch_size=min(256, len(items)), max_new_tokens=task.max_new_tokens,
                        tokenizer=task.tokenizer, eos_id=task.eos_id, config=task.config)


def qat_run(config, task: Task, name: str, fmt: str, init_params, tag: str = ""):
    """One QAT run (checkpointed under its name and tag: a finished run restores its last
    step and trains no more); returns (cell, final params)."""
    loss, _ = QAT_RUNS[name]
    r = projection_recipe(fmt)
    cfg = qat.QATConfig(recipe=r, loss=loss, learning_rate=config.learning_rate,
                        warmup_steps=config.warmup_steps, total_steps=config.steps,
                        temperature=config.temperature)
    state = qat.init_state(init_params, cfg, jax.random.PRNGKey(0), config=task.config)
    directory = (pathlib.Path(config.checkpoints) / task.name
                 / fmt.replace(":", "g").replace("@", "_") / (name.replace("/", "_") + tag))
    curve = [(0, _accuracy(init_params, task, r, task.curve))]
    elapsed = stopwatch()
    with qat.Checkpointer(directory, save_every=max(1, config.steps // 3), max_to_keep=1) as ck:
        state, history = qat.fit(
            qat.make_train_step(task.config, cfg), state,
            lambda pos: task.batch_at(config.data_seed, pos, config.batch_size),
            num_steps=config.steps, teacher=task.params if cfg.needs_teacher else None,
            checkpointer=ck, eval_fn=lambda s: _accuracy(s.params, task, r, task.curve),
            eval_every=config.eval_every, desc=f"{fmt} {name}")
    curve += [(h["step"], h["eval"]) for h in history if "eval" in h]
    cell = {"accuracy": _accuracy(state.params, task, r, task.test), "curve": curve,
            "loss": [h["loss"] for h in history], "seconds": elapsed()}
    return cell, state.params


def grpo_run(config, task: Task, fmt: str, start):
    """GRPO from `start` params with the quantized policy; returns the cell."""
    r = projection_recipe(fmt)
    g = qat.GRPOConfig(recipe=r, group_size=config.grpo_group,
                       max_new_tokens=task.max_new_tokens,
                       temperature=config.grpo_temperature, kl_coef=config.grpo_kl,
                       learning_rate=config.grpo_learning_rate,
                       total_steps=config.grpo_iterations, inner_steps=2)
    state = qat.init_state(start, g.optimizer_config(), jax.random.PRNGKey(1),
                           config=task.config)
    step = qat.make_grpo_step(task.config, g)
    tok = task.tokenizer
    rewards, kls, elapsed = [], [], stopwatch()
    for it in range(config.grpo_iterations):
        chunk = task.rl[it * config.grpo_prompts:(it + 1) * config.grpo_prompts]

        def reward(i, completion, chunk=chunk):
            return float(ar.parse_answer(tok.decode(completion)) == chunk[i].answer)

        state, m = qat.grpo_iteration(step, state, start, [tok.encode(p.prompt) for p in chunk],
                                      config=task.config, grpo=g, reward=reward,
                                      eos_id=task.eos_id)
        rewards.append(m["reward"])
        kls.append(m["kl"])
        print(f"grpo {fmt} iteration {it + 1}: reward {m['reward']:.3f} kl {m['kl']:.4f}",
              flush=True)
    return {"accuracy": _accuracy(state.params, task, r, task.test), "rewards": rewards,
            "kl": kls, "seconds": elapsed()}


def step_times(config, task: Task, fmt: str) -> dict:
    """Median step time of QAT-KD, float KD and float CE steps on the same batch."""
    out = {}
    for name, r, loss in (("qat_kd", projection_recipe(fmt), "forward_kl"),
                          ("float_kd", None, "forward_kl"), ("float_ce", None, "ce")):
        cfg = qat.QATConfig(recipe=r, loss=loss, total_steps=config.timing_steps + 1)
        state = qat.init_state(task.params, cfg, jax.random.PRNGKey(0), config=task.config)
        step = qat.make_train_step(task.config, cfg)
        batch = task.batch_at(0, 0, config.batch_size)
        teacher = None if loss == "ce" else task.params

        def one_step(step=step, batch=batch, teacher=teacher):
            nonlocal state
            state, metrics = step(state, batch, teacher)
            jax.block_until_ready(metrics)

        out[name] = float(median_seconds(one_step, config.timing_steps))
        out[f"{name}_compilations"] = step._cache_size()
    return out


def steps_to(curve, target: float) -> int | None:
    """First step of a learning curve at or above target (None if never)."""
    return next((s for s, a in curve if a >= target), None)


def _teacher(config, task: Task) -> dict:
    """The float teacher's exact match on the test problems (and, for the arithmetic
    teacher, on harder level-4 problems than any it was trained on)."""
    cell = {"accuracy": _accuracy(task.params, task, recipe(), task.test),
            "train_info": task.info}
    if task.name == "arithmetic":
        cell["level4"] = _accuracy(task.params, task, recipe(), ar.problems(
            config.data_seed + 4, min(200, config.test_problems), split="test", levels=(4,)))
    return cell


def run(config) -> str:
    """Runs (or resumes) the grid, then writes the report and the plot; returns the report."""
    config = for_model(config)  # files named for a non-default model
    task = make_task(config)
    cells = load_cells(config.cache)
    if config.compute:
        cells.compute("teacher", lambda: _teacher(config, task))
        calib = {d: calibration(config, task, d) for d in DOMAINS}
        aligned_inits = {}  # format -> the aligned GPTQ start, reused by the longer runs
        for fmt in config.formats:
            r = projection_recipe(fmt)
            ptq = {"rtn": qat.ptq_quantize(task.params, "rtn", r, config=task.config)}
            for d in DOMAINS:
                ptq[f"gptq/{d}"] = qat.ptq_quantize(task.params, "gptq", r,
                                                    calib[d], config=task.config)
            for name, params in ptq.items():  # the PTQ models themselves (QArray kernels)
                cells.compute(f"{fmt}|{name}", lambda p=params, r=r: {
                    "accuracy": _accuracy(p, task, r, task.test)})
            inits = {k: qat.dequantize_params(v) for k, v in ptq.items()}  # QAT starts
            aligned_inits[fmt] = inits["gptq/aligned"]
            for name, (_, init) in QAT_RUNS.items():
                cells.compute(f"{fmt}|{name}", lambda n=name, f=fmt, p=inits[init]:
                              qat_run(config, task, n, f, p)[0])
            cells.compute(f"{fmt}|grpo/kd-gptq-aligned", lambda f=fmt, p=inits["gptq/aligned"]:
                          grpo_run(config, task, f, qat_run(  # the QAT-KD run's last checkpoint
                              config, task, "kd/gptq-aligned", f, p)[1]))
        cells.compute("timing", lambda: step_times(config, task, config.formats[0]))
        for fmt, lr, steps in config.long_runs:  # QAT-KD from GPTQ with a larger budget
            cells.compute(f"{fmt}|kd/gptq-aligned|lr={lr:g},steps={steps}",
                          lambda f=fmt, lr=lr, steps=steps: _long_run(
                              config, task, f, lr, steps, aligned_inits, calib["aligned"]))
    text = write_report(config.output, report(config, cells))
    plot(config, cells)
    return text


def _long_run(config, task: Task, fmt: str, lr: float, steps: int, aligned_inits: dict,
              calib: np.ndarray) -> dict:
    """QAT-KD from the aligned GPTQ init with learning rate `lr` for `steps` steps."""
    init = aligned_inits.get(fmt) or qat.ptq_init(task.params, "gptq", projection_recipe(fmt),
                                                   calib, config=task.config)
    longer = config.copy_and_resolve_references()
    with longer.unlocked():
        longer.learning_rate, longer.steps = lr, steps
        longer.eval_every = max(config.eval_every, steps // 12)
    return qat_run(longer, task, "kd/gptq-aligned", fmt, init, tag=f"_lr{lr:g}_{steps}")[0]


def findings(config, cells) -> list[str]:
    """The paper's four findings, each confirmed or refuted on these cells."""
    fmts = [f for f in config.formats if f"{f}|grpo/kd-gptq-aligned" in cells]
    if not fmts:
        return ["(no complete format yet)"]
    acc = {(f, m): cells[f"{f}|{m}"]["accuracy"] for f in fmts for m in ROWS}
    out = []
    kd_wins = [f for f in fmts if acc[f, "kd/gptq-aligned"] >= acc[f, "qat_ce/gptq-aligned"]]
    out.append("1. Distillation is the robust QAT objective: "
               f"{verdict(len(kd_wins) == len(fmts), bold=True)}"
               f" — QAT-KD >= QAT-CE (same GPTQ init) in {len(kd_wins)} of {len(fmts)} formats ("
               + ", ".join(f"{f}: {100 * acc[f, 'kd/gptq-aligned']:.1f} vs "
                           f"{100 * acc[f, 'qat_ce/gptq-aligned']:.1f}" for f in fmts) + ").")
    half = []
    for f in fmts:
        target = cells[f"{f}|kd/rtn"]["curve"][-1][1]
        s = steps_to(cells[f"{f}|kd/gptq-aligned"]["curve"], target)
        half.append((f, s, s is not None and s <= config.steps / 2))
    out.append("2. PTQ (GPTQ) is the right initialization: "
               f"{verdict(all(h for *_, h in half), bold=True)}"
               " — steps for KD from GPTQ init to reach KD-from-RTN's final curve accuracy ("
               f"target: at most {config.steps // 2} of {config.steps}): "
               + ", ".join(f"{f}: {s if s is not None else 'never'}" for f, s, _ in half) + ".")
    rl = [(f, acc[f, "kd/gptq-aligned"], acc[f, "grpo/kd-gptq-aligned"]) for f in fmts]
    rl_ok = all(a2 >= a1 for _, a1, a2 in rl)
    out.append("3. RL works on quantized models after a good cold start: "
               f"{verdict(rl_ok, bold=True)}"
               " — exact match before -> after GRPO: "
               + ", ".join(f"{f}: {100 * a1:.1f} -> {100 * a2:.1f}" for f, a1, a2 in rl) + ".")
    conv = []
    for f in fmts:
        ca, cm = (cells[f"{f}|kd/gptq-{d}"]["curve"] for d in DOMAINS)
        target = 0.95 * min(ca[-1][1], cm[-1][1])
        conv.append((f, steps_to(ca, target), steps_to(cm, target)))
    ok = all(a is not None and (m is None or a <= m) for _, a, m in conv) and any(
        a is not None and (m is None or a < m) for _, a, m in conv)
    out.append(f"4. Aligned calibration speeds QAT convergence: {verdict(ok, bold=True)}"
               " — steps to 95% of the lower final curve accuracy, aligned vs misaligned GPTQ "
               "init: " + ", ".join(f"{f}: {a} vs {m}" for f, a, m in conv) + ".")
    return out


def report(config, cells) -> str:
    t = cells.get("teacher", {})
    teacher = t.get("accuracy", float("nan"))
    if config.model == "arith_teacher":
        what = ("the in-house arithmetic teacher", "Teacher: 4-layer decoder (hidden 128, char "
                "vocabulary), trained in-house (`effjax.qat.train_teacher`).",
                "test problems (levels 1-3, greedy)", "arithmetic solutions")
    else:
        what = (f"{config.model} on GSM8K", f"Teacher: {config.model} in float32.",
                "GSM8K test problems (greedy)", "GSM8K training solutions")
        what = (what[0], f"{model_line(config.model)} {what[1]}", *what[2:])
    lines = [f"# Reasoning-QAT on {what[0]}", "",
             "Command: `python -m experiments.reasoning_qat` (cells cached in "
             f"`{config.cache}`). {what[1]} Weights of every attention/MLP "
             "projection quantized (embedding and head float); exact match on "
             f"{config.test_problems} {what[2]}. QAT: "
             f"{config.steps} steps x {config.batch_size} problems, AdamW "
             f"{config.learning_rate:g}, warm-up {config.warmup_steps} + cosine; GRPO: "
             f"{config.grpo_iterations} iterations x {config.grpo_prompts} prompts x "
             f"{config.grpo_group} samples, 2 updates each, lr {config.grpo_learning_rate:g}, "
             f"KL {config.grpo_kl:g}. GPTQ calibration: {config.calib_windows} windows of "
             f"{config.calib_window} tokens of {what[3]} (aligned) or WikiText-2 prose "
             "(misaligned).", "",
             f"Teacher (float32): **{100 * teacher:.1f}%** exact match on the test set"
             + (f"; {100 * t['level4']:.1f}% on harder level-4 problems (never trained on)"
                if "level4" in t else "") + ".", ""]
    fmts = list(config.formats)
    rows = []
    for m in ROWS:
        row = [m]
        for f in fmts:
            c = cells.get(f"{f}|{m}")
            share = f" ({100 * c['accuracy'] / teacher:.0f}%)" if c and teacher > 0 else ""
            row.append("not run" if c is None else f"{100 * c['accuracy']:.1f}{share}")
        rows.append(row)
    lines += ["## Exact match % (fraction of the teacher's)", "",
              markdown_table(["method"] + fmts, rows), ""]
    curve_rows = []
    for f in fmts:
        for m in QAT_RUNS:
            c = cells.get(f"{f}|{m}")
            if c:
                pts = {s: a for s, a in c["curve"]}
                marks = sorted({0, config.steps // 4, config.steps // 2, config.steps})
                curve_rows.append([f, m] + [f"{100 * pts[s]:.1f}" if s in pts else "-"
                                            for s in marks] + [f"{c['seconds']:.0f}"])
    if curve_rows:
        marks = sorted({0, config.steps // 4, config.steps // 2, config.steps})
        lines += [f"## Learning curves (exact match % on {config.curve_problems} other test "
                  "problems)", "",
                  markdown_table(["format", "run"] + [f"step {s}" for s in marks] + ["seconds"],
                                 curve_rows), ""]
    grpo_rows = [[f, f"{c['rewards'][0]:.3f}", f"{np.mean(c['rewards'][-5:]):.3f}",
                  f"{c['kl'][-1]:.4f}", f"{c['seconds']:.0f}"]
                 for f in fmts if (c := cells.get(f"{f}|grpo/kd-gptq-aligned"))]
    if grpo_rows:
        lines += ["## GRPO on the quantized policy", "",
                  markdown_table(["format", "reward (first iteration)",
                                  "reward (mean of last 5)", "KL to reference (last)",
                                  "seconds"], grpo_rows), ""]
    if "timing" in cells:
        tm = cells["timing"]
        lines += ["## Step time (same run, same batch, median of "
                  f"{config.timing_steps} steps, {fmts[0]} weights)", "",
                  markdown_table(["step", "ms", "ratio to float KD", "compilations"], [
                      [n, f"{1e3 * tm[n]:.1f}", f"{tm[n] / tm['float_kd']:.2f}",
                       tm[f"{n}_compilations"]] for n in ("qat_kd", "float_kd", "float_ce")]),
                  ""]
    long_rows = [[k.split("|")[0], k.split("|")[2], f"{100 * c['accuracy']:.1f}",
                  f"{100 * c['accuracy'] / teacher:.0f}%" if teacher > 0 else "-",
                  f"{c['seconds']:.0f}"]
                 for k, c in cells.items() if k.count("|") == 2]
    if long_rows:
        lines += ["## QAT-KD from GPTQ (aligned) with a larger budget", "",
                  markdown_table(["format", "run", "exact match %", "of teacher", "seconds"],
                                 long_rows), ""]
    se = 100 * binomial_se(0.5, config.test_problems)
    lines += ["## Findings", "", f"(One standard error of an exact-match figure on "
              f"{config.test_problems} problems is at most {se:.1f} points.)", "",
              *findings(config, cells), ""]
    return "\n".join(lines)


def plot(config, cells) -> None:
    plt = pyplot()
    fmts = [f for f in config.formats if any(f"{f}|{m}" in cells for m in QAT_RUNS)]
    if not fmts:
        return
    fig, axes = plt.subplots(1, len(fmts), figsize=(4.2 * len(fmts), 3.6), squeeze=False)
    teacher = cells.get("teacher", {}).get("accuracy")
    for ax, f in zip(axes[0], fmts, strict=True):
        for m in QAT_RUNS:
            c = cells.get(f"{f}|{m}")
            if c:
                s, a = zip(*c["curve"], strict=True)
                ax.plot(s, [100 * x for x in a], marker=".", label=m)
        if teacher is not None:
            ax.axhline(100 * teacher, color="k", ls="--", lw=1, label="teacher (float)")
        ax.set_title(f)
        ax.set_xlabel("QAT step")
        ax.set_ylim(0, 100)
    axes[0][0].set_ylabel("exact match %")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, config.plot)


if __name__ == "__main__":
    main_with_config(run, "reasoning_qat")


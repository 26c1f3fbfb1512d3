"""The MXFP PTQ study reproduced on SmolLM2-135M: PTQ methods under MXFP8 / MXFP4 (and INT,
NVFP4, HiF4 beside them) in weight-only, weight-activation and weight-activation-KV settings.

    python -m experiments.mxfp_ptq_study [--config=configs/mxfp_ptq_study.py[:tiny]]

Each cell quantizes the model with `effjax.ptq.run` (calibration on WikiText-2 valid; a method
written "gptq/seq" calibrates sequentially, layer by layer through the quantized layers) and
reports perplexity on each domain and the mean token KL divergence from the float model.
Cells are saved to a JSON cache as they finish (atomically), so a stopped run resumes.
"""

from __future__ import annotations

import math

import jax
import numpy as np

import effjax
from experiments.common import (
    cell_key,
    cell_value,
    for_model,
    load_cells,
    main_with_config,
    markdown_table,
    model_line,
    percent_change,
    projection_recipe,
    pyplot,
    run_ptq,
    save_figure,
    stopwatch,
    verdict,
    write_report,
)


def _texts(name: str, split: str) -> tuple[str, ...]:
    return effjax.data.load_corpus(name, split=split).texts


def _evaluate(ref, lm, recipe, config, domains) -> dict:
    out = {}
    for (name, _), texts in zip(config.domains, domains, strict=True):
        out[f"ppl {name}"] = effjax.perplexity(
            lm, texts, seq_len=config.eval_seq_len, stride=config.eval_seq_len,
            max_tokens=config.eval_max_tokens, recipe=recipe, progress=False).perplexity
    out["kl"] = effjax.eval.token_kl(ref, lm, domains[0], recipe=recipe,
                                     seq_len=config.eval_seq_len,
                                     max_tokens=config.kl_max_tokens, progress=False)
    return out


def _options(method, config) -> dict:
    opts = config.method_options.get(method)
    return {} if opts is None else dict(opts)


def _cell_key(method, column, config) -> str:
    """What a cell's numbers depend on (a method's options only when it has some)."""
    key = [method, list(column), config.num_windows, config.window, config.eval_seq_len,
           config.eval_max_tokens, config.kl_max_tokens, [list(d) for d in config.domains]]
    opts = _options(method.partition("/")[0], config)
    return cell_key(*key, opts) if opts else cell_key(*key)


def run(config) -> str:
    """Runs the missing cells, then writes the table, the plot and the findings."""
    config = for_model(config)  # files named for a non-default model
    elapsed = stopwatch()
    lm = effjax.load(config.model)
    calib_texts = _texts(config.calib_corpus, config.calib_split)
    domains = [_texts(*d) for d in config.domains]
    cache = load_cells(config.cache)
    float_key = _cell_key("float", ("float32", None, None, None), config)
    cache.compute(float_key, lambda: _evaluate(lm, lm, None, config, domains))
    calib_cache: dict = {}
    not_run = []
    for column in config.columns:
        for method in config.methods:
            key = _cell_key(method, column, config)
            if key in cache:
                continue
            if elapsed() > config.time_budget_s:
                not_run.append(f"{method} / {column[0]}")
                continue
            cache.compute(key, lambda m=method, c=column: _cell(
                lm, m, c, config, calib_texts, domains, calib_cache), log=f"{method} {column[0]}")
    report = _report(config, cache, float_key, not_run, elapsed())
    return write_report(config.output, report)


def _cell(lm, method, column, config, calib_texts, domains, calib_cache) -> dict:
    """One method in one column: perplexities, KL and costs, or the error of a method that
    does not apply to the column's formats."""
    recipe = projection_recipe(*column[1:])
    elapsed = stopwatch()
    try:
        base, _, flag = method.partition("/")  # "gptq/seq": sequential calibration
        res = run_ptq(lm, base, recipe, calib_texts, _options(base, config),
                      num_windows=config.num_windows, window=config.window,
                      calib_cache=calib_cache, sequential=flag == "seq")
        cell = _evaluate(lm, res.lm, recipe, config, domains)
        cell.update(seconds=elapsed(), peak_rss_mb=res.peak_rss_mb,
                    quantize_s=res.seconds["quantization"])
    except ValueError as e:  # a method that does not apply to a format
        cell = {"error": str(e).splitlines()[0][:120]}
    return cell


def _report(config, cache, float_key, not_run, seconds) -> str:
    flt = cache[float_key]
    metrics = [f"ppl {d[0]}" for d in config.domains] + ["kl"]
    cells = {(m, c[0]): cache.get(_cell_key(m, c, config)) for m in config.methods
             for c in config.columns}
    tables = []
    for metric in metrics:
        rows = [["float32", *[flt[metric]] * len(config.columns)]]
        rows += [[m, *[cell_value(cells[m, c[0]], metric) for c in config.columns]]
                 for m in config.methods]
        tables += [f"**{metric}** (float32: {flt[metric]:.4g})", "",
                   markdown_table(["method", *[c[0] for c in config.columns]], rows)]
    _plot(config, cells, flt)
    errors = sorted({f"{m} / {c}: {cell['error']}" for (m, c), cell in cells.items()
                     if cell is not None and "error" in cell})
    return "\n".join([
        f"# MXFP PTQ study on {config.model}",
        "",
        model_line(config.model),
        "",
        "Command: `python -m experiments.mxfp_ptq_study` "
        f"(config `configs/mxfp_ptq_study.py`); jax {jax.__version__}. Calibration: "
        f"{config.num_windows} windows of {config.window} tokens of {config.calib_corpus} "
        f"{config.calib_split}. Perplexity: non-overlapping windows of {config.eval_seq_len} "
        f"over the first {config.eval_max_tokens} tokens of each domain; KL: mean token "
        f"KL(float32 || quantized) over the first {config.kl_max_tokens} tokens of "
        f"{config.domains[0][0]}. This run: {seconds:.0f} s (cells cached from earlier runs "
        "not counted).",
        "",
        *tables,
        _findings(config, cells, flt),
        "",
        "Not applicable: " + ("; ".join(errors) if errors else "none") + ".",
        "",
        "Not run (time budget): " + (", ".join(not_run) if not_run else "none") + ".",
    ])


# The study's paradigms of PTQ methods.
PARADIGMS = {"error compensation": ("gptq", "gptq_scale_opt"),
             "scale migration": ("awq", "smoothquant"),
             "global rotation": ("quarot", "quarot_gptq", "spinquant"),
             "block-wise rotation": ("mr_gptq",), "learned affine": ("flatquant",),
             "scale optimization": ("scale_opt",)}


def _findings(config, cells, flt) -> str:
    """The study's claims, each stated as confirmed, refuted or not measured."""
    metric = f"ppl {config.domains[0][0]}"

    def ppl(method, col):
        cell = cells.get((method, col))
        return None if cell is None or "error" in cell else cell[metric]

    lines = ["", "## Findings"]
    w8a8 = ppl("rtn", "W8A8 MXFP8")
    if w8a8 is None:
        lines.append("- MXFP8 W8A8 near-lossless: not measured.")
    else:
        lines.append(f"- MXFP8 W8A8 is near-lossless (RTN within 1% of float perplexity): "
                     f"{verdict(w8a8 / flt[metric] - 1 <= 0.01)} "
                     f"({percent_change(w8a8, flt[metric])}).")
        rceil = ppl("rtn", "W8A8 MXFP8 rceil")
        if rceil is not None:
            lines.append("  RTN with the rceil scale (no clipping of block maxima): "
                         f"{percent_change(rceil, flt[metric])}.")
        others = sorted((p, f"{m} / {c}") for m in config.methods for c in (
            "W8A8 MXFP8", "W8A8 MXFP8 rceil") if (p := ppl(m, c)) is not None)
        if others:
            p, where = others[0]
            lines.append(f"  Best MXFP8 W8A8 cell: {where}, {percent_change(p, flt[metric])}; "
                         "within 1%: " + (", ".join(w for p, w in others
                                                    if p <= 1.01 * flt[metric]) or "none") + ".")
        near = []
        for c in ("W8A16 MXFP8", "W8A8 INT8"):
            run = {m: p for m in config.methods if (p := ppl(m, c)) is not None}
            if not run:
                continue
            within = sorted((p, m) for m, p in run.items() if p <= 1.01 * flt[metric])
            near.append(f"{c}: " + (", ".join(f"{m} {percent_change(p, flt[metric])}"
                                              for p, m in within) or "none"))
        if near:
            lines.append("  Within 1% elsewhere (where the E4M3 activations are not "
                         "quantized, or are INT8 per token): " + "; ".join(near) + ".")
    ranking = sorted((p, m) for m in config.methods if (p := ppl(m, "W4A4 MXFP4")) is not None)
    if ranking:
        (best, best_m), (worst, worst_m) = ranking[0], ranking[-1]
        lines.append(f"- MXFP4 W4A4 is hard: the best method is {best_m} ({best:.4g}, "
                     f"{percent_change(best, flt[metric], 1)} vs float), the worst {worst_m} "
                     f"({percent_change(worst, flt[metric], 1)}). Ranking: "
                     + " < ".join(f"{m} ({p:.4g})" for p, m in ranking) + ".")
    for col in ("W4A4 MXFP4", "W4A16 MXFP4"):
        best = sorted((min(v), name) for name, methods in PARADIGMS.items()
                      if (v := [p for m in methods if (p := ppl(m, col)) is not None]))
        rtn = ppl("rtn", col)
        if best and rtn is not None:
            lines.append(f"- Paradigms by compatibility with {col} (best method of each, RTN "
                         f"{rtn:.4g}): " + " < ".join(f"{n} ({p:.4g})" for p, n in best)
                         + "; not better than RTN: "
                         + (", ".join(n for p, n in best if p >= rtn) or "none") + ".")
    for setting in ("W4A16", "W4A4"):
        per = [(min(v), c.split(" ", 1)[1], rtn) for c in (
            f"{setting} MXFP4", f"{setting} NVFP4", f"{setting} HiF4", f"{setting} INT4 g128")
            if (rtn := ppl("rtn", c)) is not None
            and (v := [p for m in config.methods if (p := ppl(m, c)) is not None])]
        if len(per) > 1:
            lines.append(f"- 4-bit formats at {setting} (best method; RTN): " + " < ".join(
                f"{f} {b:.4g} ({r:.4g})" for b, f, r in sorted(per)) + ".")
    modes = {c: ppl("rtn", c) for c in ("W4A4 MXFP4", "W4A4 MXFP4 ceil", "W4A4 MXFP4 even",
                                        "W4A4 MXFP4 rceil")}
    if all(v is not None for v in modes.values()):
        spread = max(modes.values()) / min(modes.values()) - 1
        lines.append("- The MX scale is a critical MXFP4 error source: RTN W4A4 perplexity "
                     "across the four scale modes " + ", ".join(
                         f"{k.split()[-1] if k != 'W4A4 MXFP4' else 'floor'} {v:.4g}"
                         for k, v in modes.items()) + f" (spread {spread * 100:.1f}%).")
    pre = [(ppl("rtn", c), ppl("scale_opt", c)) for c in ("W4A16 MXFP4", "W4A4 MXFP4")]
    pre = [(a, b) for a, b in pre if a is not None and b is not None]
    if pre:
        helped = all(b < a for a, b in pre)
        lines.append("- Pre-scale (scale-exponent) optimization mitigates it: "
                     f"{verdict(helped)} (" + "; ".join(
                         f"RTN {a:.4g} -> {b:.4g}" for a, b in pre) + ").")
    seq = [(f"{m[:-4]} / {c[0]}", a, b) for m in config.methods if m.endswith("/seq")
           for c in config.columns
           if (a := ppl(m[:-4], c[0])) is not None and (b := ppl(m, c[0])) is not None]
    if seq:
        lines.append("- Sequential calibration (each layer's statistics through the quantized "
                     "layers before it), whole-model -> sequential: "
                     + "; ".join(f"{w} {a:.4g} -> {b:.4g}" for w, a, b in seq) + ".")
    return "\n".join(lines)


def _plot(config, cells, flt) -> None:
    plt = pyplot()
    metric = f"ppl {config.domains[0][0]}"
    cols = [c[0] for c in config.columns]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(cols) + 3), 4.5))
    width = 0.8 / max(1, len(config.methods))
    for i, m in enumerate(config.methods):
        vals = [cells[m, c][metric] if cells.get((m, c)) and metric in cells[m, c]
                else math.nan for c in cols]
        ax.bar(np.arange(len(cols)) + i * width, vals, width, label=m, color=plt.cm.tab20(i))
    ax.axhline(flt[metric], color="k", lw=1, ls="--", label="float32")
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(cols)) + 0.4 - width / 2, cols, rotation=30, ha="right")
    ax.set_ylabel(f"perplexity ({config.domains[0][0]}, log scale)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, config.plot)


if __name__ == "__main__":
    main_with_config(run, "mxfp_ptq_study")

"""The HiFloat study on SmolLM2-135M: HiF8 and HiF4 against FP8, INT, MXFP and NVFP4 on
weights, activations and the KV cache, and inside PTQ methods.

    python -m experiments.hifloat_study [--config=configs/hifloat_study.py[:quick]]

Three parts: (1) per-tensor statistics and each format's quantization SNR on every weight,
activation and KV tensor (`effjax.eval.model_tensor_stats`), split into narrow-range and
high-variance tensors; (2) model cells: each format with round-to-nearest in W8A8 / KV8 and
W4A16 / W4A4 / KV4, perplexity and mean token KL against float32; (3) SmoothQuant, GPTQ and
QuaRot under HiF4 / HiF8 beside RTN. Cells are cached in a JSON file as they finish.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

import effjax
from effjax.eval import TENSOR_KINDS, format_wins, model_tensor_stats
from effjax.formats import parse_format_spec, quantize
from effjax.quant import Recipe, Rule, get_layer
from experiments.common import (
    cell_key,
    cell_value,
    for_model,
    load_cells,
    main_with_config,
    markdown_table,
    model_line,
    ppl_and_kl,
    pyplot,
    run_ptq,
    save_figure,
    stopwatch,
    verdict,
    write_report,
)

SPLITS = ("kurtosis", "dynamic_range", "crest")  # the statistics that split tensors in two

# What each setting quantizes: (weights, activations, KV cache).
SETTINGS = {"W8A8": (True, True, False), "KV8": (False, False, True),
            "W4A16": (True, False, False), "W4A4": (True, True, False),
            "KV4": (False, False, True)}


def _dynamic(spec: str) -> str:
    """Activations and the KV cache get one scale per vector where the weights get one per
    tensor (a dynamic per-tensor scale is refused by `Recipe`)."""
    return spec.replace(":tensor", ":channel")


def setting_recipe(setting: str, spec: str) -> Recipe:
    """The recipe of a setting ("W4A4", "KV8", ...) with one format on every projection."""
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {list(SETTINGS)}, got {setting!r}")
    w, a, kv = SETTINGS[setting]
    dynamic = parse_format_spec(_dynamic(spec))
    rules = (Rule(pattern=r"_proj$", weight=parse_format_spec(spec) if w else None,
                  activation=dynamic if a else None),) if w or a else ()
    return Recipe(rules=rules, kv_cache=dynamic if kv else None)


def _first_layers(lm, n: int | None):
    """The model cut to its first n decoder layers (None: all), for a fast smoke run."""
    if n is None:
        return lm
    if not 1 <= n <= lm.config.num_layers:
        raise ValueError(f"layers must be in [1, {lm.config.num_layers}], got {n}")
    params = {**lm.params, "layers": {i: lm.params["layers"][i] for i in range(n)}}
    return dataclasses.replace(lm, params=params, config=lm.config.first_layers(n))


def _evaluate(ref, lm, recipe, config, eval_texts) -> dict:
    return ppl_and_kl(ref, lm, eval_texts, recipe=recipe, seq_len=config.eval_seq_len,
                      max_tokens=config.eval_tokens)


def _cell(ref, method, setting, spec, config, calib_texts, eval_texts, calib_cache) -> dict:
    recipe = setting_recipe(setting, spec)
    elapsed = stopwatch()
    lm = ref
    if SETTINGS[setting][0]:  # weights quantized (KV-only settings run the float weights)
        lm = run_ptq(ref, method, recipe, calib_texts, {}, num_windows=config.num_windows,
                     window=config.window, calib_cache=calib_cache).lm
    return {**_evaluate(ref, lm, recipe, config, eval_texts), "seconds": elapsed()}


def _cells(config) -> list[tuple[str, str, str]]:
    """(method, setting, format spec) of every model cell, RTN first."""
    out = [("rtn", s, spec) for s in config.settings8 for _, spec in config.formats8]
    out += [("rtn", s, spec) for s in config.settings4 for _, spec in config.formats4]
    for setting, spec in config.ptq_cells:
        out += [("rtn", setting, spec)] + [(m, setting, spec) for m in config.ptq_methods]
    return list(dict.fromkeys(out))


def _cell_key(config, method, setting, spec) -> str:
    calib = [] if method == "rtn" else [config.calib_corpus, config.num_windows, config.window]
    if setting.startswith("KV"):  # the per-vector KV scale makes /tensor = /channel
        spec = _dynamic(spec)
    return cell_key("cell", method, setting, spec, config.eval_corpus, config.eval_seq_len,
                config.eval_tokens, calib)


def _stats_key(config) -> str:
    return cell_key("stats", [list(f) for f in config.formats8 + config.formats4],
                config.calib_corpus, config.stats_tokens)


def _tensor_stats(lm, config, calib_texts) -> dict:
    formats = {label: parse_format_spec(spec)
               for label, spec in config.formats8 + config.formats4}
    tokens = effjax.models.token_windows(lm, calib_texts, window=config.stats_tokens,
                                         max_windows=1)
    stats = model_tensor_stats(lm, tokens, formats)
    return {name: s._asdict() for name, s in stats.items()}


def bits_per_element(lm, spec: str) -> float:
    """Stored bits per weight element of a format, measured on layer 0's q_proj kernel."""
    kernel = get_layer(lm.params, "layers/0/attn/q_proj")["kernel"]
    return quantize(kernel, parse_format_spec(spec), axis=0).bits_per_element()


def run(config) -> str:
    """Runs the missing parts, then writes the tables, the plot and the claims."""
    config = for_model(config)  # files named for a non-default model
    elapsed = stopwatch()
    lm = _first_layers(effjax.load(config.model), config.layers)
    calib_texts = effjax.data.load_corpus(config.calib_corpus, split=config.calib_split).texts
    eval_texts = effjax.data.load_corpus(config.eval_corpus, split=config.eval_split).texts
    cache = load_cells(config.cache)
    cache.compute(_stats_key(config), lambda: _tensor_stats(lm, config, calib_texts))
    float_key = cell_key("float", config.eval_corpus, config.eval_seq_len, config.eval_tokens)
    cache.compute(float_key, lambda: _evaluate(lm, lm, None, config, eval_texts))
    calib_cache: dict = {}
    for method, setting, spec in _cells(config):
        cache.compute(_cell_key(config, method, setting, spec),
                      lambda m=method, s=setting, f=spec: _cell(
                          lm, m, s, f, config, calib_texts, eval_texts, calib_cache),
                      log=f"{method} {setting} {spec}")
    bits = {spec: bits_per_element(lm, spec) for _, spec in config.formats8 + config.formats4}
    return write_report(config.output, _report(config, cache, float_key, bits, elapsed()))


def _model_table(config, cache, formats, settings, bits) -> str:
    headers = ["format", "bits / weight element"]
    for s in settings:
        headers += [f"{s} ppl", f"{s} KL"]
    rows = []
    for label, spec in formats:
        row = [label, round(bits[spec], 3)]
        for s in settings:
            cell = cache.get(_cell_key(config, "rtn", s, spec))
            row += [cell_value(cell, "ppl"), cell_value(cell, "kl")]
        rows.append(row)
    return markdown_table(headers, rows)


def _label(config, spec) -> str:
    return dict((s, label) for label, s in config.formats8 + config.formats4).get(spec, spec)


def _ptq_table(config, cache) -> str:
    cols = [f"{s} {_label(config, spec)}" for s, spec in config.ptq_cells]
    rows = []
    for m in ("rtn", *config.ptq_methods):
        row = [m]
        for s, spec in config.ptq_cells:
            cell = cache.get(_cell_key(config, m, s, spec))
            row.append("not run" if cell is None else f"{cell['ppl']:.4g} ({cell['kl']:.3g})")
        rows.append(row)
    return markdown_table(["method", *cols], rows)


def _stats_tables(config, stats: dict) -> tuple[list[str], dict]:
    """The SNR tables per format (by tensor kind and by group) and the win counts."""
    typed = {n: effjax.eval.TensorStats(**{**d, "shape": tuple(d["shape"])})
             for n, d in stats.items()}
    values = np.array([getattr(s, config.stats_split_by) for s in typed.values()])
    cut = float(np.median(values))
    group = {n: "high-variance" if getattr(s, config.stats_split_by) > cut else "narrow-range"
             for n, s in typed.items()}
    lines, wins = [], {}
    for title, formats in (("8-bit", config.formats8), ("4-bit", config.formats4)):
        labels = [label for label, _ in formats]
        sub = {n: s._replace(snr_db={k: s.snr_db[k] for k in labels}) for n, s in typed.items()}
        wins[title] = format_wins(sub, by=config.stats_split_by, threshold=cut)
        if title == "8-bit":  # claim 1 under each way of splitting, at each one's median
            wins["8-bit splits"] = {by: format_wins(sub, by=by) for by in SPLITS}
        rows = []
        for label in labels:
            row = [label]
            for kind in TENSOR_KINDS:
                row.append(np.mean([s.snr_db[label] for s in sub.values() if s.kind == kind]))
            for g in ("narrow-range", "high-variance"):
                row += [np.mean([s.snr_db[label] for n, s in sub.items() if group[n] == g]),
                        wins[title][g][label]]
            rows.append(row)
        lines += [f"**{title} formats: mean quantization SNR (dB) and wins (tensors where the "
                  "format has the best SNR)**", "",
                  markdown_table(["format", "weights", "activations", "KV cache",
                                  "narrow-range SNR", "narrow-range wins",
                                  "high-variance SNR", "high-variance wins"], rows), ""]
    counts = {g: sum(v == g for v in group.values()) for g in ("narrow-range", "high-variance")}
    kinds = {k: sum(s.kind == k for s in typed.values()) for k in TENSOR_KINDS}
    medians = {k: float(np.median([getattr(s, k) for s in typed.values()]))
               for k in ("kurtosis", "dynamic_range", "crest")}
    head = (f"{len(typed)} tensors ({kinds['weight']} weights, {kinds['activation']} "
            f"activations, {kinds['kv']} KV); split by {config.stats_split_by} at its median "
            f"{cut:.3g}: {counts['narrow-range']} narrow-range, {counts['high-variance']} "
            f"high-variance. Medians: kurtosis {medians['kurtosis']:.3g}, dynamic range "
            f"{medians['dynamic_range']:.3g} binades, crest factor (blocks of 32) "
            f"{medians['crest']:.3g}.")
    return [head, "", *lines], wins


def _claims(config, cache, wins, flt) -> list[str]:
    out = ["## Claims", ""]
    splits = wins.get("8-bit splits")
    int_labels = [label for label, spec in config.formats8 if spec.startswith("int")]
    if splits and int_labels:
        def supported(w):
            best_narrow = max(w["narrow-range"], key=w["narrow-range"].get)
            best_high = max(w["high-variance"], key=w["high-variance"].get)
            return best_narrow in int_labels and best_high not in int_labels

        def counts(w):
            return "; ".join(f"{g} " + (", ".join(f"{k} {v}" for k, v in w[g].items() if v)
                                         or "none") for g in ("narrow-range", "high-variance"))

        primary = config.stats_split_by
        out.append(
            "1. INT8 suits narrow-range tensors, floating-point formats high-variance ones "
            "(the format with the most best-SNR tensors in each half): "
            f"{verdict(supported(splits[primary]))} with tensors split by "
            f"{primary} ({counts(splits[primary])}). Split by the other statistics: "
            + "; ".join(f"{by}: {verdict(supported(w))} ({counts(w)})"
                        for by, w in splits.items() if by != primary) + ".")
    else:
        out.append("1. INT8 vs floating point by tensor spread: not measured.")
    specs4 = dict(config.formats4)
    ints = [(label, spec) for label, spec in config.formats4 if spec.startswith("int")]
    verdicts = []
    for setting in config.settings4:
        hif = cache.get(_cell_key(config, "rtn", setting, specs4.get("HiF4", "hif4")))
        got = {label: c["ppl"] for label, spec in ints
               if (c := cache.get(_cell_key(config, "rtn", setting, spec)))}
        if hif is not None and got:
            verdicts.append((setting, hif["ppl"], got, all(hif["ppl"] < v for v in got.values())))
    if verdicts:
        ok = all(v[3] for v in verdicts)
        out.append("2. At 4 bits HiF4 avoids the collapse of integer formats (RTN perplexity "
                   f"below every INT4 group size, float {flt['ppl']:.4g}): "
                   f"{verdict(ok)}: " + "; ".join(
                       f"{s} HiF4 {h:.4g} vs " + ", ".join(f"{k} {v:.4g}" for k, v in g.items())
                       for s, h, g, _ in verdicts) + ".")
    else:
        out.append("2. HiF4 vs INT4: not measured.")
    hif_cells = [(s, spec) for s, spec in config.ptq_cells if spec.startswith("hif")]
    per_method = {}
    for m in config.ptq_methods:
        res = []
        for s, spec in hif_cells:
            a = cache.get(_cell_key(config, "rtn", s, spec))
            b = cache.get(_cell_key(config, m, s, spec))
            if a is not None and b is not None:
                res.append((f"{s} {_label(config, spec)}", a["ppl"], b["ppl"]))
        if res:
            per_method[m] = res
    if per_method:
        ok = all(any(b < a for _, a, b in res) for res in per_method.values())
        out.append("3. HiFloat works inside PTQ methods (each method lowers RTN's perplexity "
                   f"in at least one HiFloat setting): {verdict(ok)}: "
                   + "; ".join(f"{m}: " + ", ".join(f"{c} {a:.4g} -> {b:.4g}"
                                                     for c, a, b in res)
                               for m, res in per_method.items()) + ".")
    else:
        out.append("3. HiFloat inside PTQ methods: not measured.")
    return out


def _report(config, cache, float_key, bits, seconds) -> str:
    flt = cache[float_key]
    stats = cache.get(_stats_key(config))
    stat_lines, wins = _stats_tables(config, stats) if stats else (["not measured"], {})
    if stats:
        _plot(config, stats)
    return "\n".join([
        f"# HiFloat study on {config.model}",
        "",
        model_line(config.model),
        "",
        "Command: `python -m experiments.hifloat_study` (config `configs/hifloat_study.py`); "
        f"jax {jax.__version__}. Perplexity and mean token KL(float32 || quantized) from one "
        f"pass over non-overlapping windows of {config.eval_seq_len} tokens of the first "
        f"{config.eval_tokens} tokens of {config.eval_corpus} {config.eval_split}; float32 "
        f"perplexity {flt['ppl']:.4g}. Round to nearest unless stated. Weights are quantized "
        "along the input axis with the format's scale (/tensor or /channel for FP8, per "
        "output channel for INT8); activations and the KV cache with one scale per vector "
        "(token / head) for INT and FP8, the block scales for MX, NVFP4 and HiF4, none for "
        "HiF8. Bits per element are measured on layer 0's q_proj (codes + scales; NVFP4's one "
        "per-tensor float32 not counted). PTQ calibration: "
        f"{config.num_windows} windows of {config.window} tokens of {config.calib_corpus} "
        f"{config.calib_split}. This run: {seconds:.0f} s (cached cells not counted).",
        "",
        "## 8-bit formats", "", _model_table(config, cache, config.formats8, config.settings8,
                                            bits), "",
        "## 4-bit formats", "", _model_table(config, cache, config.formats4, config.settings4,
                                            bits), "",
        "## Inside PTQ methods: perplexity (token KL)", "", _ptq_table(config, cache), "",
        "## Tensor statistics", "",
        f"Every weight, projection input and cached key / value on the first "
        f"{config.stats_tokens} tokens of {config.calib_corpus} {config.calib_split}; SNR = "
        "10 log10(sum x^2 / sum (x - q(x))^2), each tensor quantized along its contraction "
        "axis (`effjax.eval.model_tensor_stats`). Plot: `" + config.plot + "`.", "",
        *stat_lines,
        *_claims(config, cache, wins, flt),
    ])


def _plot(config, stats: dict) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    crest = np.array([d["crest"] for d in stats.values()])
    for ax, (title, formats) in zip(axes, (("8-bit", config.formats8),
                                            ("4-bit", config.formats4)), strict=True):
        for i, (label, _) in enumerate(formats):
            snr = np.array([d["snr_db"][label] for d in stats.values()])
            ax.scatter(crest, np.minimum(snr, 200), s=6, alpha=0.6, label=label,
                       color=plt.cm.tab10(i))
        ax.set_xlabel("mean crest factor, blocks of 32 (max|x| / rms)")
        ax.set_ylabel("quantization SNR (dB)")
        ax.set_title(f"{title} formats, every weight / activation / KV tensor")
        ax.legend(fontsize=7, markerscale=2)
    fig.tight_layout()
    save_figure(fig, config.plot)


if __name__ == "__main__":
    main_with_config(run, "hifloat_study")

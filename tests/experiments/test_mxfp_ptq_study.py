"""The MXFP PTQ study: its report and findings from synthetic cells (fast), and its real loop
on the tiny config (slow)."""

import re

import pytest

from configs.mxfp_ptq_study import get_config
from experiments.mxfp_ptq_study import _cell_key, _report, run


def _cells(config, ppl):
    """A cache with perplexity ppl[(method, column)] on every domain and KL ppl / 100."""
    cache = {}
    for (method, col), p in ppl.items():
        column = next(c for c in config.columns if c[0] == col)
        cache[_cell_key(method, column, config)] = {
            **{f"ppl {d[0]}": p for d in config.domains}, "kl": p / 100}
    return cache


def test_report_states_each_finding(tmp_path):
    config = get_config()
    config.methods = ("rtn", "gptq", "scale_opt", "gptq/seq")
    config.plot = str(tmp_path / "plot.png")
    ppl = {("rtn", "W8A8 MXFP8"): 20.1, ("rtn", "W4A4 MXFP4"): 40.0,
           ("gptq", "W4A4 MXFP4"): 30.0, ("scale_opt", "W4A4 MXFP4"): 35.0,
           ("rtn", "W4A16 MXFP4"): 25.0, ("scale_opt", "W4A16 MXFP4"): 24.0,
           ("rtn", "W4A4 MXFP4 ceil"): 45.0, ("rtn", "W4A4 MXFP4 even"): 38.0,
           ("rtn", "W4A4 MXFP4 rceil"): 39.0, ("gptq/seq", "W4A4 MXFP4"): 29.0,
           ("rtn", "W4A16 NVFP4"): 23.0, ("gptq", "W4A16 NVFP4"): 22.0,
           ("rtn", "W8A16 MXFP8"): 20.1, ("rtn", "W8A8 INT8"): 20.5}
    cache = _cells(config, ppl)
    float_key = _cell_key("float", ("float32", None, None, None), config)
    cache[float_key] = {**{f"ppl {d[0]}": 20.0 for d in config.domains}, "kl": 0.0}
    report = _report(config, cache, float_key, ["x / y"], 1.0)
    assert "near-lossless (RTN within 1% of float perplexity): confirmed (+0.50%)" in report
    assert "Best MXFP8 W8A8 cell: rtn / W8A8 MXFP8, +0.50%; within 1%: rtn / W8A8 MXFP8." in report
    assert "Ranking: gptq/seq (29) < gptq (30) < scale_opt (35) < rtn (40)." in report
    assert "whole-model -> sequential: gptq / W4A4 MXFP4 30 -> 29." in report
    assert "floor 40, ceil 45, even 38, rceil 39 (spread 18.4%)" in report
    assert ("Paradigms by compatibility with W4A4 MXFP4 (best method of each, RTN 40): "
            "error compensation (30) < scale optimization (35); not better than RTN: none."
            ) in report
    assert "mitigates it: confirmed (RTN 25 -> 24; RTN 40 -> 35)" in report
    assert "4-bit formats at W4A16 (best method; RTN): NVFP4 22 (23) < MXFP4 24 (25)." in report
    assert "4-bit formats at W4A4" not in report  # one format measured: nothing to compare
    assert ("INT8 per token): W8A16 MXFP8: rtn +0.50%; W8A8 INT8: none." in report)
    assert re.search(r"^\| gptq \| not run \| not run \| 30 \|", report, flags=re.M)
    assert "Not run (time budget): x / y." in report
    cache[_cell_key("rtn", config.columns[0], config)]["ppl wikitext2"] = 20.5
    cache[_cell_key("rtn", config.columns[-1], config)] = {
        **{f"ppl {d[0]}": 20.1 for d in config.domains}, "kl": 0.01}  # W8A8 MXFP8 rceil
    report = _report(config, cache, float_key, [], 1.0)
    assert "refuted (+2.50%)" in report
    assert "RTN with the rceil scale (no clipping of block maxima): +0.50%." in report
    assert "within 1%: rtn / W8A8 MXFP8 rceil." in report


@pytest.mark.slow
def test_study_tiny(smollm2, tmp_path):
    config = get_config("tiny")
    config.cache, config.output = str(tmp_path / "c.json"), str(tmp_path / "s.md")
    config.plot = str(tmp_path / "s.png")
    report = run(config)
    assert re.search(r"^\| gptq \| [\d.]+ \|$", report, flags=re.M)
    assert (tmp_path / "s.png").stat().st_size > 0
    again = run(config)  # every cell cached: nothing recomputed
    assert again.splitlines()[4:] == report.splitlines()[4:]


@pytest.mark.parametrize("variant", ["core", "modes", "settings", "mxfp8", "formats",
                                     "sequential", "learned", "extra", "kv"])
def test_variants_are_parts_of_the_full_grid(variant):
    full, part = get_config(), get_config(variant)
    assert part.methods and set(part.methods) <= set(full.methods)
    assert part.columns and set(part.columns) <= set(full.columns)
    assert part.cache == full.cache  # the same cells: a variant only chooses which run


def test_unknown_variant():
    with pytest.raises(ValueError, match="unknown mxfp_ptq_study variant 'nope'"):
        get_config("nope")

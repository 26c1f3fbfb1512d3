"""The HiFloat study: recipes, report and claims from synthetic cells (fast), and its real
loop on the quick config (slow)."""

import re

import pytest

from configs.hifloat_study import get_config
from effjax.formats import get_format
from experiments.common import cell_key
from experiments.hifloat_study import _cell_key, _report, _stats_key, run, setting_recipe


def test_setting_recipes():
    r = setting_recipe("W8A8", "fp8_e4m3:tensor")
    rule = r.rules[0]
    assert rule.weight == get_format("fp8_e4m3", granularity="tensor")
    assert rule.activation == get_format("fp8_e4m3", granularity="channel")  # per token
    assert r.kv_cache is None
    r = setting_recipe("W4A16", "int4:16")
    assert r.rules[0].weight == get_format("int4", group_size=16) and r.rules[0].activation is None
    r = setting_recipe("KV4", "hif4")
    assert r.rules == () and r.kv_cache == get_format("hif4")
    with pytest.raises(ValueError, match=r"setting must be one of \['W8A8'"):
        setting_recipe("W4A8", "hif4")


def _stat(kind, kurtosis, snr):
    return {"kind": kind, "shape": [4, 32], "dynamic_range": 1.0, "kurtosis": kurtosis,
            "crest": kurtosis / 2, "snr_db": snr}


def _config(tmp_path):
    config = get_config()
    config.formats8 = (("HiF8", "hif8"), ("INT8 /channel", "int8"))
    config.formats4 = (("HiF4", "hif4"), ("INT4 g32", "int4:32"))
    config.settings8, config.settings4 = ("W8A8",), ("W4A4",)
    config.ptq_methods = ("gptq", "quarot")
    config.ptq_cells = (("W4A4", "hif4"),)
    config.plot = str(tmp_path / "plot.png")
    return config


def test_report_states_each_claim(tmp_path):
    config = _config(tmp_path)
    snr = {"HiF8": 30.0, "INT8 /channel": 40.0, "HiF4": 20.0, "INT4 g32": 18.0}
    hi = {**snr, "HiF8": 45.0}
    cache = {_stats_key(config): {
        "w0": _stat("weight", 3.0, snr), "a0": _stat("activation", 9.0, hi),
        "k0": _stat("kv", 2.0, snr), "a1": _stat("activation", 12.0, hi)}}
    float_key = cell_key("float")
    cache[float_key] = {"ppl": 20.0, "kl": 0.0}
    ppl = {("rtn", "W8A8", "hif8"): 20.5, ("rtn", "W8A8", "int8"): 20.4,
           ("rtn", "W4A4", "hif4"): 30.0, ("rtn", "W4A4", "int4:32"): 90.0,
           ("gptq", "W4A4", "hif4"): 25.0, ("quarot", "W4A4", "hif4"): 31.0}
    for (m, s, spec), p in ppl.items():
        cache[_cell_key(config, m, s, spec)] = {"ppl": p, "kl": p / 100}
    bits = {"hif8": 8.0, "int8": 8.0625, "hif4": 4.5, "int4:32": 5.0}
    report = _report(config, cache, float_key, bits, 1.0)
    assert re.search(r"^\| HiF4 \| 4\.5 \| 30 \| 0\.3 \|$", report, flags=re.M)
    assert re.search(r"^\| gptq \| 25 \(0\.25\) \|$", report, flags=re.M)
    assert "split by kurtosis at its median 6: 2 narrow-range, 2 high-variance" in report
    assert re.search(r"^\| HiF8 \| 30 \| 45 \| 30 \| 30 \| 0 \| 45 \| 2 \|$", report, flags=re.M)
    assert ("1. INT8 suits narrow-range tensors, floating-point formats high-variance ones "
            "(the format with the most best-SNR tensors in each half): confirmed with tensors "
            "split by kurtosis (narrow-range INT8 /channel 2; high-variance HiF8 2). Split by "
            "the other statistics: dynamic_range: refuted (narrow-range HiF8 2, INT8 /channel "
            "2; high-variance none); crest: confirmed (narrow-range INT8 /channel 2; "
            "high-variance HiF8 2).") in report
    assert "(RTN perplexity below every INT4 group size, float 20): confirmed: W4A4 HiF4 30 vs " \
           "INT4 g32 90." in report
    assert ("3. HiFloat works inside PTQ methods (each method lowers RTN's perplexity in at "
            "least one HiFloat setting): refuted: gptq: W4A4 HiF4 30 -> 25; quarot: W4A4 HiF4 "
            "30 -> 31.") in report
    assert (tmp_path / "plot.png").stat().st_size > 0
    del cache[_cell_key(config, "quarot", "W4A4", "hif4")]
    assert "3. HiFloat works inside PTQ methods" in _report(config, cache, float_key, bits, 1.0)
    assert "| quarot | not run |" in _report(config, cache, float_key, bits, 1.0)


def test_kv_cells_share_one_key_for_tensor_and_channel_weight_scales(tmp_path):
    config = _config(tmp_path)
    assert _cell_key(config, "rtn", "KV8", "fp8_e4m3:tensor") == _cell_key(
        config, "rtn", "KV8", "fp8_e4m3:channel")
    assert _cell_key(config, "rtn", "W8A8", "fp8_e4m3:tensor") != _cell_key(
        config, "rtn", "W8A8", "fp8_e4m3:channel")


@pytest.mark.slow
def test_study_quick(smollm2, tmp_path):
    config = get_config("quick")
    config.cache, config.output = str(tmp_path / "c.json"), str(tmp_path / "s.md")
    config.plot = str(tmp_path / "s.png")
    report = run(config)
    num = r"[\d.]+(?:e[+-]\d+)?"  # four layers of SmolLM2: perplexities may be huge
    assert re.search(rf"^\| HiF4 \| 4\.5 \| {num} \| {num} \|$", report, flags=re.M)
    assert re.search(rf"^\| smoothquant \| {num} \({num}\) \|$", report, flags=re.M)
    assert "not run" not in report and "not measured" not in report
    assert (tmp_path / "s.png").stat().st_size > 0
    again = run(config)  # every part cached: nothing recomputed
    assert again.splitlines()[4:] == report.splitlines()[4:]


def test_first_layers_cuts_the_model():
    from experiments.hifloat_study import _first_layers
    from tests.transforms.helpers import tiny_lm

    lm = tiny_lm(tied=True, bias=False)
    cut = _first_layers(lm, 1)
    assert cut.config.num_layers == 1 and sorted(cut.params["layers"]) == [0]
    assert _first_layers(lm, None) is lm
    with pytest.raises(ValueError, match=r"layers must be in \[1, 2\], got 3"):
        _first_layers(lm, 3)

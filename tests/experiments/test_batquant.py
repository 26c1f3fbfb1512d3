"""The BATQuant experiment: report, claim and overhead timing (fast), and its real loop on the
tiny config (slow)."""

import dataclasses
import json
import re

import pytest

from configs.batquant import get_config
from experiments.batquant import _key, _report, overhead, run
from tests.transforms.helpers import tiny_lm


def test_report_states_the_claim_and_recovery():
    config = get_config()
    cache = {_key(config, "float"): {"ppl": 20.0, "kl": 0.0}}
    ppl = {"rtn": 100.0, "quarot": 90.0, "mr_gptq": 30.0}
    for _, method, options in config.rows:
        if method in ppl:
            cache[_key(config, method, dict(options))] = {
                "ppl": ppl[method], "kl": ppl[method] / 100, "online_floats": 0, "seconds": 1.0}
    bat = next(r for r in config.rows if r[0] == "BATQuant")
    cache[_key(config, bat[1], dict(bat[2]))] = {
        "ppl": 25.0, "kl": 0.2, "online_floats": 1234, "seconds": 2.0,
        "learned": {"transform": 5000, "clip": 700}}
    report = _report(config, cache, _key(config, "float"), [["x", 1.0, "0.1", "0.2", "0.3"]], 1)
    assert re.search(r"^\| BATQuant \| 25 \| 0\.2 \| 80\.0% \| 5,000 \+ 700 clip \| 1,234 \| 2 \|$",
                     report, flags=re.M)
    assert "| SpinQuant | not run |" in report
    assert ("Claim: BATQuant is the best W4A4 MXFP4 method here: confirmed (BATQuant 25; best "
            "baseline MR-GPTQ 30;") in report
    cache[_key(config, bat[1], dict(bat[2]))]["ppl"] = 31.0
    assert "refuted (BATQuant 31;" in _report(config, cache, _key(config, "float"), [], 1)


def test_overhead_rows_time_each_transform_against_the_matmul():
    config = get_config("tiny")
    lm = tiny_lm(tied=False, bias=False)  # only its config is used: MX-aligned widths
    lm = dataclasses.replace(lm, config=dataclasses.replace(
        lm.config, hidden_size=64, intermediate_size=128, num_heads=2, head_dim=32))
    rows = overhead(config, lm)
    assert [r[0] for r in rows] == ["q/k/v (64 x 64 -> 128)", "down_proj (64 x 128 -> 64)"]
    assert all(r[1] > 0 and all(float(v) > 0 for v in r[2:]) for r in rows)


def test_compute_false_reports_the_cached_rows_only(smollm2, tmp_path):
    config = get_config("tiny")
    config.cache, config.output = str(tmp_path / "c.json"), str(tmp_path / "b.md")
    config.compute = False
    cache = {_key(config, "float"): {"ppl": 20.0, "kl": 0.0},
             _key(config, "rtn", {}): {"ppl": 90.0, "kl": 1.0, "online_floats": 0,
                                       "seconds": 1.0}}
    (tmp_path / "c.json").write_text(json.dumps(cache))
    report = run(config)
    assert re.search(r"^\| RTN \| 90 \| 1 \| 22\.2% \| - \| 0 \| 1 \|$", report, flags=re.M)
    assert "| BATQuant | not run |" in report
    assert json.loads((tmp_path / "c.json").read_text()) == cache  # nothing computed


@pytest.mark.slow
def test_batquant_tiny(smollm2, tmp_path):
    config = get_config("tiny")
    config.cache, config.output = str(tmp_path / "c.json"), str(tmp_path / "b.md")
    report = run(config)
    assert re.search(r"^\| BATQuant \| [\d.]+ \| [\d.]+ \| [\d.]+% \| [\d,]+ \+ [\d,]+ clip \|",
                     report, flags=re.M)
    assert "Claim: BATQuant is the best W4A4 MXFP4 method here:" in report

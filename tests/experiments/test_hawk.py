"""The HAWK experiment: its report and claims on made-up cells; the real loop (slow)."""

import re

import pytest

from configs.hawk import get_config
from experiments import hawk


def _cells(config, hawk_acc, fastv_acc):
    cells = {"model": {"steps": 10, "batch_size": 4, "learning_rate": 1e-3,
                       "seconds_this_run": 12.0, "resumed_at": 0},
             "head_weights": {"weights": [0.5, 0.25, 0.25, 0.0],
                              "drops": [0.2, 0.1, 0.1, 0.0], "calibration": 16}}
    kinds = {k: 0.5 for k in ("color", "shape", "count", "left", "exists")}
    for split, n in config.splits:
        cells[f"{split}/none"] = {"accuracy": 0.8, "by_kind": kinds, "n": n}
        for m in config.methods:
            for r in config.ratios:
                acc = {"hawk": hawk_acc, "fastv": fastv_acc}.get(m, 0.5)
                cells[f"{split}/{m}/{r}"] = {"accuracy": acc, "by_kind": kinds, "n": n}
    cells["latency/none/0.0"] = {"prefill_s": 0.010, "e2e_s": 0.030, "width": 77,
                                 "kv_bytes": 4000, "e2e_agrees_with_prefill": 1.0}
    for m in config.latency_methods:
        for r in config.latency_ratios:
            c = {"prefill_s": 0.006, "width": 26, "kv_bytes": 1400}
            if m != "fastv":
                c.update(e2e_s=0.024, e2e_agrees_with_prefill=1.0)
            cells[f"latency/{m}/{r}"] = c
    return cells


def test_claims_and_report_read_the_cells():
    config = get_config("tiny")
    good = hawk._report(config, _cells(config, hawk_acc=0.79, fastv_acc=0.6))
    assert good.count("HAWK keeps >= 95% of accuracy at 80% pruning on") == 2
    assert "on test: **confirmed** (98.8%" in good
    assert "HAWK above fastv at every ratio on test: **confirmed** (above at 2 of 2)" in good
    assert "<= 0.75x no pruning: **confirmed** (0.60x; end to end 0.80x; KV cache 0.35x)" in good
    assert re.search(r"^\| hawk \| 79\.0 \(98\.8%\) \| 79\.0 \(98\.8%\) \|$", good, re.M)
    assert "| fastv | 80% | 26 | 6.0 | 0.60x | n/a | n/a |" in good
    bad = hawk._report(config, _cells(config, hawk_acc=0.6, fastv_acc=0.6))
    assert "on hard: **refuted** (75.0%" in bad
    assert "HAWK above fastv at every ratio on hard: **refuted** (above at 0 of 2)" in bad


def test_eval_batches_carry_roles_and_positions():
    (b,) = hawk.eval_batches("hard", 6, 8, seed=0)
    assert b["tokens"].shape[0] == 6 and b["positions"].shape == (3, *b["tokens"].shape)
    assert (b["visual"].sum(1) == hawk.NUM_VISUAL).all() and b["query"].any(1).all()
    assert len(b["kinds"]) == 6


@pytest.mark.slow
def test_hawk_tiny_run(tmp_path):
    config = get_config("tiny")
    config.cache, config.output = str(tmp_path / "c.json"), str(tmp_path / "r.md")
    config.plot = str(tmp_path / "r.png")
    report = hawk.run(config)
    assert (tmp_path / "r.md").read_text() == report and (tmp_path / "r.png").is_file()
    assert "## Claims" in report and "| hawk |" in report

"""The Reasoning-QAT experiment: findings and report from hand-made cells (fast), the real
loop on the tiny config (needs the shipped teacher)."""

import pytest

from configs.reasoning_qat import get_config
from experiments.reasoning_qat import QAT_RUNS, ROWS, findings, report, run, steps_to


def _cells(kd_better=True, grpo_gain=0.02):
    c = get_config()
    c.formats = ("int2:32@asym",)
    cells = {"teacher": {"accuracy": 0.9, "level4": 0.5}}
    f = "int2:32@asym"
    cells[f"{f}|rtn"] = {"accuracy": 0.0}
    cells[f"{f}|gptq/aligned"] = {"accuracy": 0.2}
    cells[f"{f}|gptq/misaligned"] = {"accuracy": 0.05}
    curves = {"kd/rtn": [(0, 0.0), (150, 0.3), (300, 0.6)],
              "kd/gptq-aligned": [(0, 0.2), (75, 0.62), (150, 0.75), (300, 0.8)],
              "kd/gptq-misaligned": [(0, 0.05), (150, 0.5), (300, 0.78)],
              "qat_ce/gptq-aligned": [(0, 0.2), (300, 0.7 if kd_better else 0.85)]}
    for m in QAT_RUNS:
        cells[f"{f}|{m}"] = {"accuracy": curves[m][-1][1], "curve": curves[m], "loss": [1.0],
                             "seconds": 10.0}
    cells[f"{f}|grpo/kd-gptq-aligned"] = {"accuracy": 0.8 + grpo_gain, "rewards": [0.5, 0.6],
                                          "kl": [0.0, 0.01], "seconds": 5.0}
    cells["timing"] = {"qat_kd": 0.02, "float_kd": 0.016, "float_ce": 0.012,
                       "qat_kd_compilations": 1, "float_kd_compilations": 1,
                       "float_ce_compilations": 1}
    return c, cells


def test_steps_to():
    assert steps_to([(0, 0.1), (10, 0.5), (20, 0.9)], 0.5) == 10
    assert steps_to([(0, 0.1)], 0.5) is None


def test_findings_confirm_and_refute():
    c, cells = _cells()
    f = findings(c, cells)
    assert len(f) == 4 and all("**confirmed**" in line for line in f), f
    assert "int2:32@asym: 75" in f[1]  # reaches KD-RTN's 0.6 at step 75 <= 150
    c, cells = _cells(kd_better=False, grpo_gain=-0.1)
    f = findings(c, cells)
    assert "**refuted**" in f[0] and "**refuted**" in f[2] and "**confirmed**" in f[1]


def test_report_lists_every_row():
    c, cells = _cells()
    text = report(c, cells)
    for m in ROWS:
        assert f"| {m} |" in text
    assert "80.0 (89%)" in text and "| qat_kd | 20.0 | 1.25 | 1 |" in text
    assert "Teacher (float32): **90.0%**" in text


@pytest.mark.slow
def test_tiny_run(tmp_path):
    pytest.importorskip("safetensors")
    c = get_config("tiny")
    for k in ("cache", "output", "plot"):
        setattr(c, k, str(tmp_path / pathlib_name(getattr(c, k))))
    c.checkpoints = str(tmp_path / "ckpt")
    run(c)
    text = (tmp_path / pathlib_name(c.output)).read_text()
    assert "| grpo/kd-gptq-aligned |" in text and "not run" not in text
    assert (tmp_path / pathlib_name(c.plot)).stat().st_size > 0
    run(c)  # everything cached: the second run only writes the report


def pathlib_name(path):
    import pathlib

    return pathlib.Path(path).name

"""Smoke test: the full quickstart tables' real loop on the tiny config."""

import re

import pytest

from configs.quickstart_full import get_config
from experiments.quickstart_full import run


@pytest.mark.slow  # ~110 s of compilation
def test_quickstart_tiny(smollm2, tmp_path):
    config = get_config("tiny")
    config.output = str(tmp_path / "quickstart.md")
    report = run(config)
    assert (tmp_path / "quickstart.md").read_text() == report
    rows = re.findall(r"^\| (float32|bfloat16) \| ([\d.]+) \|", report, flags=re.M)
    assert [r[0] for r in rows] == ["float32", "bfloat16"]
    f32, bf16 = (float(r[1]) for r in rows)
    assert 1.0 < f32 < 100.0 and abs(bf16 - f32) / f32 < 0.1
    assert report.count("\n````") == 4  # two generations, fenced
    quant = dict(re.findall(r"^\| (W4A4 MXFP4|W8 INT8|float32) \| [^|]+ \| [^|]+ \| ([\d.]+) \|",
                            report, flags=re.M))
    assert set(quant) == {"float32", "W4A4 MXFP4", "W8 INT8"}
    assert float(quant["W8 INT8"]) < float(quant["W4A4 MXFP4"])  # 8 bits lose less than 4

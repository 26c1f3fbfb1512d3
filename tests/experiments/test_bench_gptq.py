"""Smoke test: the GPTQ benchmark's real loop on the tiny config (slow: whole-model GPTQ)."""

import math
import re

import pytest

from configs.bench_gptq import get_config
from experiments.bench_gptq import run


@pytest.mark.slow
def test_bench_gptq_tiny(smollm2, tmp_path):
    config = get_config("tiny")
    config.output = str(tmp_path / "bench.md")
    report = run(config)
    whole = re.findall(r"^\| mxfp4 \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", report, flags=re.M)
    assert len(whole) == 1
    calib_s, gptq_s, total_s = (float(v) for v in whole[0])
    # total = calibration + GPTQ exactly; the table shows each to 4 significant digits
    assert math.isclose(calib_s + gptq_s, total_s, rel_tol=1e-3)
    assert re.search(r"^\| layers/0/attn/k_proj \| \(576, 192\) \|", report, flags=re.M)

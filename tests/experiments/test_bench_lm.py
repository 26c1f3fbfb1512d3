"""Smoke test (slow: it times PyTorch too): the benchmark's real loop on the tiny config."""

import re

import pytest

from configs.bench_lm import get_config
from experiments.bench_lm import run


@pytest.mark.slow
def test_bench_lm_tiny(smollm2, tmp_path):
    config = get_config("tiny")
    config.output = str(tmp_path / "bench.md")
    report = run(config)
    rows = re.findall(r"^\| (prefill 1x32|greedy decode [^|]+) \| ([\d.e+]+) \| ([\d.e+]+) \| "
                      r"([\d.e+]+) \|", report, flags=re.M)
    assert len(rows) == 2
    for _, ours, theirs, ratio in rows:
        assert float(ours) > 0 and float(theirs) > 0
        assert abs(float(ratio) - float(ours) / float(theirs)) / float(ratio) < 0.01

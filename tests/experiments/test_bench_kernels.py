"""Smoke test: the kernel benchmark's real loop on the tiny config (interpret mode on CPU)."""

import re

from configs.bench_kernels import get_config
from experiments.bench_kernels import run


def test_bench_kernels_tiny(tmp_path):
    config = get_config("tiny")
    config.output = str(tmp_path / "bench.md")
    report = run(config)
    matmuls = re.findall(r"^\| (\d+x256x128 W:[^|]+) \| ([\d.e+-]+) \|", report, flags=re.M)
    assert [m[0] for m in matmuls] == ["1x256x128 W:mxfp4", "1x256x128 W:int4:128",
                                       "40x256x128 W:mxfp4", "40x256x128 W:int4:128",
                                       "40x256x128 W:nvfp4 A:nvfp4"]
    assert all(float(err) < 1e-6 for _, err in matmuls)  # interpret mode: the same sums
    assert len(re.findall(r"^\| \w+ mxfp4 40x256 \| identical \|", report, flags=re.M)) == 3
    assert "Skipped for the time budget (150 s): none." in report

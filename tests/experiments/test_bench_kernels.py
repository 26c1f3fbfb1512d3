"""Smoke test: the kernel benchmark's real loop on the tiny config (interpret mode on CPU)."""

import re

import pytest

from configs.bench_kernels import get_config
from experiments.bench_kernels import run


@pytest.mark.slow  # the fast tier runs the loop through test_bench_kernels_failed_kernel_is_a_row
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
    assert len(re.findall(r"^\| \w+ nvfp4 40x256 \| identical \|", report, flags=re.M)) == 3
    num = r"[\d.e+-]+"
    sweep = re.search(rf"^\| 40x256x128 W:mxfp4 \| (\d+)x128x(\d+) \| {num} \| 40x128x256 \| "
                      rf"{num} \| {num} \| {num} \| {num} \| 4 \|$", report, flags=re.M)
    assert sweep and sweep.group(1) in ("16", "40") and sweep.group(2) in ("128", "256")
    assert "Skipped for the time budget (200 s): none." in report


def test_bench_kernels_failed_kernel_is_a_row(tmp_path):
    config = get_config("tiny")
    config.output = str(tmp_path / "bench.md")
    config.shapes = ((1, 256, 128),)
    config.weight_formats = ("int8", "mxfp4")  # per-channel INT8: dequant_matmul refuses it
    config.quantize_formats = ()
    config.sweep_shapes = ()
    report = run(config)
    assert re.search(r"^\| 1x256x128 W:int8 \| FAILED: ValueError: fmt must be one of", report,
                     flags=re.M)
    assert re.search(r"^\| 1x256x128 W:mxfp4 \| [\d.e+-]+ \|", report, flags=re.M)

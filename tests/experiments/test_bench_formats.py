"""Smoke test: the format benchmark's real loop on the tiny config (peers if installed)."""

import re

from configs.bench_formats import get_config
from experiments.bench_formats import run


def test_bench_formats_tiny(tmp_path):
    config = get_config("tiny")
    config.output = str(tmp_path / "bench.md")
    report = run(config)
    assert (tmp_path / "bench.md").read_text() == report
    rows = re.findall(r"^\| (int4 [^|]+|mxfp4|nvfp4|hif4) \| ([\d.]+) \| ([\d.e+-]+) \| "
                      r"([\d.e+-]+) \| ([\d.e+-]+) \| ([\d.e+-]+) \|", report, flags=re.M)
    assert [r[0] for r in rows] == ["int4 granularity=group group_size=128", "mxfp4", "nvfp4",
                                    "hif4"]
    bits = {r[0].split()[0]: float(r[1]) for r in rows}
    assert bits == {"int4": 4.25, "mxfp4": 4.25, "nvfp4": 4.5, "hif4": 4.5}
    for _, _, ms, gbs, _, err in rows:
        assert abs(64 * 256 * 4 / 1e9 / (float(ms) / 1e3) - float(gbs)) / float(gbs) < 0.01
        assert 0.05 < float(err) < 0.2  # 4-bit relative RMS error on N(0, 1)

"""Smoke test (slow: it times PyTorch too): the benchmark's real loop on the tiny config."""

import re

import pytest

from configs.bench_lm import get_config
from experiments.bench_lm import run

NUMBER = r"(-?[\d.e+-]+)"


@pytest.mark.slow
def test_bench_lm_tiny(smollm2, tmp_path):
    config = get_config("tiny")
    config.output = str(tmp_path / "bench.md")
    report = run(config)
    speed, profile, compile_times, memory = report.split("\n## ")
    rows = re.findall(rf"^\| (prefill 1x32|greedy decode [^|]+) \| {NUMBER} \| {NUMBER} \| "
                      rf"{NUMBER} \|$", speed, flags=re.M)
    assert [r[0] for r in rows] == ["prefill 1x32", "greedy decode after a 8-token prompt"]
    for _, ours, theirs, ratio in rows:
        assert float(ours) > 0 and float(theirs) > 0
        assert abs(float(ratio) - float(ours) / float(theirs)) / float(ratio) < 0.01
    (total, attention, *_), = re.findall(
        rf"^\| prefill 1x32 \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \|$", profile,
        flags=re.M)
    assert float(total) > 0 and float(attention) < float(total)
    times = re.findall(rf"^\| (unrolled \(before\)|layers under scan) \| {NUMBER} \| {NUMBER} \|$",
                       compile_times, flags=re.M)
    assert len(times) == 2 and all(float(x) > 0 for row in times for x in row[1:])
    mib = dict(re.findall(rf"^\| (dense|xla) \| {NUMBER} \|$", memory, flags=re.M))
    assert set(mib) == {"dense", "xla"} and float(mib["xla"]) < float(mib["dense"])

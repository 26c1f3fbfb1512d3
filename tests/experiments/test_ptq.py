"""The per-setting PTQ configs, and the PTQ entry point's real loop on the tiny config (slow)."""

import re

import pytest

from configs.ptq import SETTINGS, get_config


def test_settings_give_the_formats():
    bits = {s: (get_config(s).weight_bits, get_config(s).act_bits, get_config(s).kv_bits)
            for s in SETTINGS}
    assert bits == {"w4a16": (4, None, None), "w8a16": (8, None, None), "w8a8": (8, 8, None),
                    "w4a4": (4, 4, None), "w4a4kv4": (4, 4, 4), "w8a8kv8": (8, 8, 8)}
    assert get_config("w4a4").output == "experiments/results/ptq_w4a4.md"
    with pytest.raises(ValueError, match="unknown ptq setting 'w3a3'"):
        get_config("w3a3")


@pytest.mark.slow
def test_ptq_tiny(smollm2, tmp_path):
    from experiments.ptq import run

    config = get_config("tiny")
    config.output = str(tmp_path / "ptq.md")
    report = run(config)
    assert "weights mxfp4, activations mxfp4, KV cache mxfp4" in report
    assert re.search(r"^\| peak resident memory \(MB\) \| \d+", report, flags=re.M)

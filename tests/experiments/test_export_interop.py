"""export_interop: the nll and comparison helpers, and the real loop on the tiny config."""

import re

import numpy as np
import pytest

from configs.export_interop import get_config
from experiments.export_interop import _compare, _nll, run


def test_nll_is_the_mean_next_token_cross_entropy():
    rng = np.random.default_rng(0)
    logits, tokens = rng.normal(size=(5, 7)).astype(np.float32), np.array([1, 3, 0, 6, 2])
    p = np.exp(logits[:-1]) / np.exp(logits[:-1]).sum(-1, keepdims=True)
    assert _nll(logits, tokens) == pytest.approx(-np.log(p[range(4), tokens[1:]]).mean())


def test_compare_identical_and_shifted_readers():
    rng = np.random.default_rng(1)
    table = rng.normal(size=(9, 11))
    ours = lambda t: table[:len(t)]  # noqa: E731
    windows = [np.arange(6) % 11, np.arange(1, 7) % 11, np.arange(3, 9) % 11]
    same = _compare(ours, ours, windows, [[1, 2, 3]])
    assert same[0] == "0.0e+00" and same[1] == same[2] and same[3].startswith("+0.00e+00")
    # halved logits: the largest difference is half the largest logit
    worse = _compare(ours, lambda t: table[:len(t)] * 0.5, windows, [[1, 2, 3]])
    assert float(worse[0]) == pytest.approx(0.5)


@pytest.mark.slow  # ~3 min: loads, exports and reads SmolLM2 in transformers
def test_export_interop_tiny(smollm2, tmp_path):
    config = get_config("tiny")
    config.output = str(tmp_path / "interop.md")
    report = run(config)
    row = re.search(r"^\| MXFP4 \| mxfp4-pack-quantized \| 210/210 \| 0.0e\+00 \| ([\de.+-]+) \|",
                    report, flags=re.M)
    assert row and float(row.group(1)) < 1e-4

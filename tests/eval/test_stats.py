import numpy as np
import pytest

from effjax.eval import paired_bootstrap


def test_paired_bootstrap():
    b = np.arange(10.0)
    assert paired_bootstrap(b + 0.5, b) == (0.5, 0.5, 0.5)  # a constant difference
    rng = np.random.default_rng(1)
    d = rng.normal(0.3, 1.0, 2000)
    mean, lo, hi = paired_bootstrap(d, np.zeros_like(d))
    half = 1.96 * d.std() / np.sqrt(len(d))  # the normal interval, ~0.044
    assert mean == pytest.approx(d.mean())
    assert abs(lo - (mean - half)) < 0.2 * half and abs(hi - (mean + half)) < 0.2 * half
    with pytest.raises(ValueError, match="same length >= 2"):
        paired_bootstrap([1.0, 2.0], [1.0])

"""Uncertainty of a paired comparison: the bootstrap over windows or items."""

from __future__ import annotations

import numpy as np


def paired_bootstrap(a, b, *, resamples: int = 10000, seed: int = 0
                     ) -> tuple[float, float, float]:
    """Mean of the paired differences a - b and its 95% percentile bootstrap interval,
    resampling the pairs (windows, items) with replacement.

    Args:
      a, b: per-unit values of the two arms on the same units (same length, >= 2).
      resamples: bootstrap resamples.
      seed: the resampling seed.

    Returns:
      (mean difference, 2.5th percentile, 97.5th percentile).

    Raises:
      ValueError: the arms differ in length or hold fewer than two units.
    """
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if np.shape(a) != np.shape(b) or d.ndim != 1 or len(d) < 2:
        raise ValueError(f"a and b must be 1-D of the same length >= 2, got shapes "
                         f"{np.shape(a)} and {np.shape(b)}")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(len(d), size=(resamples, len(d)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)

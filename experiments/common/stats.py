"""The studies' noise bands: standard errors and comparisons within them."""

from __future__ import annotations

import math

from effjax.eval.stats import paired_bootstrap


def binomial_se(p: float, n: int) -> float:
    """The standard error of a rate (an accuracy, a success rate) measured on n trials.

    Args:
      p: the rate, in [0, 1] (0.5 gives the largest error for n).
      n: trials (positive).

    Returns:
      sqrt(p (1 - p) / n).
    """
    return math.sqrt(p * (1 - p) / n)


def within_two_se(a: float, b: float, se_a: float, se_b: float) -> bool:
    """Whether two independent estimates differ by at most two standard errors of their
    difference.

    Args:
      a, b: the estimates.
      se_a, se_b: their standard errors.

    Returns:
      |a - b| <= 2 sqrt(se_a^2 + se_b^2).
    """
    return abs(a - b) <= 2 * math.sqrt(se_a**2 + se_b**2)


__all__ = ["binomial_se", "paired_bootstrap", "within_two_se"]

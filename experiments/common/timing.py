"""Wall-clock timing of the studies' calls."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import NamedTuple


class Timed(NamedTuple):
    """What `timed_call` measured.

    Attributes:
      result: the first (warm-up) call's result.
      seconds: the median wall time of the timed calls after it.
      first_seconds: the wall time of the first call (compilation included).
    """

    result: object
    seconds: float
    first_seconds: float


def stopwatch() -> Callable[[], float]:
    """A clock started now.

    Returns:
      A function giving the seconds since this call (`time.perf_counter`).
    """
    start = time.perf_counter()
    return lambda: time.perf_counter() - start


def timed_call(fn: Callable[[], object], repeats: int) -> Timed:
    """One warm-up call of `fn` (which compiles), then `repeats` timed calls.

    Args:
      fn: the call to time; it must finish its work before returning (block on arrays).
      repeats: timed calls after the warm-up (at least 1).

    Returns:
      `Timed`: the warm-up's result, the median of the timed calls, the warm-up's time.

    Raises:
      ValueError: `repeats` is below 1.
    """
    if repeats < 1:
        raise ValueError(f"expected repeats >= 1, got {repeats}")
    first = stopwatch()
    out = fn()
    first_seconds = first()
    times = []
    for _ in range(repeats):
        elapsed = stopwatch()
        fn()
        times.append(elapsed())
    return Timed(out, statistics.median(times), first_seconds)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """The median wall time of `repeats` calls of `fn` after one warm-up (`timed_call`).

    Args:
      fn: the call to time.
      repeats: timed calls after the warm-up (at least 1).

    Returns:
      Seconds.
    """
    return timed_call(fn, repeats).seconds

"""SwiftMem's temporal index: sorted timelines with O(log N) range queries."""

from __future__ import annotations

import bisect
from collections.abc import Hashable

import numpy as np

ALL = "*"


class TemporalIndex:
    """Sorted (timestamp, episode id) timelines, one for everything and one per key.

    Keys are what episodes are filtered by (a speaker, a session); each timeline is a pair
    of sorted lists, so a range query is two binary searches plus the output.

    Insertion keeps the lists sorted with `bisect.insort` (a memmove, amortized cheap for
    the mostly increasing timestamps of a conversation).
    """

    def __init__(self):
        self._times: dict[Hashable, list[float]] = {ALL: []}
        self._rows: dict[Hashable, list[int]] = {ALL: []}

    def __len__(self) -> int:
        return len(self._times[ALL])

    def add(self, timestamp: float, item: int, keys: tuple[Hashable, ...] = ()) -> None:
        """Puts item (an episode id) at timestamp on the global and each key's timeline."""
        for key in (ALL, *keys):
            times = self._times.setdefault(key, [])
            rows = self._rows.setdefault(key, [])
            at = bisect.bisect_right(times, timestamp)
            times.insert(at, timestamp)
            rows.insert(at, item)

    def remove(self, timestamp: float, item: int, keys: tuple[Hashable, ...] = ()) -> None:
        """Takes item off the timelines it was added to (at the same timestamp)."""
        for key in (ALL, *keys):
            times, rows = self._times[key], self._rows[key]
            lo = bisect.bisect_left(times, timestamp)
            hi = bisect.bisect_right(times, timestamp)
            at = lo + rows[lo:hi].index(item)
            del times[at], rows[at]

    def range(self, start: float | None, end: float | None, key: Hashable = ALL) -> np.ndarray:
        """Items with start <= timestamp < end on a key's timeline, in time order.

        Args:
          start, end: the half-open range; None is unbounded on that side.
          key: a speaker / session key, or `ALL`.

        Returns:
          int64 items (empty for an unknown key).
        """
        if start is not None and end is not None and start > end:
            raise ValueError(f"expected start <= end, got start={start} end={end}")
        times = self._times.get(key)
        if times is None:
            return np.zeros(0, np.int64)
        lo = 0 if start is None else bisect.bisect_left(times, start)
        hi = len(times) if end is None else bisect.bisect_left(times, end)
        return np.asarray(self._rows[key][lo:hi], np.int64)

    def keys(self) -> list[Hashable]:
        return [k for k in self._times if k != ALL]

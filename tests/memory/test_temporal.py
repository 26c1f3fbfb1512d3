"""The temporal index returns exactly what a linear scan returns."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from effjax.memory import TemporalIndex

events = st.lists(st.tuples(st.integers(0, 50).map(float), st.sampled_from("abc"),
                            st.booleans()), max_size=60)
bounds = st.one_of(st.none(), st.integers(-5, 55).map(float))


@settings(max_examples=150, deadline=None)
@given(events, st.lists(st.tuples(bounds, bounds, st.sampled_from(["*", "a", "b", "z"])),
                        min_size=1, max_size=8))
def test_range_equals_linear_scan(evs, queries):
    index, live = TemporalIndex(), {}
    for i, (t, key, _) in enumerate(evs):
        index.add(t, i, (key,))
        live[i] = (t, key)
    for i, (t, key, remove_later) in enumerate(evs):
        if remove_later:
            index.remove(t, i, (key,))
            del live[i]
    assert len(index) == len(live)
    for start, end, key in queries:
        if start is not None and end is not None and start > end:
            with pytest.raises(ValueError, match="start <= end"):
                index.range(start, end, key)
            continue
        got = index.range(start, end, key)
        want = [i for i, (t, k) in live.items() if (key == "*" or k == key)
                and (start is None or t >= start) and (end is None or t < end)]
        assert sorted(got.tolist()) == sorted(want)
        times = [live[i][0] for i in got]
        assert times == sorted(times)
    assert set(index.keys()) <= {"a", "b", "c"}
    assert index.range(None, None, "never-added").dtype == np.int64

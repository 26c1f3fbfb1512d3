"""Synthetic memories are distinct, time-ordered, multi-speaker and reproducible."""

import numpy as np
import pytest

from effjax.memory import synthetic_episodes


def test_synthetic_episodes():
    s = synthetic_episodes(3000, seed=1)
    assert len(s.texts) == len(set(s.texts)) == 3000
    assert np.all(np.diff(s.timestamps) > 0)
    assert len(set(s.speakers)) > 50 and len(set(s.sessions)) >= 150
    for session in set(s.sessions[:200]):  # two speakers per session
        assert len({sp for sp, se in zip(s.speakers, s.sessions, strict=True)
                    if se == session}) == 2
    assert synthetic_episodes(3000, seed=1).texts == s.texts
    assert synthetic_episodes(3000, seed=2).texts != s.texts
    assert synthetic_episodes(0).texts == []
    with pytest.raises(ValueError, match="n >= 0"):
        synthetic_episodes(-1)

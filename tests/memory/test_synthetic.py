"""Synthetic memories are distinct, time-ordered, multi-speaker and reproducible."""

import numpy as np
import pytest

from effjax.memory import corpus_episodes, corpus_sentences, synthetic_episodes


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


def test_corpus_sentences_are_real_distinct_sentences():
    pool = corpus_sentences()
    assert len(pool) == len(set(pool)) > 50_000
    assert all(5 <= len(s.split()) <= 40 for s in pool)
    assert not any("<unk>" in s or " @" in s or "<<" in s for s in pool)
    assert "Weng earns $12 an hour for babysitting." in pool  # GSM8K train, first problems
    assert any("European lobster" in s for s in pool)  # WikiText-2 valid, first article


def test_corpus_episodes():
    pool = set(corpus_sentences())
    n = len(pool) + 3000  # past the pool: pairs of sentences
    s = corpus_episodes(n, seed=1)
    assert len(s.texts) == len(set(s.texts)) == n
    assert set(s.texts[:len(pool)]) == pool
    assert all(any(t.startswith(p) for p in pool) for t in s.texts[-20:])
    assert len(s.speakers) == len(s.sessions) == len(s.timestamps) == n
    assert 1.5778368e9 <= s.timestamps.min() and s.timestamps.max() < 1.5778368e9 + 1828 * 86400
    for session in set(s.sessions[:200]):  # two speakers per session, a minute apart
        rows = [i for i, se in enumerate(s.sessions[:400]) if se == session]
        assert len({s.speakers[i] for i in rows}) == 2
        assert np.all(np.diff(s.timestamps[rows]) == 60.0)
    assert corpus_episodes(500, seed=1).texts == corpus_episodes(500, seed=1).texts
    assert corpus_episodes(500, seed=2).texts != corpus_episodes(500, seed=1).texts
    with pytest.raises(ValueError, match="n >= 0"):
        corpus_episodes(-1)

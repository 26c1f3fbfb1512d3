"""Keyphrases, spherical k-means and the tag DAG's invariants."""

import numpy as np
import pytest

from effjax.memory import (
    STOPWORDS,
    KeyphraseTagger,
    assign,
    build_dag,
    candidates,
    spherical_kmeans,
    words,
)


def test_words_and_candidates():
    assert words("I'm at the LGBTQ  support-group, OK?") == ["i'm", "at", "the", "lgbtq",
                                                             "support-group", "ok"]
    c = candidates("We went kayaking on the lake with my sister")
    assert "kayaking" in c and "lake" in c and "sister" in c
    assert not set(c) & STOPWORDS
    assert "went kayaking" in c and "on the" not in c  # bigrams of kept words only
    assert candidates("the support group meets") == ["support", "group", "meets",
                                                      "support group", "group meets"]


def test_keyphrase_tagger_prefers_rare_words():
    tagger = KeyphraseTagger(max_tags=2)
    corpus = ["I love my dog"] * 20 + ["My dog chased a porcupine"]
    tagger.observe(corpus)
    tags = tagger.tag(["My dog chased a porcupine"])[0]
    rare = {"chased", "porcupine", "dog chased", "chased porcupine"}
    assert len(tags) == 2 and set(tags) <= rare  # never the common "dog"
    with pytest.raises(ValueError, match="max_tags"):
        KeyphraseTagger(max_tags=0)


def _blobs(k=6, per=80, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d))
    x = np.concatenate([c + 0.15 * rng.standard_normal((per, d)) for c in centers])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(k), per)


def test_spherical_kmeans_recovers_blobs_and_assign_is_argmax():
    x, truth = _blobs()
    c = spherical_kmeans(x, 6, iters=25)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1, atol=1e-5)
    got = assign(x, c)
    np.testing.assert_array_equal(got, np.argmax(x @ c.T, axis=1))
    # each true blob maps to one cluster and clusters are distinct
    per_blob = [np.bincount(got[truth == b], minlength=6).max() for b in range(6)]
    assert min(per_blob) == 80 and len(set(got[truth == b][0] for b in range(6))) == 6
    with pytest.raises(ValueError, match="k="):
        spherical_kmeans(x, len(x) + 1)


def test_build_dag_specificity_and_routing():
    x, truth = _blobs(k=9, per=40)
    fine = spherical_kmeans(x, 9, iters=25)
    fine_of = assign(x, fine)
    tags = [[f"blob{b}", "common"] if i % 2 else [f"blob{b}"] for i, b in enumerate(truth)]
    counts = {}
    for ts in tags:
        for t in ts:
            counts[t] = counts.get(t, 0) + 1
    dag = build_dag(x, fine_of, fine, tags, counts)
    assert len(dag.coarse) == 3 and len(dag.fine) == 9
    for parent, child in dag.edges():
        assert dag.sizes[child] <= dag.sizes[parent], (parent, child)
    assert sum(dag.sizes[f"fine:{j}"] for j in range(9)) == len(x)
    assert all(1 <= len(ps) <= 2 for ps in dag.fine_parents)
    # "common" covers 180 episodes, more than any fine topic: never a child of one
    assert not any("common" in kws for kws in dag.fine_keyphrases)
    assert any(f"blob{truth[0]}" in kws for kws in dag.fine_keyphrases)
    # the query's own fine topic comes first when routing with every broad topic
    for i in range(0, len(x), 37):
        assert dag.route(x[i], beam=3, nprobe=2)[0] == np.argmax(fine @ x[i])

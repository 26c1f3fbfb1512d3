"""MemoryStore: search against exhaustive references, restrictions, durability, concurrency."""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from effjax.memory import CorruptStoreError, MemoryStore, SearchResult, synthetic_episodes
from effjax.memory import tags as tags_module

DAY = 86400.0


def _fill(store, n=600, seed=0):
    s = synthetic_episodes(n, seed=seed)
    return store.add_batch(s.texts, speakers=s.speakers, timestamps=list(s.timestamps),
                           sessions=s.sessions), s


def _brute(store, q, k, keep=lambda ep: True):
    eps = [e for e in store.episodes() if keep(e)]
    scores = np.array([store.embedding(e.id) @ q for e in eps])
    order = np.argsort(-scores, kind="stable")[:k]
    return [eps[i].id for i in order]


def test_add_get_and_search_match_brute_force(bow, tmp_path):
    with MemoryStore.open(tmp_path / "m", encoder=bow, auto_consolidate=False,
                          exhaustive_below=0) as store:
        ids, s = _fill(store, 300)
        assert ids == list(range(300)) and len(store) == 300
        ep = store.get(7)
        assert (ep.text, ep.speaker, ep.session) == (s.texts[7], s.speakers[7], s.sessions[7])
        assert ep.timestamp == s.timestamps[7] and ep.tags
        q = bow.encode(["went kayaking at the lake with my sister"])[0]
        for mode in ("flat", "swift"):
            r = store.search("went kayaking at the lake with my sister", 10, mode=mode)
            assert r.ids == _brute(store, q, 10)
            assert [h.score for h in r.hits] == sorted((h.score for h in r.hits), reverse=True)
        assert r.path == "exhaustive(no clusters yet)"


def test_consolidated_swift_search(bow):
    store = MemoryStore.open(None, encoder=bow, cluster_size=40, auto_consolidate=False,
                             exhaustive_below=0)
    _fill(store, 1200)
    store.consolidate()
    dag = store.dag
    assert sum(dag.sizes[f"fine:{j}"] for j in range(len(dag.fine))) == 1200
    for parent, child in dag.edges():
        assert dag.sizes[child] <= dag.sizes[parent]
    queries = synthetic_episodes(40, seed=9).texts
    overlap = []
    for text in queries:
        q = bow.encode([text])[0]
        everything = store.search(text, 10, nprobe=len(dag.fine), beam=len(dag.coarse))
        assert everything.ids == _brute(store, q, 10)  # probing every topic = exhaustive
        routed = store.search(text, 10, min_candidates=0, nprobe=4)
        assert routed.candidates < 1200 and routed.path.startswith("dag(")
        overlap.append(len(set(routed.ids) & set(everything.ids)) / 10)
    assert np.mean(overlap) > 0.6  # 0.99 measured: routing misses far less than the bound allows
    # new episodes after consolidation are found through their topic
    new = store.add("Zanzibar zebra zither zeppelin", speaker="Zed", timestamp=2e9)
    assert store.search("Zanzibar zebra zither zeppelin", 1, min_candidates=0, nprobe=1).ids == [
        new]


def test_query_keyphrases_add_their_episodes(bow):
    text = "went hiking at the lake with my sister, quokka"  # a hiking topic + a rare word
    for limit in (5, 0):
        store = MemoryStore.open(None, encoder=bow, cluster_size=40, auto_consolidate=False,
                                 max_tag_episodes=limit, exhaustive_below=0)
        _fill(store, 800)
        rare = store.add("The quokka parade was amazing", speaker="Z", timestamp=5e9)
        store.consolidate()
        r = store.search(text, 1000, min_candidates=0, nprobe=1, beam=1)  # every candidate
        if limit:
            assert "quokka" in r.tags and rare in r.ids
        else:
            assert "quokka" not in r.tags
    with pytest.raises(ValueError, match="max_tag_episodes"):
        MemoryStore.open(None, max_tag_episodes=-1)


def test_small_stores_and_restrictions_are_searched_exhaustively(bow):
    store = MemoryStore.open(None, encoder=bow, cluster_size=40, auto_consolidate=False,
                             exhaustive_below=500)
    _, s = _fill(store, 800)
    store.consolidate()
    text = "went kayaking at the lake with my sister"
    q = bow.encode([text])[0]
    routed = store.search(text, 10, min_candidates=0, nprobe=1)
    assert routed.path.startswith("dag(") and routed.candidates < 800
    t0, t1 = s.timestamps[100], s.timestamps[400]
    small = store.search(text, 10, time_range=(t0, t1), min_candidates=0, nprobe=1)
    inside = [e for e in store.episodes() if t0 <= e.timestamp < t1]  # [start, end)
    assert small.path.endswith(f"exhaustive({len(inside)})") and small.candidates == len(inside)
    order = np.argsort([-(store.embedding(e.id) @ q) for e in inside], kind="stable")[:10]
    assert small.ids == [inside[i].id for i in order]
    store.exhaustive_below = 800
    whole = store.search(text, 10, min_candidates=0, nprobe=1)
    assert whole.path == "exhaustive(800)" and whole.ids == _brute(store, q, 10)
    with pytest.raises(ValueError, match="exhaustive_below"):
        MemoryStore.open(None, exhaustive_below=-1)


def test_episodes_are_embedded_with_their_speaker_and_date(bow):
    store = MemoryStore.open(None, encoder=bow)
    i = store.add("we went kayaking", speaker="Zelda", timestamp=1683504000.0)  # 8 May 2023
    assert store.get(i).text == "we went kayaking"
    want = bow.encode(["Zelda (8 May 2023): we went kayaking"])[0]
    np.testing.assert_array_equal(store.embedding(i), want)
    store.update(i, speaker="Quinn")
    np.testing.assert_array_equal(store.embedding(i),
                                  bow.encode(["Quinn (8 May 2023): we went kayaking"])[0])
    before = store.embedding(i)
    store.update(i, metadata={"note": 1})  # the embedded string is unchanged
    np.testing.assert_array_equal(store.embedding(i), before)
    bare = MemoryStore.open(None, encoder=bow, embed_template="{text}")
    j = bare.add("we went kayaking", speaker="Zelda", timestamp=1683504000.0)
    np.testing.assert_array_equal(bare.embedding(j), bow.encode(["we went kayaking"])[0])
    for bad in ("{speaker}", "{text} {who}", "{text} {0}", "{text", 3):
        with pytest.raises(ValueError, match="embed_template"):
            MemoryStore.open(None, encoder=bow, embed_template=bad)


def test_time_speaker_and_tag_restrictions(bow):
    store = MemoryStore.open(None, encoder=bow, cluster_size=40, auto_consolidate=False)
    _, s = _fill(store, 800)
    store.consolidate()
    t0, t1 = s.timestamps[100], s.timestamps[500]
    text = "my brother gave me a telescope"
    q = bow.encode([text])[0]
    for mode in ("swift", "flat"):
        r = store.search(text, 10, time_range=(t0, t1), mode=mode, min_candidates=0, nprobe=64)
        assert all(t0 <= h.episode.timestamp < t1 for h in r.hits)
        assert r.time_range == (t0, t1) and r.path.startswith("temporal(")
    assert store.search(text, 10, time_range=(t0, t1), mode="flat").ids == _brute(
        store, q, 10, lambda e: t0 <= e.timestamp < t1)
    speaker = s.speakers[3]
    r = store.search(text, 5, speaker=speaker)
    assert r.hits and all(h.episode.speaker == speaker for h in r.hits)
    tag = store.get(3).tags[0]
    r = store.search(text, 5, tags=[tag])
    assert r.tags == (tag,) and all(tag in h.episode.tags for h in r.hits)
    assert r.fallback is None
    r = store.search(text, 5, tags=["fine:0"])
    assert all(store.search(h.episode.text, 1, tags=["fine:0"]).hits for h in r.hits)
    r = store.search(text, 5, tags=["no-such-tag"])
    assert r.fallback and "no-such-tag" in r.fallback and len(r.hits) == 5


def test_time_hints_and_anchors(bow):
    store = MemoryStore.open(None, encoder=bow)
    store.add("We went on the trip to Lisbon", speaker="Ana", timestamp="2023-06-10")
    store.add("I adopted a kitten", speaker="Ana", timestamp="2023-05-01")
    store.add("I adopted a puppy", speaker="Ana", timestamp="2023-07-01")
    store.add("I adopted a parrot", speaker="Ana", timestamp="2023-08-15")
    r = store.search("what did I adopt before the trip to Lisbon?", 3, time_range="auto")
    assert [h.episode.text for h in r.hits] == ["I adopted a kitten"]
    r = store.search("what did I adopt last month?", 3, time_range="auto")  # ref: Aug 15
    assert [h.episode.text for h in r.hits] == ["I adopted a puppy"]
    r = store.search("what did I adopt?", 4, time_range="auto")  # no hint: unrestricted
    assert r.time_range is None and len(r.hits) == 4


def test_bad_input_is_named(bow):
    store = MemoryStore.open(None, encoder=bow)
    store.add("hello there", speaker="A", timestamp=0)
    cases = [
        (lambda: store.add("  ", speaker="A", timestamp=0), "texts\\[0\\]"),
        (lambda: store.add("hi", speaker="", timestamp=0), "speakers\\[0\\]"),
        (lambda: store.add("hi", speaker="A", timestamp="someday"), "timestamps\\[0\\]"),
        (lambda: store.add("hi", speaker="A", timestamp=0, metadata=[1]), "metadatas\\[0\\]"),
        (lambda: store.add("hi", speaker="A", timestamp=0, embedding=np.ones(3)), "embeddings"),
        (lambda: store.add_batch(["a", "b"], speakers=["A"], timestamps=[0, 0]), "speakers"),
        (lambda: store.search("hello", 0), "k to be"),
        (lambda: store.search("", 3), "query"),
        (lambda: store.search("hello", 3, mode="fast"), "mode"),
        (lambda: store.search("hello", 3, time_range=(5, 1)), "start <= end"),
        (lambda: store.search("hello", 3, time_range=("x", None)), "time_range\\[0\\]"),
        (lambda: store.search("hello", 3, time_range="soon"), "time_range"),
        (lambda: MemoryStore.open(None, cluster_size=0), "cluster_size"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
    with pytest.raises(KeyError, match="no episode with id 99"):
        store.get(99)


def test_update_delete_and_reopen_without_rebuilding(bow, tmp_path, monkeypatch):
    path = tmp_path / "m"
    with MemoryStore.open(path, encoder=bow, cluster_size=40) as store:
        _fill(store, 400)  # auto-consolidates at 160 and again as the tail grows
        assert store.dag is not None
        store.update(5, text="I learned to juggle flaming torches")
        store.delete(6)
        store.add("Last words before closing", speaker="Q", timestamp=3e9)
        before = {e.id: e for e in store.episodes()}
        results = store.search("juggle flaming torches", 5).ids
    assert results[0] == 5 and 6 not in before
    monkeypatch.setattr(tags_module, "spherical_kmeans", None)  # reopening must not recluster
    calls = bow.calls
    with MemoryStore.open(path, encoder=bow, cluster_size=40) as store:
        assert {e.id: e for e in store.episodes()} == before
        assert bow.calls == calls  # nothing re-encoded
        assert store.search("juggle flaming torches", 5).ids == results
        assert all(h.episode.id != 6 for h in store.search("anything at all", 50).hits)


def test_writer_lock_and_readonly(bow, tmp_path):
    with MemoryStore.open(tmp_path / "m", encoder=bow) as store:
        store.add("one", speaker="A", timestamp=1)
        with pytest.raises(RuntimeError, match="another process"):
            MemoryStore.open(tmp_path / "m", encoder=bow)
        reader = MemoryStore.open(tmp_path / "m", encoder=bow, readonly=True)
        assert [e.text for e in reader.episodes()] == ["one"]
        with pytest.raises(RuntimeError, match="readonly"):
            reader.add("two", speaker="A", timestamp=2)


def test_torn_tail_is_dropped_and_corruption_is_reported(bow, tmp_path):
    path = tmp_path / "m"
    with MemoryStore.open(path, encoder=bow) as store:
        store.add_batch(["one", "two", "three"], speakers=["A"] * 3, timestamps=[1, 2, 3])
    (log,) = path.glob("wal-*.log")
    good = log.read_bytes()
    log.write_bytes(good + good.splitlines(keepends=True)[0][:40])  # a write cut short
    with MemoryStore.open(path, encoder=bow) as store:
        assert [e.text for e in store.episodes()] == ["one", "two", "three"]
        store.add("four", speaker="A", timestamp=4)  # appends after the cut
    with MemoryStore.open(path, encoder=bow) as store:
        assert len(store) == 4
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0] + lines[1].replace(b"two", b"twX") + b"".join(lines[2:]))
    with pytest.raises(CorruptStoreError, match="byte"):
        MemoryStore.open(path, encoder=bow)


WRITER = textwrap.dedent("""
    import sys, zlib
    import numpy as np
    from effjax.memory import MemoryStore
    store = MemoryStore.open(sys.argv[1], cluster_size=32)
    rng = np.random.default_rng(0)
    for i in range(100000):
        e = rng.standard_normal(8).astype(np.float32)
        store.add(f"episode number {i}", speaker="W", timestamp=i, embedding=e / np.linalg.norm(e))
        print(i, flush=True)
""")


def test_killed_writer_loses_no_acknowledged_episode(tmp_path):
    path = tmp_path / "m"
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).parents[2]),
               JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                            env=env, text=True)
    acked = []
    for line in proc.stdout:  # past the first auto-consolidations (snapshots) at 128 and 160
        acked.append(int(line))
        if len(acked) >= 180:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    with MemoryStore.open(path, cluster_size=32) as store:
        assert len(store) >= len(acked) and store.dag is not None
        for i in acked:
            assert store.get(i).text == f"episode number {i}"
        q = store.embedding(acked[-1])
        assert store.search("x", 1, query_embedding=q, mode="flat").ids == [acked[-1]]
        assert store.search("x", 1, query_embedding=q).ids == [acked[-1]]


def test_concurrent_reads_while_adding(bow):
    store = MemoryStore.open(None, encoder=bow, cluster_size=32)
    _fill(store, 200)
    errors, seen = [], []

    def reader():
        try:
            for _ in range(30):
                r = store.search("a walk at the lake", 5)
                assert len(r.hits) == 5 and all(h.episode.id in store for h in r.hits)
                seen.append(len(store))
        except Exception as e:  # noqa: BLE001 - collected for the main thread
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    s = synthetic_episodes(500, seed=4)
    for i in range(200, 500, 20):  # adds cross auto-consolidations
        store.add_batch(s.texts[i:i + 20], speakers=s.speakers[i:i + 20],
                        timestamps=list(s.timestamps[i:i + 20]))
    for t in threads:
        t.join()
    assert not errors and len(store) == 500 and seen


def test_timestamps_of_any_real_type_within_the_documented_range(bow, tmp_path):
    from effjax.memory.store import MAX_TIMESTAMP

    path = tmp_path / "m"
    with MemoryStore.open(path, encoder=bow) as store:
        stamps = [5, 6.5, np.int64(7), np.int32(8), np.float32(9.5), np.uint8(10), np.float64(11),
                  MAX_TIMESTAMP - 1]
        ids = [store.add(f"episode {i}", speaker="A", timestamp=t) for i, t in enumerate(stamps)]
        got = [store.get(i).timestamp for i in ids]
        assert got == [5.0, 6.5, 7.0, 8.0, 9.5, 10.0, 11.0, MAX_TIMESTAMP - 1]
        assert all(type(t) is float for t in got)
        # the latest time is the reference of "auto": its datetime arithmetic stays valid
        r = store.search("what happened this year", 3, time_range="auto")
        assert r.time_range == (MAX_TIMESTAMP - 365 * DAY, MAX_TIMESTAMP) and r.ids == [ids[-1]]
        store.update(ids[0], timestamp=np.int64(12))
    with MemoryStore.open(path, encoder=bow) as store:  # logged as plain JSON numbers
        assert [store.get(i).timestamp for i in ids] == [12.0] + got[1:]
    store = MemoryStore.open(None, encoder=bow)
    store.add("hello", speaker="A", timestamp=1)
    for bad in (1e18, -1, MAX_TIMESTAMP, np.int64(10**15), 10**400, True, np.True_,
                float("nan"), np.float64("inf"), "year 12000"):
        with pytest.raises(ValueError, match="timestamps\\[0\\]") as e:
            store.add("hi", speaker="A", timestamp=bad)
        assert repr(bad) in str(e.value)
        with pytest.raises(ValueError, match="timestamp"):
            store.update(0, timestamp=bad)
        with pytest.raises(ValueError, match="time_range\\[1\\]"):
            store.search("hi", 1, time_range=(None, bad))
    with pytest.raises(ValueError, match="reference"):
        store.search("what happened last week", 1, time_range="auto", reference=1e18)
    assert len(store) == 1 and store.get(0).timestamp == 1.0  # nothing half-added
    assert store.search("what happened last week", 1, time_range="auto").hits == []


def test_ids_and_counts_accept_numpy_ints_and_reject_the_rest(bow, tmp_path):
    path = tmp_path / "m"
    with MemoryStore.open(path, encoder=bow) as store:
        store.add_batch(["one", "two", "three"], speakers=["A"] * 3, timestamps=[1, 2, 3])
        assert store.get(np.int64(1)).text == "two" and np.int32(2) in store
        store.delete(np.int64(0))  # logged as a plain JSON int
        store.update(np.uint16(2), text="tres")
        assert store.search("tres", np.int64(1), nprobe=np.int32(2)).ids == [2]
    with MemoryStore.open(path, encoder=bow) as store:
        assert [e.text for e in store.episodes()] == ["two", "tres"]
        for bad in (True, -1, 1.0, "1", None):
            assert bad not in store
            for call in (store.get, store.delete, store.embedding):
                with pytest.raises(ValueError, match=f"episode_id to be an int >= 0, got {bad!r}"):
                    call(bad)
        with pytest.raises(KeyError, match="no episode with id 0"):
            store.delete(0)
        for kwargs, name in ((dict(k=True), "k"), (dict(k=2.0), "k"), (dict(nprobe=0), "nprobe"),
                             (dict(beam=np.bool_(1)), "beam"), (dict(min_candidates=-1),
                                                                "min_candidates")):
            with pytest.raises(ValueError, match=f"expected {name} to be an int"):
                store.search("two", **kwargs)


def test_sessions_and_metadata_must_read_back_unchanged(bow):
    store = MemoryStore.open(None, encoder=bow)
    for kwargs, name in ((dict(session=5), "sessions\\[0\\]"),
                         (dict(metadata={1: "a"}), "metadatas\\[0\\]"),
                         (dict(metadata={"a": (1, 2)}), "metadatas\\[0\\]"),
                         (dict(metadata={"a": np.float32(1)}), "metadatas\\[0\\]"),
                         (dict(metadata={"a": float("nan")}), "metadatas\\[0\\]")):
        with pytest.raises(ValueError, match=name):
            store.add("hi", speaker="A", timestamp=1, **kwargs)
    assert len(store) == 0
    store.add("hi", speaker="A", timestamp=1, session="s1", metadata={"a": [1, 2], "b": None})
    assert store.get(0).metadata == {"a": [1, 2], "b": None}


def test_empty_store_search_returns_no_hits(bow, tmp_path):
    for store in (MemoryStore.open(None, encoder=bow),
                  MemoryStore.open(tmp_path / "m", encoder=bow)):
        with store:
            calls = bow.calls
            for kwargs in ({}, dict(mode="flat"), dict(time_range="auto"),
                           dict(time_range=(0, 10)), dict(speaker="A"), dict(tags=["x"])):
                r = store.search("what did I do last week?", 5, **kwargs)
                assert isinstance(r, SearchResult) and r.hits == [] and r.ids == []
                assert r.candidates == 0
            assert bow.calls == calls  # nothing to score: the query is not even encoded
            store.add("hello", speaker="A", timestamp=1)
            store.delete(0)
            r = store.search("hello", 5)
            assert r.hits == [] and r.candidates == 0
    with pytest.raises(ValueError, match="k to be"):  # arguments are still checked
        MemoryStore.open(None, encoder=bow).search("hello", 0)


def test_time_hint_beyond_datetime_range_is_ignored_and_said(bow):
    store = MemoryStore.open(None, encoder=bow)
    store.add("we went kayaking", speaker="A", timestamp="2023-06-10")
    for query in ("what did we do 20000 years ago?", "what happened in December 9999?"):
        r = store.search(query, 1, time_range="auto")
        assert r.time_range is None and r.ids == [0]
        assert r.fallback.startswith("the time hint in the query is outside")

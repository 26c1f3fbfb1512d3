"""MemoryStore on disk: damage to any file is named, crashes at every step of a snapshot
switch lose nothing, readonly opens change nothing, leftovers are cleaned, repair."""

import logging
import os
import shutil

import pytest

from effjax.memory import CorruptStoreError, MemoryStore, repair_store, synthetic_episodes
from effjax.memory import snapshot as snapshot_module
from effjax.memory import store as store_module

SNAP = "snap-000000000020-000001"  # the snapshot `_build` leaves (seq 20, the first)
LOG = "wal-000000000021.log"  # records 21..32 after it


def _build(path, bow):
    """20 episodes in a snapshot, then 10 adds, an update and a delete in the log.

    Returns:
      {id: Episode} of the live episodes.
    """
    s = synthetic_episodes(30, seed=1)
    with MemoryStore.open(path, encoder=bow, auto_consolidate=False, cluster_size=5) as store:
        store.add_batch(s.texts[:20], speakers=s.speakers[:20], timestamps=list(s.timestamps[:20]),
                        sessions=s.sessions[:20])
        store.consolidate()
        for i in range(20, 30):  # seq 21..30
            store.add(s.texts[i], speaker=s.speakers[i], timestamp=s.timestamps[i])
        store.update(2, text="I learned to juggle flaming torches")  # seq 31
        store.delete(5)  # seq 32
        return {e.id: e for e in store.episodes()}


def _names(path):
    return sorted(p.name for p in path.iterdir())


def _tree(path):
    """Every file under path: relative name -> (bytes, mtime_ns)."""
    return {str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*")) if p.is_file()}


FILES = ["CURRENT", f"{SNAP}/MANIFEST", f"{SNAP}/arrays.npz", f"{SNAP}/episodes.jsonl",
         f"{SNAP}/meta.json", LOG]


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]


@pytest.mark.parametrize("name", FILES)
def test_flipped_bit_in_any_file_is_named(bow, tmp_path, name):
    path = tmp_path / "m"
    _build(path, bow)
    good = (path / name).read_bytes()
    for at in (0, 9, len(good) // 2, len(good) - 1):  # first, in a digest, middle, line end
        (path / name).write_bytes(_flip(good, at))
        for readonly in (False, True):
            with pytest.raises(CorruptStoreError, match=name.split("/")[-1]):
                MemoryStore.open(path, encoder=bow, readonly=readonly)
    (path / name).write_bytes(good)
    with MemoryStore.open(path, encoder=bow) as store:
        assert len(store) == 29


@pytest.mark.parametrize("name", FILES[:-1])
def test_truncated_or_deleted_snapshot_file_is_named(bow, tmp_path, name):
    path = tmp_path / "m"
    _build(path, bow)
    good = (path / name).read_bytes()
    cuts = [0, len(good) // 2, len(good) - 1]
    if name.endswith("episodes.jsonl"):  # cut at a line boundary: a whole episode gone
        cuts.append(good.rindex(b"\n", 0, len(good) - 1) + 1)
    for cut in cuts:
        (path / name).write_bytes(good[:cut])
        with pytest.raises(CorruptStoreError, match=name.split("/")[-1]):
            MemoryStore.open(path, encoder=bow)
    (path / name).unlink()
    with pytest.raises(CorruptStoreError, match=name.split("/")[-1]):
        MemoryStore.open(path, encoder=bow)


def test_deleted_snapshot_folder_or_log_is_named(bow, tmp_path):
    path = tmp_path / "m"
    _build(path, bow)
    (path / LOG).rename(tmp_path / LOG)
    with pytest.raises(CorruptStoreError, match=f"{LOG} is missing.*{SNAP}"):
        MemoryStore.open(path, encoder=bow)
    (tmp_path / LOG).rename(path / LOG)
    shutil.move(path / SNAP, tmp_path / SNAP)
    with pytest.raises(CorruptStoreError, match=f"CURRENT: expected the snapshot folder.*{SNAP}"):
        MemoryStore.open(path, encoder=bow)


def test_deleted_current_is_an_error_not_a_partial_store(bow, tmp_path):
    path = tmp_path / "m"
    _build(path, bow)
    (path / "CURRENT").unlink()
    for readonly in (False, True):
        with pytest.raises(CorruptStoreError, match=f"CURRENT.*missing.*{SNAP}.*seq 21"):
            MemoryStore.open(path, encoder=bow, readonly=readonly)
    assert _names(path) == ["LOCK", SNAP, LOG]  # nothing deleted


def test_gap_in_log_sequence_is_named(bow, tmp_path):
    path = tmp_path / "m"
    _build(path, bow)
    lines = (path / LOG).read_bytes().splitlines(keepends=True)
    (path / LOG).write_bytes(b"".join(lines[:4] + lines[5:]))  # record 25 gone
    with pytest.raises(CorruptStoreError, match=f"{LOG}: expected record seq 25, found seq 26"):
        MemoryStore.open(path, encoder=bow)


def test_truncated_log_reads_as_a_crash_and_says_so(bow, tmp_path, caplog):
    """The end of the newest log cannot be told from a crash: a cut inside a record drops
    the records from it on (as a torn write) and the writer's open names the file."""
    path = tmp_path / "m"
    _build(path, bow)
    data = (path / LOG).read_bytes()
    starts = [0] + [i + 1 for i, b in enumerate(data) if b == ord("\n")][:-1]
    (path / LOG).write_bytes(data[:starts[6] + 30])  # inside record 27
    with caplog.at_level(logging.WARNING, logger="effjax.memory.store"):
        with MemoryStore.open(path, encoder=bow) as store:
            assert sorted(store._episodes) == list(range(26))  # adds 21..26: ids 20..25
            assert store.get(2).text != "I learned to juggle flaming torches"
    assert f"{LOG}: dropped a torn final write" in caplog.text
    assert (path / LOG).read_bytes() == data[:starts[6]]


def test_readonly_open_after_crash_tolerates_torn_tail_and_changes_nothing(bow, tmp_path):
    path = tmp_path / "m"
    live = _build(path, bow)
    data = (path / LOG).read_bytes()
    (path / LOG).write_bytes(data + data[:50])  # the writer died inside a write
    (path / f".tmp-{SNAP.replace('-000001', '-000002')}").mkdir()  # and inside a snapshot
    before = _tree(path), _names(path)
    with MemoryStore.open(path, encoder=bow, readonly=True) as reader:
        assert {e.id: e for e in reader.episodes()} == live
        assert reader.search("juggle flaming torches", 1).ids == [2]
    assert (_tree(path), _names(path)) == before
    with pytest.raises(FileNotFoundError, match="readonly"):
        MemoryStore.open(tmp_path / "none", encoder=bow, readonly=True)
    assert not (tmp_path / "none").exists()


def test_writer_open_cleans_leftovers_of_interrupted_writes(bow, tmp_path):
    path = tmp_path / "m"
    live = _build(path, bow)
    for orphan in (".tmp-snap-000000000032-000002", ".trash-snap-000000000010-000000",
                   "snap-000000000032-000003"):  # the last: renamed in, CURRENT never switched
        (path / orphan).mkdir()
        (path / orphan / "arrays.npz").write_bytes(b"partial")
    (path / "CURRENT.tmp").write_bytes(b"half")
    with MemoryStore.open(path, encoder=bow, readonly=True) as reader:
        assert len(reader) == len(live)
    assert len(_names(path)) == 8  # readonly removes nothing
    with MemoryStore.open(path, encoder=bow) as store:
        assert {e.id: e for e in store.episodes()} == live
    assert _names(path) == ["CURRENT", "LOCK", SNAP, LOG]


def _w(first):
    return f"wal-{first:012d}.log"


S10, S15 = "snap-000000000010-000001", "snap-000000000015-000002"
CRASH_POINTS = {  # point: the folder after the writer's reopen, (first, later snapshot)
    "manifest": (["LOCK", _w(1)], ["CURRENT", "LOCK", S10, _w(11)]),
    "new-log": (["LOCK", _w(1)], ["CURRENT", "LOCK", S10, _w(11)]),
    "current": (["LOCK", _w(1), _w(11)], ["CURRENT", "LOCK", S10, _w(11), _w(16)]),
    "log-delete": (["CURRENT", "LOCK", S10, _w(11)], ["CURRENT", "LOCK", S15, _w(16)]),
    "snapshot-delete": (None, ["CURRENT", "LOCK", S15, _w(16)]),
}


class Crash(Exception):
    pass


class Kill(BaseException):
    """A kill between two steps: the store's error handling does not run."""


@pytest.mark.parametrize("point,first", [
    (p, first) for p in CRASH_POINTS for first in (True, False)
    if (p, first) != ("snapshot-delete", True)])  # the first snapshot has none to delete
def test_crash_at_each_step_of_a_snapshot_switch_loses_nothing(bow, tmp_path, monkeypatch,
                                                                point, first):
    path = tmp_path / "m"
    s = synthetic_episodes(15, seed=2)
    store = MemoryStore.open(path, encoder=bow, auto_consolidate=False, cluster_size=5)
    store.add_batch(s.texts[:10], speakers=s.speakers[:10], timestamps=list(s.timestamps[:10]))
    if not first:
        store.consolidate()
        store.add_batch(s.texts[10:], speakers=s.speakers[10:], timestamps=list(s.timestamps[10:]))
    live = {e.id: e for e in store.episodes()}

    def crash(*args, **kwargs):
        raise Crash

    def kill(*args, **kwargs):
        raise Kill

    write_file = snapshot_module.write_file
    targets = {  # each raises just before that step
        "manifest": (snapshot_module, "write_file",
                     lambda p, d: crash() if p.name == "MANIFEST" else write_file(p, d)),
        "new-log": (store_module, "LogWriter", crash),
        "current": (store_module, "write_current", kill),
        "log-delete": (store_module, "list_logs", crash),
        "snapshot-delete": (store_module, "discard", crash),
    }
    try:
        with monkeypatch.context() as m:
            m.setattr(*targets[point])
            with pytest.raises((Crash, Kill)):
                store.consolidate()
    finally:
        store.close()  # what the kernel does for a killed process: files closed, lock freed
    seq = store._seq
    with MemoryStore.open(path, encoder=bow, readonly=True) as reader:
        assert {e.id: e for e in reader.episodes()} == live
    with MemoryStore.open(path, encoder=bow) as store:
        assert {e.id: e for e in store.episodes()} == live
        store.add("after the crash", speaker="Z", timestamp=1e9)
    assert _names(path) == CRASH_POINTS[point][0 if first else 1]
    with MemoryStore.open(path, encoder=bow) as store:
        assert len(store) == len(live) + 1 and store._seq == seq + 1


def test_repair_recovers_the_snapshot_and_the_log_up_to_a_damaged_record(bow, tmp_path):
    path = tmp_path / "m"
    live = _build(path, bow)
    data = (path / LOG).read_bytes()
    at = [i + 1 for i, b in enumerate(data) if b == ord("\n")][4] + 20  # inside record 26
    (path / LOG).write_bytes(_flip(data, at))
    with pytest.raises(CorruptStoreError, match=f"{LOG}: unreadable record .* at byte"):
        MemoryStore.open(path, encoder=bow)
    report = repair_store(path)
    assert report.repaired and report.snapshot == SNAP and report.snapshot_seq == 20
    assert (report.replayed, report.seq) == (5, 25)  # records 21..25: ids 20..24
    assert report.episodes == tuple(range(25))
    assert report.lost_ids == (2, 5, 26, 27, 28, 29)  # named by records 27..32
    assert any(LOG in p and "unreadable" in p for p in report.problems)
    assert report.moved_to == path / "quarantine-1"
    assert sorted(os.listdir(report.moved_to)) == ["CURRENT", SNAP, LOG]
    assert _names(path) == ["CURRENT", "LOCK", "quarantine-1", "snap-000000000025-000002",
                            "wal-000000000026.log"]
    original = synthetic_episodes(30, seed=1).texts
    with MemoryStore.open(path, encoder=bow) as store:
        assert [e.id for e in store.episodes()] == list(range(25))
        assert all(store.get(i) == live[i] for i in range(25) if i not in (2, 5))
        assert (store.get(2).text, store.get(5).text) == (original[2], original[5])  # lost
        assert store.add("after repair", speaker="Z", timestamp=1e9) == 25
    assert not repair_store(path).repaired  # a healthy store is left alone
    with MemoryStore.open(path, encoder=bow) as store:
        assert len(store) == 26


def test_repair_after_a_deleted_current_recovers_everything(bow, tmp_path):
    path = tmp_path / "m"
    live = _build(path, bow)
    (path / "CURRENT").unlink()
    report = repair_store(path)
    assert report.repaired and report.snapshot == SNAP and (report.replayed, report.seq) == (12, 32)
    assert report.episodes == tuple(sorted(live)) and report.lost_ids == ()
    with MemoryStore.open(path, encoder=bow) as store:
        assert {e.id: e for e in store.episodes()} == live


def test_repair_falls_back_to_the_last_good_snapshot(bow, tmp_path, monkeypatch):
    """Killed after switching CURRENT, before removing the old log and snapshot; then the
    new snapshot is damaged: the old snapshot and the old log hold everything."""
    path = tmp_path / "m"
    live = _build(path, bow)
    store = MemoryStore.open(path, encoder=bow, auto_consolidate=False, cluster_size=5)
    with monkeypatch.context() as m:
        m.setattr(store_module, "list_logs", lambda *a: (_ for _ in ()).throw(Crash()))
        with pytest.raises(Crash):
            store.consolidate()
        store.close()
    new = "snap-000000000032-000002"
    assert _names(path) == ["CURRENT", "LOCK", SNAP, new, LOG, "wal-000000000033.log"]
    arrays = path / new / "arrays.npz"
    arrays.write_bytes(arrays.read_bytes()[:-10])
    with pytest.raises(CorruptStoreError, match=f"{new}/arrays.npz: expected .* bytes"):
        MemoryStore.open(path, encoder=bow)
    report = repair_store(path)
    assert (report.snapshot, report.replayed, report.seq, report.lost_ids) == (SNAP, 12, 32, ())
    assert any(f"{new}/arrays.npz" in p for p in report.problems)
    with MemoryStore.open(path, encoder=bow) as store:
        assert {e.id: e for e in store.episodes()} == live


def test_repair_without_a_good_snapshot_keeps_what_reaches_back(bow, tmp_path):
    path = tmp_path / "m"
    live = _build(path, bow)
    episodes = path / SNAP / "episodes.jsonl"
    episodes.write_bytes(episodes.read_bytes().replace(b"a", b"A", 1))
    report = repair_store(path)  # the log starts at 21: nothing before it can be rebuilt
    assert (report.snapshot, report.seq, report.episodes) == (None, 0, ())
    assert report.lost_ids == tuple(sorted(set(range(20, 30)) | {2, 5}))
    assert any(f"{SNAP}/episodes.jsonl" in p for p in report.problems)
    assert sorted(os.listdir(report.moved_to)) == ["CURRENT", SNAP, LOG]  # kept, not deleted
    with MemoryStore.open(path, encoder=bow) as store:
        assert len(store) == 0 and len(live) == 29


def test_readonly_open_retries_when_a_writer_switches_snapshots_under_it(bow, tmp_path,
                                                                         monkeypatch):
    path = tmp_path / "m"
    live = _build(path, bow)
    writer = MemoryStore.open(path, encoder=bow, auto_consolidate=False, cluster_size=5)
    list_logs, calls = store_module.list_logs, []

    def switch_then_list(root):  # the reader has read CURRENT and the old snapshot
        calls.append(root)
        if len(calls) == 1:
            writer.consolidate()  # new snapshot, new log; the old ones are deleted
        return list_logs(root)

    monkeypatch.setattr(store_module, "list_logs", switch_then_list)
    with writer, MemoryStore.open(path, encoder=bow, readonly=True) as reader:
        assert {e.id: e for e in reader.episodes()} == live
    assert len(calls) == 3  # the reader's first try, the writer's clean-up, the second try
    assert _names(path) == ["CURRENT", "LOCK", "snap-000000000032-000002",
                            "wal-000000000033.log"]


def test_store_of_the_earlier_format_is_named(bow, tmp_path):
    path = tmp_path / "m"
    path.mkdir()
    (path / "CURRENT").write_text("snap-000000000160")
    with pytest.raises(CorruptStoreError, match="CURRENT: expected a sealed line.*before"):
        MemoryStore.open(path, encoder=bow)


def test_a_failed_switch_leaves_a_store_that_keeps_writing_and_reopens(bow, tmp_path,
                                                                         monkeypatch):
    # CURRENT's switch fails (say the disk is full) but the process goes on writing: the
    # new, empty log must not stay behind, or the old log's later records would overlap it
    path = tmp_path / "m"
    s = synthetic_episodes(12, seed=3)
    with MemoryStore.open(path, encoder=bow, auto_consolidate=False, cluster_size=5) as store:
        store.add_batch(s.texts[:8], speakers=s.speakers[:8], timestamps=list(s.timestamps[:8]))

        def full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        with monkeypatch.context() as m:
            m.setattr(store_module, "write_current", full)
            with pytest.raises(OSError, match="No space"):
                store.consolidate()
        store.add_batch(s.texts[8:], speakers=s.speakers[8:], timestamps=list(s.timestamps[8:]))
        live = {e.id: e for e in store.episodes()}
    assert len(live) == 12
    for readonly in (True, False):
        with MemoryStore.open(path, encoder=bow, readonly=readonly) as again:
            assert {e.id: e for e in again.episodes()} == live

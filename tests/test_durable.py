"""Durable file-system steps: fsync of a folder, atomic file writes."""

import os
import stat

import pytest

from effjax.durable import atomic_write, fsync_dir


def test_fsync_dir_syncs_a_folder_and_names_a_missing_one(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino), real(fd)))
    fsync_dir(tmp_path)
    assert synced == [os.stat(tmp_path).st_ino]  # the folder itself, by its own descriptor
    with pytest.raises(FileNotFoundError, match="absent"):
        fsync_dir(tmp_path / "absent")


@pytest.mark.parametrize("data,want", [(b"\x00bytes\xff", b"\x00bytes\xff"),
                                       ("text \u00e9", "text \u00e9".encode()),
                                       (lambda f: f.write(b"from a writer"), b"from a writer")])
def test_atomic_write_writes_the_contents_and_leaves_only_the_file(tmp_path, data, want):
    target = tmp_path / "sub" / "f.bin"  # the missing folder is created
    assert atomic_write(target, b"old") == target
    assert atomic_write(str(target), data) == target
    assert target.read_bytes() == want
    assert os.listdir(target.parent) == ["f.bin"]


def test_atomic_write_fsyncs_the_file_then_the_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino), real(fd)))
    target = atomic_write(tmp_path / "f", "x")
    assert synced == [os.stat(target).st_ino, os.stat(tmp_path).st_ino]


class Boom(Exception):
    pass


def test_atomic_write_leaves_the_target_and_no_temporary_when_the_writer_raises(tmp_path):
    target = atomic_write(tmp_path / "f", "old")

    def writer(f):
        f.write(b"half")
        raise Boom

    with pytest.raises(Boom):
        atomic_write(target, writer)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f"]
    with pytest.raises(Boom):  # nor when there was no file yet
        atomic_write(tmp_path / "new", writer)
    assert os.listdir(tmp_path) == ["f"]


def test_atomic_write_through_a_named_temporary_overwrites_a_leftover(tmp_path):
    (tmp_path / "f.tmp").write_bytes(b"a leftover of a killed write, longer")
    atomic_write(tmp_path / "f", b"new", tmp=tmp_path / "f.tmp")
    assert (tmp_path / "f").read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["f"]


def test_atomic_write_respects_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        target = atomic_write(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640

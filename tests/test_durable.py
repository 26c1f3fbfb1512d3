"""Durable file-system steps."""

import os

import pytest

from effjax.durable import fsync_dir


def test_fsync_dir_syncs_a_folder_and_names_a_missing_one(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.fstat(fd).st_ino), real(fd)))
    fsync_dir(tmp_path)
    assert synced == [os.stat(tmp_path).st_ino]  # the folder itself, by its own descriptor
    with pytest.raises(FileNotFoundError, match="absent"):
        fsync_dir(tmp_path / "absent")

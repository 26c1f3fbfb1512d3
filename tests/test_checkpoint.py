"""Atomic, checksummed orbax checkpoints of parameter pytrees."""

import hashlib
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax import checkpoint


def _tree():
    return {"embed": {"embedding": jnp.arange(12.0).reshape(3, 4)},
            "layers": {0: {"w": jnp.ones((2, 2), jnp.bfloat16)}, 1: {"w": jnp.zeros((2, 2))}}}


def test_roundtrip_keeps_structure_and_dtypes(tmp_path):
    tree = _tree()
    checkpoint.save(tmp_path / "ck", tree)
    assert checkpoint.is_complete(tmp_path / "ck")
    for restored in (checkpoint.restore(tmp_path / "ck"),
                     checkpoint.restore(tmp_path / "ck", target=tree)):
        assert jax.tree.structure(restored) == jax.tree.structure(tree)
        for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(tree), strict=True):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_no_silent_overwrite(tmp_path):
    checkpoint.save(tmp_path / "ck", _tree())
    with pytest.raises(ValueError, match="exists"):
        checkpoint.save(tmp_path / "ck", _tree())
    new = {"x": jnp.full((2,), 7.0)}
    checkpoint.save(tmp_path / "ck", new, overwrite=True)
    np.testing.assert_array_equal(checkpoint.restore(tmp_path / "ck")["x"], [7.0, 7.0])


def _assert_same(restored, tree):
    assert jax.tree.structure(restored) == jax.tree.structure(tree)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(tree), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def _new_tree():
    return {"x": jnp.full((2, 3), 7.0), "layers": {0: {"w": jnp.arange(4.0).astype(jnp.bfloat16)}}}


# `python -c KILLED_SAVE <path> <point>`: overwrites the checkpoint at path with _new_tree()
# and SIGKILLs itself when the save protocol reaches the named point.
KILLED_SAVE = "import jax.numpy as jnp\n" + inspect.getsource(_new_tree) + textwrap.dedent("""
    import os, signal, sys
    from effjax import checkpoint
    path, point = sys.argv[1], sys.argv[2]
    def reached(p):
        if p == point:
            os.kill(os.getpid(), signal.SIGKILL)
    checkpoint._reached = reached
    checkpoint.save(path, _new_tree(), overwrite=True)
""")

# the points of the save protocol, in order; the new checkpoint is committed at "committed"
POINTS = ["cleaned", "written", "checksummed", "set-aside", "committed", "removing-old"]


@pytest.mark.parametrize("point", POINTS)
def test_overwrite_killed_anywhere_leaves_one_complete_checkpoint(tmp_path, point):
    path = tmp_path / "ck"
    old, new = _tree(), _new_tree()
    checkpoint.save(path, old)
    killed = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(path), point],
                            capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert killed.returncode == -9, killed.stderr[-2000:]  # it died at `point`
    temporaries = sorted(p.name for p in tmp_path.iterdir() if p.name != "ck")
    assert temporaries == {"cleaned": [], "written": [".ck.effjax-new"],
                           "checksummed": [".ck.effjax-new"],
                           "set-aside": [".ck.effjax-new", ".ck.effjax-old"],
                           "committed": [".ck.effjax-old"],
                           "removing-old": [".ck.effjax-old"]}[point]
    # between the two renames the old checkpoint waits beside the missing path
    assert path.exists() == (point != "set-aside")
    assert checkpoint.is_complete(path)
    _assert_same(checkpoint.restore(path), new if POINTS.index(point) >= 4 else old)
    # a checkpoint is always there: a save without overwrite refuses
    with pytest.raises(ValueError, match="exists"):
        checkpoint.save(path, {"y": jnp.ones(2)})
    (tmp_path / ".ck.effjax-new.orbax-checkpoint-tmp-1").mkdir()  # orbax's, killed mid-write
    (tmp_path / "ck.orbax-checkpoint-tmp-2").mkdir()  # an older effjax's, killed mid-write
    checkpoint.save(path, {"y": jnp.ones(2)}, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # stale temporaries cleaned
    assert checkpoint.verify(path)
    _assert_same(checkpoint.restore(path), {"y": jnp.ones(2)})


def test_first_save_killed_before_commit_leaves_nothing(tmp_path):
    killed = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(tmp_path / "ck"),
                             "checksummed"],
                            capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not checkpoint.is_complete(tmp_path / "ck")
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        checkpoint.restore(tmp_path / "ck")
    checkpoint.save(tmp_path / "ck", _tree())  # no overwrite needed: nothing was committed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    _assert_same(checkpoint.restore(tmp_path / "ck"), _tree())


def test_every_flipped_byte_is_caught_and_named(tmp_path):
    tree = {**_tree(), "big": jnp.asarray(np.random.default_rng(0).standard_normal(4096),
                                          jnp.float32)}
    path = checkpoint.save(tmp_path / "ck", tree)
    assert checkpoint.verify(path)
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                   if p.is_file() and p.name != "effjax_checksums.json")
    assert sum("/d/" in f or f.startswith("d/") for f in files) >= 2  # the array data files
    for rel in files:
        original = (path / rel).read_bytes()
        damaged = bytearray(original)
        damaged[len(damaged) // 2] ^= 0x10
        (path / rel).write_bytes(bytes(damaged))
        message = rf"is damaged: file {re.escape(repr(rel))} does not match the SHA-256"
        with pytest.raises(checkpoint.CheckpointError, match=message):
            checkpoint.restore(path)
        with pytest.raises(checkpoint.CheckpointError, match=message):
            checkpoint.restore(path, target=tree)
        with pytest.raises(checkpoint.CheckpointError, match=message):
            checkpoint.verify(path)
        (path / rel).write_bytes(original)
    _assert_same(checkpoint.restore(path, target=tree), tree)
    data = next(f for f in files if "/d/" in f)
    (path / "notes.txt").write_text("added later")
    with pytest.raises(checkpoint.CheckpointError,
                       match="file 'notes.txt' was not there when it was saved"):
        checkpoint.restore(path)
    (path / "notes.txt").unlink()
    (path / data).unlink()
    with pytest.raises(checkpoint.CheckpointError,
                       match=rf"file {re.escape(repr(data))} is missing"):
        checkpoint.restore(path)


def test_checkpoint_without_checksums_restores_unverified_with_a_warning(tmp_path):
    path = checkpoint.save(tmp_path / "ck", _tree())
    (path / "effjax_checksums.json").unlink()  # as saved before effjax recorded checksums
    assert checkpoint.verify(path) is False
    with pytest.warns(UserWarning, match="has no checksums .* restored unverified"):
        restored = checkpoint.restore(path)
    _assert_same(restored, _tree())
    (path / "effjax_checksums.json").write_text("{not json")
    with pytest.raises(checkpoint.CheckpointError, match="checksum file .* is unreadable"):
        checkpoint.restore(path)


def test_incomplete_checkpoint_is_refused(tmp_path):
    path = checkpoint.save(tmp_path / "ck", _tree())
    (path / "commit_success.txt").unlink()  # as if the process died before committing
    assert not checkpoint.is_complete(path)
    with pytest.raises(ValueError, match="incomplete"):
        checkpoint.restore(path)
    with pytest.raises(ValueError, match="no checkpoint"):
        checkpoint.restore(tmp_path / "missing")


def test_weights_roundtrip_and_shape_check(tmp_path):
    tree = {"embed": {"embedding": jnp.arange(12.0).reshape(3, 4)},
            "layers": {0: {"w": jnp.ones((2, 2))}, 1: {"w": jnp.zeros((2, 5))}}}
    checkpoint.save_weights(tree, {"steps": 3}, tmp_path / "w")
    assert not list((tmp_path / "w").glob("*.tmp"))
    back, info = checkpoint.load_weights(tmp_path / "w", jax.eval_shape(lambda: tree),
                                         hint="make some")
    assert info == {"steps": 3} and set(back["layers"]) == {0, 1}
    jax.tree.map(np.testing.assert_array_equal, back, tree)
    wrong = {**tree, "layers": {0: {"w": jnp.ones((2, 2))}, 1: {"w": jnp.zeros((2, 4))}}}
    with pytest.raises(ValueError, match="do not match the expected shapes"):
        checkpoint.load_weights(tmp_path / "w", wrong, hint="make some")
    with pytest.raises(ValueError, match="no trained weights .*; make some"):
        checkpoint.load_weights(tmp_path / "none", tree, hint="make some")


def test_weights_file_digest_catches_a_flipped_byte(tmp_path):
    tree = {"w": jnp.arange(64.0).reshape(8, 8)}
    checkpoint.save_weights(tree, {"steps": 3}, tmp_path / "w")
    weights = tmp_path / "w" / "model.safetensors"
    info = json.loads((tmp_path / "w" / "info.json").read_text())
    assert info["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x10  # inside the array's bytes: still a valid safetensors file
    weights.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="model.safetensors' is damaged"):
        checkpoint.load_weights(tmp_path / "w", tree, hint="-")
    del info["weights_sha256"]  # weights saved before the digest: loaded unverified
    (tmp_path / "w" / "info.json").write_text(json.dumps(info))
    back, got = checkpoint.load_weights(tmp_path / "w", tree, hint="-")
    assert got == {"steps": 3} and not np.array_equal(back["w"], tree["w"])

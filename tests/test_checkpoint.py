"""Atomic orbax checkpoints of parameter pytrees."""

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

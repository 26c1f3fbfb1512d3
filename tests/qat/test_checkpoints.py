import inspect
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax import checkpoint, qat
from effjax.data import arithmetic as ar
from effjax.formats import get_format
from effjax.quant import recipe

INT4 = recipe(get_format("int4", granularity="group", group_size=32), pattern="_proj$")

# A whole QAT run in a fresh process: `python -c RUN <dir> <kill_after_step or 0>`.
RUN = textwrap.dedent("""
    import os, signal, sys
    import jax, numpy as np
    from effjax import qat
    from effjax.data import arithmetic as ar
    from effjax.formats import get_format
    from effjax.models import LMConfig, init_params
    from effjax.quant import recipe
    directory, kill_after = sys.argv[1], int(sys.argv[2])
    config = LMConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_layers=2,
                      num_heads=2, num_kv_heads=1, head_dim=32, max_position_embeddings=128)
    teacher = init_params(config, jax.random.PRNGKey(0))
    cfg = qat.QATConfig(recipe=recipe(get_format("int4", granularity="group", group_size=32),
                                      pattern="_proj$"),
                        loss="forward_kl", learning_rate=1e-3, warmup_steps=2, total_steps=8)
    state = qat.init_state(teacher, cfg, jax.random.PRNGKey(1), config=config)
    def on_save(step):
        if step == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    with qat.Checkpointer(directory, save_every=2) as ck:
        state, _ = qat.fit(qat.make_train_step(config, cfg), state,
                           lambda pos: ar.training_batch(7, pos, 4, 64), num_steps=8,
                           teacher=teacher, checkpointer=ck, on_save=on_save, progress=False)
    np.save(os.path.join(directory, "final.npy"),
            np.concatenate([np.ravel(x) for x in jax.tree.leaves(state.params)]))
""")


def _run(directory, kill_after):
    return subprocess.run([sys.executable, "-c", RUN, str(directory), str(kill_after)],
                          capture_output=True, text=True, timeout=300, env=os.environ.copy())


@pytest.mark.slow  # 32 s: real SIGKILLed runs; the fast tier kills saves at every point below
def test_killed_run_resumes_bit_identically(tmp_path):
    killed = _run(tmp_path / "a", 4)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "a" / "final.npy").exists()
    assert sorted(p.name for p in (tmp_path / "a").iterdir() if p.name.isdigit()) == ["2", "4"]
    resumed = _run(tmp_path / "a", 0)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = _run(tmp_path / "b", 0)
    assert straight.returncode == 0, straight.stderr[-2000:]
    a, b = np.load(tmp_path / "a" / "final.npy"), np.load(tmp_path / "b" / "final.npy")
    np.testing.assert_array_equal(a, b)


def _state(tiny, steps=2):
    config, params = tiny
    cfg = qat.QATConfig(recipe=INT4, loss="ce", learning_rate=1e-3, total_steps=10)
    state = qat.init_state(params, cfg, jax.random.PRNGKey(3), config=config)
    step = qat.make_train_step(config, cfg)
    for i in range(steps):
        state, _ = step(state, ar.training_batch(0, i, 4, 64), None)
    return config, cfg, state


def test_roundtrip_and_corruption(tiny, tmp_path):
    config, cfg, state = _state(tiny)
    fresh = qat.init_state(tiny[1], cfg, jax.random.PRNGKey(9), config=config)
    with qat.Checkpointer(tmp_path, save_every=1) as ck:
        with pytest.raises(qat.CheckpointError, match="no checkpoint"):
            ck.restore(fresh)
        assert ck.save(state, data_position=2)
        back, pos = ck.restore(fresh)
        assert pos == 2 and int(back.step) == 2
        for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(state), strict=True):
            np.testing.assert_array_equal(x, y)
        later = state._replace(step=state.step + 1)
        ck.save(later, data_position=3)
        assert ck.steps() == [2, 3]
        # damage step 3: its tree metadata cut short, as a crash of the disk would leave it
        meta = pathlib.Path(tmp_path, "3", "default", "_METADATA")
        meta.write_bytes(meta.read_bytes()[:40])
        with pytest.raises(qat.CheckpointError, match=r"step 3.*Other steps on disk: \[2\]"):
            ck.restore(fresh)
        with pytest.warns(UserWarning, match="step 3 is unreadable"):
            back, pos = ck.restore(fresh, fallback=True)
        assert int(back.step) == 2 and pos == 2
        with pytest.raises(qat.CheckpointError, match="no step 7"):
            ck.restore(fresh, step=7)
    with pytest.raises(ValueError, match="save_every"):
        qat.Checkpointer(tmp_path, save_every=0)


def _files(step_dir):
    return sorted(p.relative_to(step_dir).as_posix() for p in step_dir.rglob("*")
                  if p.is_file() and p.name != "effjax_checksums.json")


def _assert_state(back, want):
    for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(want), strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)


def test_every_flipped_byte_names_the_step_and_falls_back(tiny, tmp_path):
    assert qat.CheckpointError is checkpoint.CheckpointError  # one exception type
    config, cfg, state = _state(tiny)
    fresh = qat.init_state(tiny[1], cfg, jax.random.PRNGKey(9), config=config)
    later = state._replace(step=state.step + 1,
                           params=jax.tree.map(lambda p: p + 1, state.params))
    with qat.Checkpointer(tmp_path, save_every=1) as ck:
        ck.save(state, data_position=2)
        ck.save(later, data_position=3)
        files = _files(tmp_path / "3")
        assert sum("/d/" in f for f in files) >= 2  # the array data files
        for rel in files:
            path = tmp_path / "3" / rel
            original = path.read_bytes()
            damaged = bytearray(original)
            damaged[len(damaged) // 2] ^= 0x10
            path.write_bytes(bytes(damaged))
            damage = rf"CheckpointError: .* file {re.escape(repr(rel))} does not match"
            with pytest.raises(qat.CheckpointError,
                               match=rf"step 3: {damage}.*Other steps on disk: \[2\]"):
                ck.restore(fresh)
            if "/d/" in rel:  # an array data file: fall back to step 2 (orbax reads it)
                with pytest.warns(UserWarning,
                                  match=rf"checkpoint step 3 is unreadable \({damage}"):
                    back, pos = ck.restore(fresh, fallback=True)
                assert pos == 2
                _assert_state(back, state)
            path.write_bytes(original)
        back, pos = ck.restore(fresh)
        assert pos == 3
        _assert_state(back, later)
        # both damaged: fallback has nowhere to go, and the error names both
        for step in (2, 3):
            data = tmp_path / str(step) / next(f for f in _files(tmp_path / str(step))
                                               if "/d/" in f)
            data.write_bytes(data.read_bytes()[:-1])
        both = r"step 3: .* does not match.*; step 2: .* does not match"
        with pytest.warns(UserWarning), pytest.raises(qat.CheckpointError, match=both):
            ck.restore(fresh, fallback=True)


def test_step_without_checksums_restores_unverified_with_a_warning(tiny, tmp_path):
    config, cfg, state = _state(tiny)
    with qat.Checkpointer(tmp_path, save_every=1) as ck:
        ck.save(state, data_position=2)
        (tmp_path / "2" / "effjax_checksums.json").unlink()  # as saved before checksums
        assert ck.steps() == [2]
        with pytest.warns(UserWarning, match="step 2 .* has no checksums .* unverified"):
            back, pos = ck.restore(state)
        assert pos == 2
        _assert_state(back, state)


def _small_state(s):
    return qat.TrainState({"w": jnp.arange(8.0) * s}, {"mu": jnp.full((3,), s, jnp.bfloat16)},
                          jnp.asarray(s, jnp.int32), jax.random.PRNGKey(s))


# `python -c KILLED_SAVE <dir> <point>`: saves step 2, then step 4, and SIGKILLs itself when
# step 4's save reaches the named point.
KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys
    import jax, jax.numpy as jnp
    from effjax import qat
    import effjax.qat.checkpoints
""") + inspect.getsource(_small_state) + textwrap.dedent("""
    directory, point = sys.argv[1], sys.argv[2]
    def reached(p):
        if p == point:
            os.kill(os.getpid(), signal.SIGKILL)
    with qat.Checkpointer(directory, save_every=2) as ck:
        ck.save(_small_state(2), 20)
        effjax.qat.checkpoints._reached = reached
        ck.save(_small_state(4), 40)
""")


@pytest.mark.parametrize("point", ["marked", "written", "checksummed"])
def test_save_killed_anywhere_resumes_from_an_intact_step(tmp_path, point):
    killed = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(tmp_path), point],
                            capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert killed.returncode == -9, killed.stderr[-2000:]  # it died at `point`
    assert (tmp_path / ".effjax-saving-4").exists()
    assert (tmp_path / "4").exists() == (point != "marked")  # orbax had committed step 4
    committed = point == "checksummed"
    with qat.Checkpointer(tmp_path, save_every=2) as ck:
        assert ck.steps() == ([2, 4] if committed else [2])
        back, pos = ck.restore(_small_state(0))
        assert pos == (40 if committed else 20)
        _assert_state(back, _small_state(4 if committed else 2))
        if committed:
            with pytest.raises(ValueError, match="step 4 is already saved"):
                ck.save(_small_state(4), 40)
        else:  # the resumed run saves step 4 again over the unfinished one
            assert ck.save(_small_state(4), 40)
        assert ck.steps() == [2, 4]
        assert not list(tmp_path.glob(".effjax-saving-*"))
        assert not list(tmp_path.glob("*.orbax-checkpoint-tmp*"))
        back, pos = ck.restore(_small_state(0))
        assert pos == 40
        _assert_state(back, _small_state(4))


def test_fit_evaluates_and_saves(tiny, tmp_path):
    config, params = tiny
    cfg = qat.QATConfig(recipe=INT4, loss="ce", learning_rate=1e-3, total_steps=4)
    state = qat.init_state(params, cfg, jax.random.PRNGKey(3), config=config)
    seen = []
    with qat.Checkpointer(tmp_path, save_every=3) as ck:
        state, hist = qat.fit(qat.make_train_step(config, cfg), state,
                              lambda pos: ar.training_batch(0, pos, 4, 64), num_steps=4,
                              checkpointer=ck, eval_fn=lambda s: int(s.step) * 10.0,
                              eval_every=2, on_save=seen.append, progress=False)
        assert ck.steps() == [3, 4]
    assert [h["step"] for h in hist] == [1, 2, 3, 4] and seen == [3, 4]
    assert [h.get("eval") for h in hist] == [None, 20.0, None, 40.0]
    assert all(np.isfinite(h["loss"]) for h in hist)

import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from effjax import qat
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

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax import qat
from effjax.data import arithmetic as ar
from effjax.models import forward, init_params


@pytest.fixture(scope="module")
def teacher():
    try:
        return qat.load_teacher()
    except ValueError as e:
        pytest.skip(f"no shipped teacher: {e}")


def test_shipped_teacher_solves_the_task(teacher):
    params, config, info = teacher.params, teacher.config, teacher.extras["info"]
    items = ar.problems(123, 64, split="test")
    acc = qat.accuracy(params, items, batch_size=64, config=config)
    assert acc >= 0.85, acc  # experiments/results/reasoning_qat.md states the 500-problem figure
    assert info["accuracy_256"] >= 0.9
    outs = qat.generate_solutions(params, [items[0].prompt], batch_size=8, config=config)
    assert outs[0].endswith("\n") and "=" in outs[0]


def test_untrained_model_scores_zero():
    params = init_params(qat.TEACHER_CONFIG, jax.random.PRNGKey(0))
    assert qat.accuracy(params, ar.problems(0, 8), batch_size=8, config=qat.TEACHER_CONFIG) == 0.0


def test_train_save_load(tmp_path):
    params, info = qat.train_teacher(config=qat.DRAFT_CONFIG, steps=2, batch_size=4,
                                     eval_every=2, path=tmp_path, progress=False)
    assert info["steps"] == 2 and 0.0 <= info["accuracy_256"] <= 1.0
    back = qat.load_teacher(tmp_path, config=qat.DRAFT_CONFIG)
    assert back.config == qat.DRAFT_CONFIG and back.extras["info"]["steps"] == 2
    for a, b in zip(jax.tree.leaves(back.params), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert jax.tree.structure(back.params) == jax.tree.structure(params)
    with pytest.raises(ValueError, match="no trained weights in .*train_teacher"):
        qat.load_teacher(tmp_path / "none")
    with pytest.raises(ValueError, match=r"expected shapes: missing \['layers/1/"):
        qat.load_teacher(tmp_path)  # one block's weights read as the 4-block teacher
    with pytest.raises(ValueError, match="config.vocab_size must be the char vocabulary's 128"):
        qat.train_teacher(config=dataclasses.replace(qat.DRAFT_CONFIG, vocab_size=64), steps=1,
                          path=None)


def test_shipped_draft_agrees_with_the_teacher(teacher):
    """The one-block draft predicts most of the teacher's solution tokens (teacher-forced)."""
    tparams, tconfig = teacher.params, teacher.config
    draft = qat.load_teacher(config=qat.DRAFT_CONFIG)
    dparams, dconfig = draft.params, draft.config
    assert dconfig.num_layers == 1
    items = ar.problems(5, 32, split="test")
    batch = ar.encode_examples(items, 64)
    tokens = jnp.asarray(batch["tokens"])
    t = jnp.argmax(forward(tparams, tokens, config=tconfig)[0], -1)
    d = jnp.argmax(forward(dparams, tokens, config=dconfig)[0], -1)
    scored = np.asarray(batch["loss_mask"], bool)
    agree = float(np.mean(np.asarray(t == d)[:, :-1][scored[:, 1:]]))  # j - 1 predicts j
    assert 0.7 < agree < 1.0, agree  # a useful draft, not a copy

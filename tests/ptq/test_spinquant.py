"""SpinQuant: Cayley SGD stays on the orthogonal group and optimizes; the learned rotations
keep the float function; without quantization the loss is flat along the rotations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from effjax.ptq import cayley_sgd, orthogonality_error, spinquant_rotations
from effjax.quant import Recipe, recipe
from effjax.transforms import random_orthogonal
from tests.transforms.helpers import logits, rel_err, tiny

TOKENS = np.random.RandomState(0).randint(0, 67, (8, 33)).astype(np.int32)


def test_cayley_sgd_solves_procrustes_on_the_orthogonal_group():
    start = random_orthogonal(12, jax.random.PRNGKey(1))
    skew = jax.random.normal(jax.random.PRNGKey(0), (12, 12))
    skew = skew - skew.T
    eye = jnp.eye(12)
    # a target in start's connected component (Cayley steps never flip the determinant)
    target = jnp.linalg.solve(eye + 0.5 * skew, (eye - 0.5 * skew) @ start)
    params = {"r": start}
    opt = cayley_sgd(0.1, momentum=0.5)
    state = opt.init(params)
    loss = lambda p: jnp.sum((p["r"] - target) ** 2)  # noqa: E731
    first = float(loss(params))
    for _ in range(200):
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
        assert orthogonality_error(params["r"]) < 1e-4
    assert float(loss(params)) < 1e-3 * first
    # a huge gradient: the step a is capped at 1 / ||A||_1, so ||aA||_2 <= 1 and R turns by at
    # most 2 arctan(1/2) per eigen-direction: ||Y - R||_2 <= 2 sin(arctan(1/2)) = 0.894
    # (an uncapped lr 1.5 step would give Y close to -R, ||Y - R||_2 close to 2)
    big = {"r": 1e6 * jax.random.normal(jax.random.PRNGKey(2), (12, 12))}
    updates, _ = cayley_sgd(1.5).update(big, cayley_sgd(1.5).init(params), params)
    assert orthogonality_error(params["r"] + updates["r"]) < 1e-4
    assert np.linalg.norm(np.asarray(updates["r"], np.float64), 2) < 0.895
    with pytest.raises(ValueError, match="cayley_sgd needs params"):
        opt.update(params, state)
    with pytest.raises(ValueError, match="need learning_rate > 0"):
        cayley_sgd(0.0)


def test_without_quantization_the_loss_is_flat():
    config, params = tiny(tied=True, bias=False)
    _, _, losses = spinquant_rotations(params, TOKENS, Recipe(), key=jax.random.PRNGKey(0),
                                       steps=4, batch_size=8, progress=False, config=config)
    np.testing.assert_allclose(losses, losses[0], rtol=1e-5)


def test_learned_rotations_keep_the_float_function():
    config, params = tiny(tied=True, bias=True)
    r = recipe("int4", "int4", pattern=r"_proj$")
    rot, rconfig, losses = spinquant_rotations(params, TOKENS, r,
                                               key=jax.random.PRNGKey(0), steps=5,
                                               batch_size=4, progress=False, config=config)
    assert len(losses) == 5 and np.all(np.isfinite(losses))
    assert not rconfig.tie_word_embeddings
    assert orthogonality_error(rot["layers"][0]["attn"]["kv_rotation"]) < 1e-4
    assert rel_err(logits(rot, rconfig), logits(params, config)) <= 1e-5
    with pytest.raises(ValueError, match="need steps >= 0 and batch_size >= 1"):
        spinquant_rotations(params, TOKENS, r, key=jax.random.PRNGKey(0), steps=-1, config=config)

"""Every transform leaves the float model's logits unchanged (relative error <= 1e-5 in
float32), on tiny models with random norm weights and biases, tied and untied heads, GQA,
q/k norms and Gemma 3's layout; and refuses what it cannot do."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import effjax
from effjax import transforms as T
from tests.transforms.helpers import logits, rel_err, tiny

VARIANTS = {"tied+bias": dict(tied=True, bias=True), "untied": dict(tied=False, bias=False),
            "qk_norm": dict(tied=False, bias=True, qk_norm=True),
            "gemma3": dict(tied=True, bias=False, gemma=True)}
TOL = 1e-5


@pytest.fixture(params=list(VARIANTS), ids=list(VARIANTS))
def model(request):
    return tiny(**VARIANTS[request.param])


def test_fuse_norms(model):
    config, params = model
    fused, fconfig = T.fuse_norms(params, config=config)
    assert not fconfig.tie_word_embeddings and "lm_head" in fused
    assert all(np.all(np.asarray(layer["input_norm"]["weight"]) == 1)
               for layer in fused["layers"].values())
    assert rel_err(logits(fused, fconfig), logits(params, config)) <= TOL


@pytest.mark.parametrize("rotation", ["hadamard", "orthogonal"])
def test_rotate_residual(model, rotation):
    config, params = model
    fused, fconfig = T.fuse_norms(params, config=config)
    key = jax.random.PRNGKey(3)
    q = (T.random_hadamard if rotation == "hadamard" else T.random_orthogonal)(48, key)
    rotated = T.rotate_residual(fused, q)
    assert not np.allclose(rotated["embed"]["embedding"], fused["embed"]["embedding"])
    assert rel_err(logits(rotated, fconfig), logits(params, config)) <= TOL
    if config.sandwich_norms:  # the output norms carry q; rotating twice composes
        np.testing.assert_array_equal(rotated["layers"][1]["mlp_out_norm"]["rotation"], q)
        twice = T.rotate_residual(rotated, q.T)
        assert rel_err(logits(twice, fconfig), logits(params, config)) <= TOL
        np.testing.assert_allclose(twice["layers"][0]["attn_out_norm"]["rotation"], np.eye(48),
                                   atol=1e-6)
    with pytest.raises(ValueError, match="needs fused norms"):
        T.rotate_residual(params, q)
    with pytest.raises(ValueError, match=r"q \(hidden, hidden\) must be an orthogonal"):
        T.rotate_residual(fused, 2 * q)


@pytest.mark.parametrize("online_kv", [True, False])
def test_rotate_values(model, online_kv):
    config, params = model
    r = T.random_hadamard(16, jax.random.PRNGKey(4))
    rotated = T.rotate_values(params, r, online_kv=online_kv, config=config)
    assert ("kv_rotation" in rotated["layers"][0]["attn"]) == online_kv
    assert rel_err(logits(rotated, config), logits(params, config)) <= TOL
    with pytest.raises(ValueError, match=r"must be an orthogonal \(16, 16\) matrix, got shape "
                                         r"\(8, 8\)"):
        T.rotate_values(params, jnp.eye(8), config=config)


def test_online_kv_rotation_changes_what_the_cache_holds():
    config, params = tiny()
    r = T.random_hadamard(16, jax.random.PRNGKey(4))
    rotated = T.rotate_values(params, r, config=config)
    cache = effjax.models.init_cache(config, 2, 12)
    _, c0 = effjax.models.forward(params, jnp.zeros((2, 12), jnp.int32), config=config,
                                  cache=cache)
    _, c1 = effjax.models.forward(rotated, jnp.zeros((2, 12), jnp.int32), config=config,
                                  cache=cache)
    np.testing.assert_allclose(np.asarray(c1.k[0]), np.asarray(c0.k[0]) @ np.asarray(r),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(c1.v[0]), np.asarray(c0.v[0]) @ np.asarray(r),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["hadamard", "affine"])
def test_input_transform(model, kind):
    config, params = model
    if kind == "hadamard":
        left, right = T.hadamard_pair(96)
    else:  # invertible, well conditioned, not orthogonal
        k1, k2 = jax.random.split(jax.random.PRNGKey(5))
        left = jnp.eye(12) + 0.1 * jax.random.normal(k1, (12, 12))
        right = jnp.eye(8) + 0.1 * jax.random.normal(k2, (8, 8))
    out = T.add_input_transform(params, r"mlp/down_proj$", left, right)
    assert "input_transform" in out["layers"][1]["mlp"]["down_proj"]
    assert rel_err(logits(out, config), logits(params, config)) <= TOL
    with pytest.raises(ValueError, match="already has an input transform"):
        T.add_input_transform(out, r"down_proj", left, right)
    with pytest.raises(ValueError, match="does not fit layers/0/attn/q_proj"):
        T.add_input_transform(params, r"q_proj", left, right)
    with pytest.raises(ValueError, match="matches no projection"):
        T.add_input_transform(params, r"nothing", left, right)


def test_smooth(model):
    config, params = model
    rng = np.random.RandomState(6)
    scales = {"layers/0/attn/qkv": rng.uniform(0.3, 3, 48),
              "layers/1/mlp/gate_up": rng.uniform(0.3, 3, 48),
              "layers/0/mlp/down_proj": rng.uniform(0.3, 3, 96)}
    out = T.smooth(params, scales)
    assert rel_err(logits(out, config), logits(params, config)) <= TOL
    with pytest.raises(ValueError, match="must be positive and finite"):
        T.smooth(params, {"layers/0/attn/qkv": -np.ones(48)})
    with pytest.raises(ValueError, match="expected layers/<i>/attn/qkv"):
        T.smooth(params, {"layers/0/attn/o_proj": np.ones(48)})


def test_all_together(model):
    """QuaRot's full set: fused norms, residual Hadamard, value/KV Hadamard, online
    Hadamard before down_proj."""
    config, params = model
    fused, fconfig = T.fuse_norms(params, config=config)
    out = T.rotate_residual(fused, T.random_hadamard(48, jax.random.PRNGKey(7)))
    out = T.rotate_values(out, T.random_hadamard(16, jax.random.PRNGKey(8)), config=fconfig)
    out = T.add_input_transform(out, r"down_proj$", *T.hadamard_pair(96))
    assert rel_err(logits(out, fconfig), logits(params, config)) <= TOL


def test_quantized_kernels_are_refused():
    config, params = tiny()
    q = effjax.quant.quantize_params(params, effjax.quant.recipe("int8"))
    with pytest.raises(ValueError, match="transforms act on float parameters"):
        T.fuse_norms(q, config=config)


@pytest.mark.parametrize("form", ["blocks", "gpk"])
def test_add_block_transform(model, form):
    config, params = model
    keys = jax.random.split(jax.random.PRNGKey(9), 3)

    def near_eye(key, shape):
        return jnp.broadcast_to(jnp.eye(shape[-1]), shape) + 0.2 * jax.random.normal(key, shape)

    def transform(d):
        nb = d // 16
        if form == "blocks":
            return T.BlockDiag(near_eye(keys[0], (nb, 16, 16)))
        return T.GPK(near_eye(keys[1], (4, 4)), near_eye(keys[2], (nb, 4, 4)),
                     clip=jnp.ones((nb,)))

    out = T.add_block_transform(params, r"attn/(q|k|v)_proj$", transform(48))
    out = T.add_block_transform(out, r"mlp/down_proj$", transform(96))
    assert rel_err(logits(out, config), logits(params, config)) <= TOL
    stored = out["layers"][0]["mlp"]["down_proj"]["input_transform"]
    assert type(stored) is (T.BlockDiag if form == "blocks" else T.GPK)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(stored))
    assert (stored.clip is None) == (form == "blocks")
    with pytest.raises(ValueError, match="already has an input transform"):
        T.add_block_transform(out, r"down_proj", transform(96))
    with pytest.raises(ValueError, match="does not fit layers/0/attn/q_proj"):
        T.add_block_transform(params, r"q_proj", transform(96))
    with pytest.raises(ValueError, match="must be an online.BlockDiag or an online.GPK, got Kron"):
        T.add_block_transform(params, r"q_proj", T.Kron(jnp.eye(4), jnp.eye(12)))

"""FreeAct on a trained layer: layer 0 of the shipped masked-diffusion agent, masked vs
unmasked tokens, against the shared-transform (FlatQuant) baseline on held-out windows."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.agents.episodes import MASK_ID, span_attention_mask, training_batch
from effjax.agents.train import AGENT_CONFIG, AgentTraining, load_agent
from effjax.models import forward
from effjax.models.decoder import block_forward, embed
from effjax.models.diffusion import noise_tokens
from effjax.ptq import (
    LayerContext,
    complement_basis,
    flatquant,
    freeact,
    type_grams,
    type_transforms,
)
from effjax.quant import recipe, taps

R = recipe("int4", "int4", pattern=r"_proj$")  # W4A4


def diffusion_windows(position: int, n: int, seed: int):
    """n noised agent trajectories: (tokens, LayerContext with the span attention mask and
    token type 1 on masked tokens)."""
    b = training_batch(7, position, n)
    noised, masked, _ = noise_tokens(jnp.asarray(b["tokens"]), jnp.asarray(b["noisable"]),
                                     jax.random.PRNGKey(seed), mask_id=MASK_ID)
    attn = (span_attention_mask(jnp.asarray(b["turn"]), jnp.asarray(b["is_action"]))
            & jnp.asarray(b["valid"])[:, None, :])
    return noised, LayerContext(attn_mask=attn, token_types=masked.astype(jnp.int32))


@pytest.fixture(scope="module")
def trained():
    params, _ = load_agent(AgentTraining())
    one = dict(params, layers={0: params["layers"][0]})  # layer 0 alone
    tokens, ctx = diffusion_windows(0, 32, 0)
    train = dict(steps=40, batch_size=8, context=ctx, progress=False)  # the same for both
    shared, _ = flatquant(one, AGENT_CONFIG, tokens, R, **train)
    free, info = freeact(one, AGENT_CONFIG, tokens, R, **train)
    return params, one, shared, free, info


def _group_inputs(layer, x, ctx):
    seen = {}
    with taps.collecting(lambda path, a: seen.__setitem__(path, np.asarray(a))):
        block_forward(layer, x, config=AGENT_CONFIG, index=0, attn_mask=ctx.attn_mask,
                      token_types=ctx.token_types)
    return seen


def test_complement_basis_spans_what_the_row_space_misses():
    rng = np.random.RandomState(0)
    x = rng.randn(200, 3) @ rng.randn(3, 8) + 1e-4 * rng.randn(200, 8)  # rank 3 plus noise
    q, r = complement_basis(x.T @ x, 0.999)
    assert r == 3
    np.testing.assert_array_equal(q[:, :3], 0)
    np.testing.assert_allclose(q[:, 3:].T @ q[:, 3:], np.eye(5), atol=1e-5)
    assert np.linalg.norm(x @ q) < 1e-3 * np.linalg.norm(x)
    q1, r1 = complement_basis(x.T @ x, 1.0)
    assert r1 == 8 and not q1.any()
    with pytest.raises(ValueError, match=r"energy must be in \(0, 1\]"):
        complement_basis(x.T @ x, 0.0)
    with pytest.raises(ValueError, match="all zero"):
        complement_basis(np.zeros((4, 4)), 0.9)


def test_type_grams_split_the_layer_inputs_by_type(trained):
    params, one, *_ = trained
    tokens, ctx = diffusion_windows(3, 2, 3)
    x = embed(params, tokens)
    grams = type_grams(one["layers"][0], x, ctx, AGENT_CONFIG, 0, 2)
    inputs = _group_inputs(one["layers"][0], x, ctx)
    types = np.asarray(ctx.token_types).reshape(-1)
    for path in ("layers/0/attn/q_proj", "layers/0/mlp/down_proj"):
        a = inputs[path].reshape(-1, inputs[path].shape[-1]).astype(np.float64)
        for k in (0, 1):
            np.testing.assert_allclose(np.asarray(grams[path][k]), a[types == k].T @ a[types == k],
                                       rtol=1e-4, atol=1e-3)


def test_float_layer_is_kept_on_each_types_subspace_while_t_k_is_not_m_inverse(trained):
    """x T_k M W = x W on held-out inputs projected onto type k's calibration row space,
    with the learned (trained) transforms, and T_k differs from M^-1."""
    params, one, _, _, info = trained
    tokens, ctx = diffusion_windows(1000, 8, 1)
    inputs = _group_inputs(one["layers"][0], embed(params, tokens), ctx)
    types = np.asarray(ctx.token_types).reshape(-1)
    learned = info["learned"][0]
    for group, (block, proj) in {"qkv": ("attn", "q_proj"), "o": ("attn", "o_proj"),
                                 "gate_up": ("mlp", "up_proj"),
                                 "down": ("mlp", "down_proj")}.items():
        t = learned[group]
        tk = np.asarray(type_transforms(t), np.float64)
        m = np.linalg.inv(np.kron(np.asarray(t["left"], np.float64),
                                  np.asarray(t["right"], np.float64)))
        w = np.asarray(one["layers"][0][block][proj]["kernel"], np.float64)
        a = inputs[f"layers/0/{block}/{proj}"].reshape(len(types), -1).astype(np.float64)
        for k in (0, 1):
            q = np.asarray(t["basis"][k], np.float64)
            x = a[types == k] - a[types == k] @ q @ q.T  # onto the row space
            want = x @ w
            err = np.linalg.norm(x @ tk[k] @ m @ w - want) / np.linalg.norm(want)
            assert err <= 1e-4, (group, k, err)
            gap = np.linalg.norm(tk[k] - np.linalg.inv(m)) / np.linalg.norm(np.linalg.inv(m))
            assert gap > 1e-3, (group, k, gap)  # Z_k learned away from 0
        zero_columns = [int(np.all(np.asarray(t["basis"][k]) == 0, axis=0).sum()) for k in (0, 1)]
        assert info["ranks"][f"0/{group}"] == zero_columns  # the rank r_k: Q_k's zero columns


def test_quantized_error_per_type_is_below_the_shared_transforms_on_held_out_data(trained):
    params, one, shared, free, _ = trained
    tokens, ctx = diffusion_windows(1000, 16, 1)
    x = embed(params, tokens)
    ref = block_forward(one["layers"][0], x, config=AGENT_CONFIG, index=0,
                        attn_mask=ctx.attn_mask, token_types=ctx.token_types)
    types = np.asarray(ctx.token_types)
    err = {}
    for name, q in (("shared", shared), ("freeact", free)):
        got = block_forward(q["layers"][0], x, config=AGENT_CONFIG, index=0, recipe=R,
                            attn_mask=ctx.attn_mask, token_types=ctx.token_types)
        e = np.asarray(jnp.mean(jnp.square(got - ref), axis=-1))
        err[name] = [float(e[types == k].mean()) for k in (0, 1)]
    for k in (0, 1):
        assert err["freeact"][k] < err["shared"][k], err


def test_token_types_route_inside_one_compiled_forward(trained):
    params, _, _, free, _ = trained
    model = dict(params, layers={0: free["layers"][0]})
    config = dataclasses.replace(AGENT_CONFIG, num_layers=1)
    tokens, ctx = diffusion_windows(5, 2, 5)

    @jax.jit
    def logits(types):
        return forward(model, tokens, config=config, attn_mask=ctx.attn_mask,
                       token_types=types)[0]

    a = logits(ctx.token_types)
    b = logits(1 - ctx.token_types)
    assert logits._cache_size() == 1
    assert float(jnp.max(jnp.abs(a - b))) > 1e-3  # the types picked different transforms


def test_z_learning_rate_zero_keeps_the_shared_transform(trained):
    _, one, *_ = trained
    tokens, ctx = diffusion_windows(0, 2, 0)
    _, info = freeact(one, AGENT_CONFIG, tokens, R, context=ctx, steps=1, batch_size=2,
                      z_learning_rate=0.0, progress=False)
    for t in info["learned"][0].values():
        assert not np.asarray(t["z"]).any()  # T_k = M^-1: FlatQuant's transform


def test_bad_input(trained):
    params, one, *_ = trained
    tokens, ctx = diffusion_windows(0, 2, 0)
    with pytest.raises(ValueError, match="context.token_types is required"):
        freeact(one, AGENT_CONFIG, tokens, R, context=LayerContext(), progress=False)
    with pytest.raises(ValueError, match="must have the tokens' shape"):
        freeact(one, AGENT_CONFIG, tokens[:1], R, context=ctx, progress=False)
    with pytest.raises(ValueError, match=r"token types must be in \[0, num_types=2\)"):
        freeact(one, AGENT_CONFIG, tokens, R, context=ctx._replace(
            token_types=ctx.token_types + 1), progress=False)
    with pytest.raises(ValueError, match=r"token types \[1\] have no calibration tokens"):
        freeact(one, AGENT_CONFIG, tokens, R, context=ctx._replace(
            token_types=jnp.zeros_like(ctx.token_types)), progress=False)
    with pytest.raises(ValueError, match="energy must be in"):
        freeact(one, AGENT_CONFIG, tokens, R, context=ctx, energy=1.5, progress=False)

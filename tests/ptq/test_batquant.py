"""BATQuant: block transforms invertible by construction (closed-form inverse against float64),
function-preserving in float for every variant, block-wise clipping, and layer-wise training
from a start whose W4A4 MXFP4 error is below RTN's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import effjax
import effjax.formats as F
from effjax.ptq import batquant
from effjax.ptq.batquant import (
    VARIANTS,
    _factor,
    batquant_parameter_count,
    block_matrices,
    cayley,
    factor_matrices,
    gpk_split,
)
from effjax.quant import recipe
from effjax.transforms import GPK, BlockDiag, add_block_transform
from tests.transforms.helpers import logits, rel_err, tiny

TOKENS = np.random.RandomState(0).randint(0, 67, (8, 32)).astype(np.int32)
DIMS = dict(hidden=64, intermediate=128, heads=2, head_dim=32)


def test_gpk_split():
    assert [gpk_split(b) for b in (4, 8, 16, 32, 64)] == [(2, 2), (2, 4), (4, 4), (4, 8),
                                                          (8, 8)]
    with pytest.raises(ValueError, match="block must be a power of two >= 4, got 24"):
        gpk_split(24)


def _random(tree, key, scale=0.3):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [scale * jax.random.normal(k, x.shape)
                                        for k, x in zip(keys, leaves, strict=True)])


@pytest.mark.parametrize("scale", [0.01, 1.0, 30.0])
def test_cayley_matches_the_solve_and_is_orthogonal(scale):
    a = scale * jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32))
    q = np.asarray(cayley(a), np.float64)
    a64 = np.asarray(a, np.float64)
    k = a64 - np.swapaxes(a64, -1, -2)
    ref = np.linalg.solve(np.eye(32) - k, np.eye(32) + k)
    np.testing.assert_allclose(q, ref, atol=1e-4)
    assert np.abs(np.einsum("kab,kcb->kac", q, q) - np.eye(32)).max() < 1e-4
    g = jax.grad(lambda a: jnp.sum(cayley(a)[..., 0, :] ** 3))(a)  # differentiable, finite
    assert np.isfinite(np.asarray(g)).all()


@pytest.mark.parametrize("scaled", [True, False])
def test_factor_inverse_is_closed_form_and_exact_to_float32(scaled):
    f = _random(_factor(8, 3, scaled), jax.random.PRNGKey(0))
    m, inv = factor_matrices(f, 8)
    m64 = np.asarray(m, np.float64)
    np.testing.assert_allclose(np.asarray(inv, np.float64), np.linalg.inv(m64), atol=2e-5)
    err = np.abs(np.einsum("kab,kbc->kac", m64, np.asarray(inv, np.float64)) - np.eye(8))
    assert err.max() < 1e-5
    if not scaled:  # the orthogonal variant stays orthogonal
        np.testing.assert_allclose(np.einsum("kab,kcb->kac", m64, m64),
                                   np.broadcast_to(np.eye(8), (3, 8, 8)), atol=1e-5)
    else:
        assert np.abs(np.einsum("kab,kcb->kac", m64, m64) - np.eye(8)).max() > 1e-2
    start, _ = factor_matrices(_factor(8, None, scaled), 8)  # at zero: the Hadamard matrix
    np.testing.assert_allclose(np.abs(np.asarray(start)), np.full((8, 8), 8**-0.5), rtol=1e-6)


@pytest.mark.parametrize("variant", [
    pytest.param(v, marks=pytest.mark.slow) if v == "gpk" else v for v in VARIANTS])
def test_every_variant_keeps_the_float_function(variant):
    config, params = tiny(tied=False, bias=True, **DIMS)
    for pattern, d in ((r"attn/(q|k|v)_proj$", 64), (r"mlp/down_proj$", 128)):
        nb = d // 32
        if variant == "gpk":
            t = {"global": _factor(4, None, True), "private": _factor(8, nb, True)}
        else:
            t = {"blocks": _factor(32, nb, variant == "full")}
        stored, inv = block_matrices(_random(t, jax.random.PRNGKey(d)), variant, nb, 32)
        params2 = add_block_transform(params, pattern, stored)
        # batquant's closed-form inverse blocks equal the float64 inverse fold computed
        blocks = (np.asarray(stored.blocks) if variant != "gpk" else np.stack(
            [np.kron(stored.glob, p) for p in np.asarray(stored.private)]))
        np.testing.assert_allclose(np.asarray(inv), np.linalg.inv(blocks.astype(np.float64)),
                                   atol=5e-5)
        assert rel_err(logits(params2, config), logits(params, config)) <= 1e-5
        params = params2


@pytest.mark.slow
def test_full_batch_training_goes_below_its_start_that_beats_rtn():
    config, params = tiny(tied=False, bias=False, **DIMS)
    params["embed"]["embedding"] = params["embed"]["embedding"].at[:, 3].mul(10.0)
    r = recipe("mxfp4", "mxfp4", pattern=r"_proj$")
    ref = np.asarray(logits(params, config), np.float64)

    def mse(q):
        return float(np.mean(np.square(np.asarray(logits(q, config, r), np.float64) - ref)))

    rtn = mse(effjax.quant.quantize_params(params, r))
    start, _ = batquant(params, TOKENS, r, steps=0, progress=False, config=config)
    # block Hadamards, no clipping, no training (deterministic): observed 0.70 x RTN's
    assert mse(start) < 0.9 * rtn
    q, hist = batquant(params, TOKENS, r, config=config, steps=30, batch_size=len(TOKENS),
                       learning_rate=1e-3, progress=False)  # full batch: a fixed objective
    assert all(len(h) == 30 and np.all(np.isfinite(h)) for h in hist.values())
    # Rounding makes the trajectory chaotic: with every weight perturbed by 1e-6 (a stand-in
    # for another machine's last bits; 15 runs) layer 0's last loss fell between 0.85 and
    # 0.97 of its first, the least of its last 5 between 0.84 and 0.97, layer 1's last between
    # 0.94 and 0.996; the lowest loss of layer 0's run (where the outlier enters) between
    # 0.79 and 0.83: that is asserted.
    assert min(hist[0]) < 0.9 * hist[0][0]
    assert np.isfinite(np.asarray(logits(q, config, r))).all()
    proj = q["layers"][0]["mlp"]["down_proj"]
    assert isinstance(proj["kernel"], F.QArray)
    assert isinstance(proj["input_transform"], GPK)
    assert proj["input_transform"].private.shape == (4, 8, 8)
    clip = np.asarray(proj["input_transform"].clip)
    assert np.all(clip <= 1) and np.any(clip < 1)  # learned below the start (exactly 1)
    with pytest.raises(ValueError, match="variant must be one of"):
        batquant(params, TOKENS, r, variant="diagonal", config=config)
    q, _ = batquant(params, TOKENS, r, variant="orthogonal", clip=False, steps=2,
                    progress=False, config=config)
    t = q["layers"][1]["attn"]["o_proj"]["input_transform"]
    assert isinstance(t, BlockDiag) and t.clip is None  # no clipping: no activation clip
    b = np.asarray(t.blocks, np.float64)
    np.testing.assert_allclose(np.einsum("kab,kcb->kac", b, b),
                               np.broadcast_to(np.eye(32), b.shape), atol=1e-5)


def test_parameter_counts_and_block_checks():
    config, params = tiny(tied=False, bias=False, **DIMS)
    w4a16 = recipe("mxfp4", pattern=r"_proj$")
    counts = {v: batquant_parameter_count(params, w4a16, variant=v) for v in VARIANTS}
    # per layer: qkv, o: 2 blocks each; gate_up: 2; down: 4 -> 10 blocks; 2 layers
    assert counts["gpk"]["transform"] == 2 * (4 * (2 * 16 + 4) + 10 * (2 * 64 + 8))
    assert counts["full"]["transform"] == 2 * 10 * (2 * 1024 + 32)
    assert counts["orthogonal"]["transform"] == 2 * 10 * 1024
    wclip = 2 * (64 + 32 + 32) + 2 * 64 + 2 * (128 + 128) + 4 * 64  # (blocks, outputs)
    assert counts["gpk"]["clip"] == 2 * wclip  # no activation format: no activation clip
    w4a4 = recipe("mxfp4", "mxfp4", pattern=r"_proj$")
    # + one activation ratio per input block
    assert batquant_parameter_count(params, w4a4)["clip"] == 2 * (wclip + 10)
    assert batquant_parameter_count(params, w4a4, clip=False)["clip"] == 0
    with pytest.raises(ValueError, match="not a multiple of block=32"):
        c48, p48 = tiny(tied=False, bias=False)
        batquant(p48, TOKENS, recipe("mxfp4", pattern=r"_proj$"), steps=1,
                 progress=False, config=c48)

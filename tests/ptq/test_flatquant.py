"""FlatQuant: learned Kronecker transforms before every projection group, learned clipping,
layer-wise training from a Hadamard start that is below RTN's error."""

import jax.numpy as jnp
import numpy as np
import pytest

import effjax
import effjax.formats as F
from effjax.models.decoder import block_forward, embed
from effjax.ptq import flatquant, kron_split
from effjax.quant import recipe
from effjax.transforms import Kron
from tests.transforms.helpers import logits, tiny

TOKENS = np.random.RandomState(0).randint(0, 67, (8, 32)).astype(np.int32)


def test_kron_split():
    assert [kron_split(d) for d in (576, 1536, 48, 96, 7)] == [(24, 24), (48, 32), (8, 6),
                                                              (12, 8), (7, 1)]


def test_every_group_gets_a_transform_and_quantized_kernels():
    config, params = tiny(tied=False, bias=True)
    r = recipe("nvfp4", "nvfp4", pattern=r"_proj$")
    q, hist = flatquant(params, TOKENS, r, steps=0, progress=False, config=config)
    assert hist == {0: [], 1: []}
    for layer in q["layers"].values():
        for block, projs in (("attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
                             ("mlp", ("gate_proj", "up_proj", "down_proj"))):
            for p in projs:
                assert isinstance(layer[block][p]["kernel"], F.QArray)
                assert "input_transform" in layer[block][p]
    assert np.isfinite(np.asarray(logits(q, config, r))).all()
    with pytest.raises(ValueError, match="need steps >= 0 and batch_size >= 1"):
        flatquant(params, TOKENS, r, batch_size=0, config=config)


def _layer0_loss(q, params, config, r):
    """Layer 0's training objective: the mean squared error of its output on all TOKENS."""
    x = embed(params, jnp.asarray(TOKENS), config=config)
    want = block_forward(params["layers"][0], x, config=config, index=0)
    got = block_forward(q["layers"][0], x, config=config, index=0, recipe=r)
    return float(jnp.mean(jnp.square(got - want)))


@pytest.mark.slow
def test_hadamard_start_beats_rtn_and_full_batch_training_descends_with_an_outlier_channel():
    """With an outlier channel in the residual stream (W4A4), the Hadamard start (no
    training, deterministic) has a lower layer-0 error than RTN, and full-batch training
    (every step sees all windows) goes below its start. Whether the trained model ends below
    RTN or its start is a noisy claim (see below), not asserted here."""
    config, params = tiny(tied=False, bias=False)
    params["embed"]["embedding"] = params["embed"]["embedding"].at[:, 3].mul(10.0)
    r = recipe("int4", "int4", pattern=r"_proj$")
    start, _ = flatquant(params, TOKENS, r, steps=0, progress=False, config=config)
    rtn = effjax.quant.quantize_params(params, r)
    start_loss = _layer0_loss(start, params, config, r)
    assert start_loss < 0.9 * _layer0_loss(rtn, params, config, r)  # observed 0.65 x RTN
    q, hist = flatquant(params, TOKENS, r, steps=20, batch_size=len(TOKENS),
                        progress=False, config=config)
    assert all(len(h) == 20 and np.all(np.isfinite(h)) for h in hist.values())
    # the first step's loss (fake-quantized, all windows) is the start's quantized layer's:
    # the same codes, float sums in another order (observed 4e-7 apart)
    np.testing.assert_allclose(hist[0][0], start_loss, rtol=1e-4)
    # Rounding makes the trajectory chaotic: perturbing every weight by 1e-6 (a stand-in for
    # another machine's last bits) moved layer 0's last loss between 0.76 and 0.95 of its
    # first (layer 1's between 1.01 and 1.16), but the lowest loss of the run only between
    # 0.753 and 0.768: that is asserted, for layer 0 (the layer the outlier enters).
    assert min(hist[0]) < 0.9 * hist[0][0]
    # the learned transforms are no longer the orthogonal start
    t = q["layers"][0]["attn"]["q_proj"]["input_transform"].left
    assert not np.allclose(np.asarray(t) @ np.asarray(t).T, np.eye(t.shape[0]), atol=1e-4)
    stored = q["layers"][0]["attn"]["q_proj"]["input_transform"]
    assert isinstance(stored, Kron) and stored.clip is None

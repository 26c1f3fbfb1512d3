"""FlatQuant: learned Kronecker transforms before every projection group, learned clipping,
layer-wise training that lowers the quantized model's error below RTN's."""

import jax
import numpy as np
import pytest

import effjax
import effjax.formats as F
from effjax.ptq import flatquant, kron_split
from effjax.quant import recipe
from tests.transforms.helpers import logits, rel_err, tiny

TOKENS = np.random.RandomState(0).randint(0, 67, (8, 32)).astype(np.int32)


def test_kron_split():
    assert [kron_split(d) for d in (576, 1536, 48, 96, 7)] == [(24, 24), (48, 32), (8, 6),
                                                              (12, 8), (7, 1)]


def test_every_group_gets_a_transform_and_quantized_kernels():
    config, params = tiny(tied=False, bias=True)
    r = recipe("nvfp4", "nvfp4", pattern=r"_proj$")
    q, hist = flatquant(params, config, TOKENS, r, steps=0, progress=False)
    assert hist == {0: [], 1: []}
    for layer in q["layers"].values():
        for block, projs in (("attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
                             ("mlp", ("gate_proj", "up_proj", "down_proj"))):
            for p in projs:
                assert isinstance(layer[block][p]["kernel"], F.QArray)
                assert "input_transform" in layer[block][p]
    assert np.isfinite(np.asarray(logits(q, config, r))).all()
    with pytest.raises(ValueError, match="need steps >= 0 and batch_size >= 1"):
        flatquant(params, config, TOKENS, r, batch_size=0)


@pytest.mark.slow
def test_training_beats_rtn_with_an_outlier_channel():
    config, params = tiny(tied=False, bias=False)
    params["embed"]["embedding"] = params["embed"]["embedding"].at[:, 3].mul(10.0)
    r = recipe("int4", "int4", pattern=r"_proj$")
    q, hist = flatquant(params, config, TOKENS, r, steps=20, progress=False)
    assert all(len(h) == 20 and np.all(np.isfinite(h)) for h in hist.values())
    ref = logits(params, config)
    rtn = effjax.quant.quantize_params(params, r)
    assert rel_err(logits(q, config, r), ref) < rel_err(logits(rtn, config, r), ref)
    # the learned transforms are no longer the orthogonal start
    t = q["layers"][0]["attn"]["q_proj"]["input_transform"]["left"]
    assert not np.allclose(np.asarray(t) @ np.asarray(t).T, np.eye(t.shape[0]), atol=1e-4)
    assert jax.tree.structure(q["layers"][0]["attn"]["q_proj"]["input_transform"]) == (
        jax.tree.structure({"left": 0, "right": 0}))

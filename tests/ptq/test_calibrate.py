"""Calibration statistics against the layer inputs computed independently."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import effjax
from effjax.models.layers import rms_norm
from effjax.ptq import calibrate, calibrate_sequential


@pytest.fixture(scope="module")
def tiny():
    config = effjax.models.LMConfig(vocab_size=61, hidden_size=64, intermediate_size=128,
                                    num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32)
    return config, effjax.models.init_params(config, jax.random.PRNGKey(0))


def test_first_layer_statistics_equal_the_inputs(tiny):
    config, params = tiny
    tokens = np.random.RandomState(0).randint(0, 61, (5, 12)).astype(np.int32)
    stats = calibrate(params, tokens, batch_size=2, sample_size=20, progress=False, config=config)
    assert {"layers/0/attn/q_proj", "layers/1/mlp/down_proj"} <= set(stats)
    # q_proj's input: the first RMSNorm of the embeddings.
    emb = params["embed"]["embedding"][tokens]
    x = np.asarray(rms_norm(emb, params["layers"][0]["input_norm"]["weight"],
                            config.rms_norm_eps)).reshape(-1, 64)
    s = stats["layers/0/attn/q_proj"]
    assert int(s.count) == 60 and s.sample.shape == (20, 64)
    np.testing.assert_allclose(s.xtx, x.T.astype(np.float64) @ x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s.absmax, np.abs(x).max(0), rtol=1e-6)
    np.testing.assert_allclose(s.sample, x[:20], rtol=1e-6, atol=1e-6)
    down = stats["layers/1/mlp/down_proj"]
    assert down.xtx.shape == (128, 128) and int(down.count) == 60


def test_batching_does_not_change_the_statistics_and_bad_input(tiny):
    config, params = tiny
    tokens = np.random.RandomState(1).randint(0, 61, (6, 8)).astype(np.int32)
    a = calibrate(params, tokens, batch_size=6, progress=False, config=config)
    b = calibrate(params, tokens, batch_size=4, progress=False, config=config)
    for path in a:
        np.testing.assert_allclose(a[path].xtx, b[path].xtx, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(a[path].sample, b[path].sample)
    with pytest.raises(ValueError, match=r"tokens must be \(n, t\) calibration windows"):
        calibrate(params, tokens[0], progress=False, config=config)
    with pytest.raises(ValueError, match="batch_size and sample_size must be >= 1"):
        calibrate(params, tokens, batch_size=0, progress=False, config=config)
    assert jnp.asarray(a["layers/0/mlp/up_proj"].count) == 48


def test_block_forward_chain_is_the_forward():
    from tests.transforms.helpers import TOKENS, logits, tiny

    config, params = tiny(tied=False, bias=True, qk_norm=True)
    x = effjax.models.embed(params, TOKENS, config=config)
    for i in range(config.num_layers):
        x = effjax.models.block_forward(params["layers"][i], x, config=config, index=i)
    x = rms_norm(x, params["norm"]["weight"], config.rms_norm_eps)
    np.testing.assert_allclose(x @ params["lm_head"]["kernel"], logits(params, config),
                               rtol=1e-5, atol=1e-5)


def test_block_forward_takes_forwards_positions_and_attention_mask():
    from tests.transforms.helpers import TOKENS, tiny

    config, params = tiny(tied=False, bias=True, qk_norm=True)
    b, t = TOKENS.shape
    positions = jnp.asarray(np.random.RandomState(0).permutation(t)[None].repeat(b, 0),
                            jnp.int32)
    attn = jnp.ones((b, t, t), bool)  # bidirectional
    x = effjax.models.embed(params, TOKENS, config=config)
    for i in range(config.num_layers):
        x = effjax.models.block_forward(params["layers"][i], x, config=config, index=i,
                                        positions=positions, attn_mask=attn)
    x = rms_norm(x, params["norm"]["weight"], config.rms_norm_eps)
    want = effjax.models.forward(params, TOKENS, config=config, positions=positions,
                                 attn_mask=attn)[0]
    np.testing.assert_allclose(x @ params["lm_head"]["kernel"], want, rtol=1e-5, atol=1e-5)
    causal = effjax.models.forward(params, TOKENS, config=config, positions=positions)[0]
    assert float(jnp.max(jnp.abs(want - causal))) > 1e-3  # the mask mattered


def test_sequential_with_identity_quantizer_equals_calibrate(tiny):
    config, params = tiny
    config = dataclasses.replace(config, tie_word_embeddings=False)
    params = effjax.models.init_params(config, jax.random.PRNGKey(0))
    tokens = np.random.RandomState(1).randint(0, 61, (5, 16)).astype(np.int32)
    seen = {}

    def keep(p, stats, index):
        seen.update(stats)
        return p

    out = calibrate_sequential(params, tokens, keep, batch_size=2, progress=False, config=config)
    assert out is params or jax.tree.all(jax.tree.map(lambda a, b: a is b, out, params))
    want = calibrate(params, tokens, batch_size=2, progress=False, config=config)
    assert set(seen) == set(want)
    for path, st in want.items():
        np.testing.assert_allclose(seen[path].xtx, st.xtx, rtol=2e-5, atol=1e-4)
        assert int(seen[path].count) == int(st.count) == 80


def test_sequential_sees_the_quantized_layers_before(tiny):
    config, params = tiny
    tokens = np.random.RandomState(1).randint(0, 61, (4, 16)).astype(np.int32)
    r = effjax.quant.recipe("int4")
    seen = {}

    def quantize(p, stats, index):
        seen.update(stats)
        return p if index is None else effjax.ptq.rtn(p, None, effjax.quant.Recipe(
            rules=(effjax.quant.Rule(pattern=f"^layers/{index}/", weight="int4"),)))

    calibrate_sequential(params, tokens, quantize, progress=False, config=config)
    want = calibrate(params, tokens, progress=False, config=config)
    quantized = calibrate(effjax.quant.quantize_params(params, r), tokens,
                          progress=False, config=config)
    first, later = "layers/0/attn/q_proj", "layers/1/attn/q_proj"
    np.testing.assert_allclose(seen[first].xtx, want[first].xtx, rtol=1e-5, atol=1e-4)
    assert not np.allclose(seen[later].xtx, want[later].xtx, rtol=1e-3)
    # layer 1's input is what the quantized layer 0 produces (the whole model quantized
    # gives the same layer-1 input, since layer 1's own weights do not affect it)
    np.testing.assert_allclose(seen[later].xtx, quantized[later].xtx, rtol=1e-4, atol=1e-3)

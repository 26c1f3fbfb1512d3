"""Logit parity with transformers' PyTorch forward, KV cache, padding, bf16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import effjax
from effjax.models import forward, init_cache, init_params, param_shapes
from tests.models.hf_tiny import TINY, torch_logits, write_tiny


@pytest.fixture(scope="module", params=sorted(TINY))
def tiny(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    model = write_tiny(request.param, path)
    return request.param, effjax.load(path), model


def _tokens(config, shape, seed=0):
    return np.random.RandomState(seed).randint(0, config.vocab_size, shape).astype(np.int32)


def test_logit_parity_with_transformers(tiny):
    name, lm, ref_model = tiny
    tokens = _tokens(lm.config, (2, 40))
    ours = np.asarray(lm.apply(lm.params, tokens))
    ref = torch_logits(ref_model, tokens)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    assert np.abs(ref).max() > 1.0, "reference logits too small to test anything"
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_tiny_configs_cover_required_features():
    import tempfile

    seen = {"gqa": set(), "tied": set(), "qk_norm": False, "bias": False, "llama3": False,
            "odd_head_dim": False, "window": False}
    for name in TINY:
        with tempfile.TemporaryDirectory() as d:
            write_tiny(name, d)
            c = effjax.models.read_config(d)
        seen["gqa"].add(c.num_groups)
        seen["tied"].add(c.tie_word_embeddings)
        seen["qk_norm"] |= c.qk_norm
        seen["bias"] |= c.qkv_bias
        seen["llama3"] |= c.rope_scaling is not None and c.rope_scaling.rope_type == "llama3"
        seen["odd_head_dim"] |= c.head_dim != c.hidden_size // c.num_heads
        seen["window"] |= c.layer_types == ("full_attention", "sliding_attention")
    assert {1, 3, 4} <= seen["gqa"] and seen["tied"] == {True, False}
    assert seen["qk_norm"] and seen["bias"] and seen["llama3"] and seen["odd_head_dim"]
    assert seen["window"]


def test_sharded_safetensors_index(tmp_path):
    model = write_tiny("qwen2_gqa3_bias_window", tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    lm = effjax.load(tmp_path)
    tokens = _tokens(lm.config, (1, 16))
    np.testing.assert_allclose(np.asarray(lm.apply(lm.params, tokens)),
                               torch_logits(model, tokens), atol=1e-4, rtol=0)


def test_kv_cache_decoding_matches_full_forward(tiny):
    _, lm, _ = tiny
    tokens = _tokens(lm.config, (2, 24), seed=1)
    full, _ = forward(lm.params, tokens, config=lm.config)
    cache = init_cache(lm.config, batch=2, max_len=32)
    step = jax.jit(lambda p, t, c: forward(p, t, config=lm.config, cache=c))
    logits, cache = step(lm.params, tokens[:, :10], cache)
    pieces = [logits]
    for i in range(10, 24):
        logits, cache = step(lm.params, tokens[:, i : i + 1], cache)
        pieces.append(logits)
    assert int(cache.length) == 24
    # float32 reordering error grows with the logits' scale (Gemma's scaled embeddings and
    # (1 + w) norms give logits near 15, the others near 5): 1e-5 of the largest logit
    scale = max(1.0, float(np.abs(full).max()))
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=1e-5 * scale, rtol=0)


def test_left_padding_with_mask_and_positions(tiny):
    _, lm, _ = tiny
    short = _tokens(lm.config, (1, 9), seed=2)
    alone, _ = forward(lm.params, short, config=lm.config)
    padded = np.concatenate([np.zeros((1, 7), np.int32), short], axis=1)
    mask = np.arange(16)[None] >= 7
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0).astype(np.int32)
    logits, _ = forward(lm.params, padded, config=lm.config, mask=mask, positions=positions)
    np.testing.assert_allclose(logits[:, 7:], alone, atol=1e-5, rtol=0)


def test_bfloat16_compute_close_to_float32(tiny):
    _, lm, _ = tiny
    tokens = _tokens(lm.config, (1, 20), seed=3)
    f32 = np.asarray(lm.apply(lm.params, tokens))
    bf16_params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), lm.params)
    bf16 = lm.apply(bf16_params, tokens, dtype=jnp.bfloat16)
    assert bf16.dtype == jnp.float32
    err = np.abs(np.asarray(bf16) - f32).max() / np.abs(f32).max()
    assert 0 < err < 5e-2  # bf16 has 8 mantissa bits; it differs, but only slightly


def test_init_params_matches_param_shapes():
    config = effjax.models.LMConfig(vocab_size=50, hidden_size=32, intermediate_size=40,
                                    num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                                    qkv_bias=True, qk_norm=True)
    params = init_params(config, jax.random.PRNGKey(0), dtype=jnp.bfloat16)
    shapes = jax.tree.map(lambda a: a.shape, params)
    assert shapes == param_shapes(config)
    assert shapes["layers"][1]["attn"]["q_proj"]["bias"] == (32,)
    assert shapes["lm_head"]["kernel"] == (32, 50)
    assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(params))


def test_capture_hands_back_what_the_forward_saw():
    config = effjax.models.LMConfig(vocab_size=30, hidden_size=16, intermediate_size=24,
                                    num_layers=2, num_heads=2, num_kv_heads=1, head_dim=8,
                                    qk_norm=True)
    params = init_params(config, jax.random.PRNGKey(2))
    tokens = jnp.asarray(_tokens(config, (2, 6)))
    logits, _, found = forward(params, tokens, config=config,
                               capture=("inputs", "kv", "qk", "qk_prerope"))
    np.testing.assert_array_equal(logits, forward(params, tokens, config=config)[0])
    assert sorted(found) == ["inputs", "kv", "qk", "qk_prerope"]
    assert len(found["inputs"]) == 2 * 7 + 1  # 7 projections a layer, and the head
    # the first layer's q_proj input is the normalized embedding
    x = effjax.models.rms_norm(params["embed"]["embedding"][tokens],
                               params["layers"][0]["input_norm"]["weight"], config.rms_norm_eps)
    np.testing.assert_allclose(found["inputs"]["layers/0/attn/q_proj"], x, rtol=1e-6)
    q = found["qk"]["layers/1/attn/q"]
    assert q.shape == (2, 6, 2, 8) and found["kv"]["layers/1/attn/k"].shape == (2, 6, 1, 8)
    np.testing.assert_array_equal(found["kv"]["layers/1/attn/k"], found["qk"]["layers/1/attn/k"])
    # before RoPE the q/k norm leaves unit RMS per head (weights are ones at init)
    pre = np.asarray(found["qk_prerope"]["layers/1/attn/q"])
    np.testing.assert_allclose(np.sqrt(np.mean(pre**2, axis=-1)), 1.0, rtol=1e-3)
    with pytest.raises(ValueError, match="capture must name kinds from"):
        forward(params, tokens, config=config, capture=("attention",))


@pytest.mark.parametrize("tied", [True, False])
def test_captured_hidden_is_the_heads_input(tied):
    config = effjax.models.LMConfig(vocab_size=30, hidden_size=16, intermediate_size=24,
                                    num_layers=2, num_heads=2, num_kv_heads=1, head_dim=8,
                                    tie_word_embeddings=tied)
    params = init_params(config, jax.random.PRNGKey(1))
    tokens = jnp.asarray(_tokens(config, (2, 7)))
    logits, cache, found = forward(params, tokens, config=config, capture=("hidden",))
    hidden = found["hidden"]
    assert hidden.shape == (2, 7, 16) and cache is None
    head = params["embed"]["embedding"].T if tied else params["lm_head"]["kernel"]
    np.testing.assert_allclose(hidden @ head, logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(forward(params, tokens, config=config)[0], logits)


def _small():
    config = effjax.models.LMConfig(vocab_size=30, hidden_size=16, intermediate_size=24,
                                    num_layers=1, num_heads=2, num_kv_heads=1, head_dim=8,
                                    tie_word_embeddings=True)
    return config, init_params(config, jax.random.PRNGKey(2))


@pytest.mark.parametrize("bad", [30, -1])
def test_forward_rejects_concrete_out_of_range_ids(bad):
    config, params = _small()
    tokens = np.array([[1, bad, 2]], np.int32)
    lo, hi = min(bad, 1), max(bad, 2)
    for ids in (tokens, jnp.asarray(tokens)):
        with pytest.raises(ValueError, match=rf"token ids must lie in \[0, 30\), got ids in "
                                             rf"\[{lo}, {hi}\]"):
            forward(params, ids, config=config)
        with pytest.raises(ValueError, match=r"must lie in \[0, 30\)"):
            effjax.models.decoder.embed(params, ids, config=config)


@pytest.mark.parametrize("bad", [30, -1])
def test_forward_under_jit_gives_nan_for_out_of_range_ids(bad):
    # traced ids cannot raise: the documented result is NaN logits for the bad id's
    # sequence, other sequences untouched; -1 does not wrap around to the last row
    config, params = _small()
    step = jax.jit(lambda p, t: forward(p, t, config=config)[0])
    logits = np.asarray(step(params, jnp.asarray([[1, 2, 3, 4], [1, bad, 3, 4]], jnp.int32)))
    assert np.isfinite(logits[0]).all() and np.isnan(logits[1, 1:]).all()
    good = np.asarray(forward(params, np.array([[1, 2, 3, 4]], np.int32), config=config)[0])
    np.testing.assert_allclose(logits[0], good[0], rtol=1e-6, atol=1e-6)

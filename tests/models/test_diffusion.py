"""The masked-diffusion LM: bidirectional forward, the LLaDA objective, LLaDA loading."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

from effjax.models import LMConfig, forward, init_cache, init_params, load_hf_params, read_config
from effjax.models.diffusion import (
    bidirectional_forward,
    diffusion_loss,
    llada_config,
    llada_name_to_path,
    load_llada,
    noise_tokens,
)
from tests.models.hf_tiny import write_tiny

CFG = LMConfig(vocab_size=40, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
               num_kv_heads=2, head_dim=8, max_position_embeddings=64)


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.PRNGKey(0))


def test_bidirectional_forward_sees_the_future(params):
    tokens = jnp.asarray([[3, 4, 5, 6, 7, 8]], jnp.int32)
    later = tokens.at[0, 5].set(9)
    bi = lambda t: bidirectional_forward(params, t, config=CFG)
    causal = lambda t: forward(params, t, config=CFG)[0]
    assert float(jnp.max(jnp.abs(bi(tokens)[0, 0] - bi(later)[0, 0]))) > 1e-4
    np.testing.assert_array_equal(causal(tokens)[0, :5], causal(later)[0, :5])


def test_attn_mask_through_the_cache_matches_the_uncached_forward(params):
    tokens = jnp.asarray([[3, 4, 5, 6, 7, 8, 9, 10]], jnp.int32)
    rng = np.random.default_rng(0)
    attn = jnp.asarray(rng.random((1, 8, 8)) < 0.6) | jnp.eye(8, dtype=bool)[None]
    want = forward(params, tokens, config=CFG, attn_mask=attn)[0]
    cache = init_cache(CFG, 1, 12)
    got, cache = forward(params, tokens, config=CFG, cache=cache,
                         attn_mask=jnp.pad(attn, ((0, 0), (0, 0), (0, 4))))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert int(cache.length) == 8


def test_noise_tokens_masks_only_noisable_at_rate_t():
    tokens = jnp.full((64, 400), 5, jnp.int32)
    noisable = jnp.zeros((64, 400), bool).at[:, 100:].set(True)
    noised, masked, t = noise_tokens(tokens, noisable, jax.random.PRNGKey(1), mask_id=39)
    assert not bool(jnp.any(masked[:, :100]))
    np.testing.assert_array_equal(noised == 39, masked)
    rate = np.asarray(jnp.mean(masked[:, 100:], axis=1))
    np.testing.assert_allclose(rate, np.asarray(t), atol=0.1)  # 300 draws per row
    assert float(jnp.min(t)) >= 1e-3 and float(jnp.max(t)) <= 1.0


def test_diffusion_loss_equals_a_float64_computation(params):
    rng = np.random.default_rng(2)
    tokens = jnp.asarray(rng.integers(2, 38, (3, 10)), jnp.int32)
    noisable = jnp.asarray(rng.random((3, 10)) < 0.7)
    key = jax.random.PRNGKey(3)
    loss, metrics = diffusion_loss(params, tokens, noisable, key, config=CFG, mask_id=39)
    noised, masked, t = noise_tokens(tokens, noisable, key, mask_id=39)
    logits = np.asarray(bidirectional_forward(params, noised, config=CFG), np.float64)
    logp = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1,
                                  keepdims=True)) - logits.max(-1, keepdims=True)
    nll = -np.take_along_axis(logp, np.asarray(tokens)[..., None], -1)[..., 0]
    m = np.asarray(masked)
    rows = (nll * m).sum(1) / np.asarray(t, np.float64) / np.asarray(noisable).sum(1)
    np.testing.assert_allclose(float(loss), rows.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["masked_ce"]), (nll * m).sum() / m.sum(), rtol=1e-5)
    grads = jax.grad(lambda p: diffusion_loss(p, tokens, noisable, key, config=CFG,
                                              mask_id=39)[0])(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


# The LLaDA name of each Llama-layout tensor (the module docstring's map, written out).
_TO_LLADA = {"self_attn.q_proj": "q_proj", "self_attn.k_proj": "k_proj",
             "self_attn.v_proj": "v_proj", "self_attn.o_proj": "attn_out",
             "mlp.gate_proj": "ff_proj", "mlp.up_proj": "up_proj", "mlp.down_proj": "ff_out",
             "input_layernorm": "attn_norm", "post_attention_layernorm": "ff_norm"}


def _as_llada(hf_dir, out_dir):
    from safetensors.numpy import load_file

    hf = json.loads((hf_dir / "config.json").read_text())
    tensors = {}
    for name, value in load_file(str(hf_dir / "model.safetensors")).items():
        if name == "model.embed_tokens.weight":
            new = "model.transformer.wte.weight"
        elif name == "model.norm.weight":
            new = "model.transformer.ln_f.weight"
        elif name == "lm_head.weight":
            new = "model.transformer.ff_out.weight"
        else:
            _, _, i, rest = name.split(".", 3)
            mod, leaf = rest.rsplit(".", 1)
            new = f"model.transformer.blocks.{i}.{_TO_LLADA[mod]}.{leaf}"
        tensors[new] = value
    out_dir.mkdir()
    save_file(tensors, str(out_dir / "model.safetensors"))
    (out_dir / "config.json").write_text(json.dumps({
        "d_model": hf["hidden_size"], "n_heads": hf["num_attention_heads"],
        "n_kv_heads": hf["num_key_value_heads"], "n_layers": hf["num_hidden_layers"],
        "mlp_hidden_size": hf["intermediate_size"], "vocab_size": hf["vocab_size"],
        "rope_theta": hf.get("rope_theta", 10000.0), "rms_norm_eps": hf["rms_norm_eps"],
        "max_sequence_length": hf["max_position_embeddings"], "weight_tying": False,
        "include_bias": False, "mask_token_id": 96, "activation_type": "silu"}))


def test_load_llada_reads_the_same_weights_as_the_llama_checkpoint(tmp_path):
    write_tiny("llama_mha_untied", tmp_path / "hf")
    _as_llada(tmp_path / "hf", tmp_path / "llada")
    lm = load_llada(tmp_path / "llada")
    params, config, mask_id = lm.params, lm.config, lm.mask_id
    want = load_hf_params(tmp_path / "hf", read_config(tmp_path / "hf"))
    assert mask_id == 96 and config.num_layers == 2 and config.hidden_size == 48
    jax.tree.map(np.testing.assert_array_equal, params, want)


def test_llada_names_and_config_errors(tmp_path):
    assert llada_name_to_path("model.transformer.blocks.3.ff_proj.weight") == (
        "layers", 3, "mlp", "gate_proj", "kernel")
    assert llada_name_to_path("model.transformer.blocks.0.attn_out.weight")[-2] == "o_proj"
    assert llada_name_to_path("model.transformer.rotary.inv_freq") is None
    with pytest.raises(ValueError, match="d_model"):
        llada_config({"n_heads": 4})
    with pytest.raises(ValueError, match="activation_type"):
        llada_config({"d_model": 8, "n_heads": 2, "n_layers": 1, "mlp_hidden_size": 8,
                      "vocab_size": 10, "activation_type": "gelu"})
    with pytest.raises(ValueError, match="config.json"):
        load_llada(tmp_path)

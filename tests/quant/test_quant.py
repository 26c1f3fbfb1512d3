"""Recipes, quantize_params and quantized execution inside the decoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

import effjax
import effjax.formats as F
from effjax.formats.matmul import scaled_matmul
from effjax.models import forward, shard_params
from effjax.quant import Recipe, Rule, get_layer, layer_path, qdot, quantize_params, recipe
from tests.models.hf_tiny import write_tiny


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    write_tiny("llama_mha_untied", path)
    return effjax.load(path)


def test_recipe_rules_first_match_wins_and_validate():
    r = Recipe(rules=(Rule(pattern=r"attn/(q|k)_proj", weight="mxfp8_e4m3"),
                      Rule(pattern=r"_proj$", weight="mxfp4", activation="mxfp4")),
               kv_cache="fp8_e4m3")
    assert r.rule_for("layers/0/attn/q_proj").weight.name == "mxfp8_e4m3"
    assert r.rule_for("layers/0/mlp/up_proj").weight.name == "mxfp4"
    assert r.activation_format("layers/0/attn/k_proj") is None
    assert r.rule_for("embed") is None and r.kv_cache.name == "fp8_e4m3"
    hash(r)  # a static jit argument
    with pytest.raises(ValueError, match="not a valid regular expression"):
        Rule(pattern="(", weight="int8")
    with pytest.raises(ValueError, match="unknown format"):
        Rule(pattern="x", weight="int5")
    assert Rule(pattern="x", activation="int8").activation.granularity == "channel"
    assert Rule(pattern="x", weight="int8").weight.granularity == "channel"
    with pytest.raises(ValueError, match="per-tensor scale"):
        Recipe(kv_cache=F.get_format("fp8_e4m3", granularity="tensor"))


def test_quantize_params_replaces_matched_kernels(lm):
    r = Recipe(rules=(Rule(pattern="mlp/", weight=F.get_format("int4", group_size=32)),))
    qp = quantize_params(lm.params, r)
    layer = qp["layers"][1]
    assert isinstance(layer["mlp"]["down_proj"]["kernel"], F.QArray)
    assert layer["mlp"]["down_proj"]["kernel"].axis == 0
    assert not isinstance(layer["attn"]["q_proj"]["kernel"], F.QArray)
    assert not isinstance(qp["embed"]["embedding"], F.QArray)
    paths = [layer_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(lm.params)[0]]
    assert "layers/1/mlp/down_proj" in paths


def test_get_layer_finds_the_projection_at_a_layer_path(lm):
    for path, leaf in jax.tree_util.tree_leaves_with_path(lm.params):
        if getattr(path[-1], "key", None) == "kernel":
            assert get_layer(lm.params, layer_path(path))["kernel"] is leaf
    with pytest.raises(ValueError, match="no layer at path 'layers/0/attn/x_proj': no 'x_proj'"):
        get_layer(lm.params, "layers/0/attn/x_proj")


@pytest.mark.parametrize("fmt", ["int8", "mxfp4", pytest.param("nvfp4", marks=pytest.mark.slow),
                                 pytest.param("hif4", marks=pytest.mark.slow), "fp8_e4m3"])
def test_weight_only_forward_equals_dequantized_float_forward(lm, fmt):
    r = recipe(fmt)
    qp = quantize_params(lm.params, r)
    deq = jax.tree.map(lambda a: F.dequantize(a) if isinstance(a, F.QArray) else a, qp,
                       is_leaf=lambda a: isinstance(a, F.QArray))
    tokens = np.arange(24, dtype=np.int32)[None] % lm.config.vocab_size
    ours = lm.apply(qp, tokens, recipe=r)
    ref = lm.apply(deq, tokens)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    float_logits = lm.apply(lm.params, tokens)
    assert float(jnp.max(jnp.abs(ours - float_logits))) > 0  # it really is quantized


@pytest.mark.parametrize("fmt", [pytest.param("mxfp8_e4m3", marks=pytest.mark.slow), "mxfp4",
                                 "nvfp4"])  # MXFP8 against scaled_dot fast in test_matmul
def test_block_scaled_qdot_equals_scaled_dot(fmt):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 96)) * 2
    w = jax.random.normal(jax.random.PRNGKey(1), (96, 40))
    qw = F.quantize(w, fmt, axis=0)
    act = F.get_format(fmt)
    ours = qdot(x, qw, act)
    ref = scaled_matmul(F.quantize(x.reshape(10, 96), act, axis=1), qw).reshape(2, 5, 40)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))
    jaxpr = str(jax.make_jaxpr(lambda x, w: qdot(x, w, act))(x, qw))
    assert ("f8_e4m3fn" in jaxpr) if fmt == "nvfp4" or fmt.startswith("mxfp8") else "u8" in jaxpr
    assert "bf16" in jaxpr


def test_activation_and_kv_formats_change_logits_and_jit_once(lm):
    tokens = np.arange(16, dtype=np.int32)[None]
    base = lm.apply(lm.params, tokens)
    # 8-bit formats barely move a random 48-wide model's logits; W4A4 moves them a lot
    for r, min_corr in ((recipe(activation="int8"), 0.99), (recipe(kv_cache="fp8_e4m3"), 0.99),
                        (recipe("mxfp4", "mxfp4"), 0.5)):
        qp = quantize_params(lm.params, r)
        out = lm.apply(qp, tokens, recipe=r)
        assert float(jnp.max(jnp.abs(out - base))) > 0
        corr = np.corrcoef(np.ravel(out), np.ravel(base))[0, 1]
        assert corr > min_corr, (r, corr)  # perturbed, not destroyed
    # KV-cache quantization applies in decoding too: the cached path equals the full one
    r = recipe(kv_cache="fp8_e4m3")
    full, _ = forward(lm.params, tokens, config=lm.config, recipe=r)
    cache = effjax.models.init_cache(lm.config, 1, 16)
    _, cache = forward(lm.params, tokens[:, :10], config=lm.config, cache=cache, recipe=r)
    last, _ = forward(lm.params, tokens[:, 10:], config=lm.config, cache=cache, recipe=r)
    np.testing.assert_allclose(last, full[:, 10:], atol=1e-5)


def test_quantized_params_shard_and_generate(lm):
    r = recipe("mxfp4")
    qp = quantize_params(lm.params, r)
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    sharded = shard_params(qp, mesh)
    tokens = np.arange(8 * 12, dtype=np.int32).reshape(8, 12) % lm.config.vocab_size
    np.testing.assert_allclose(lm.apply(sharded, tokens, recipe=r),
                               lm.apply(qp, tokens, recipe=r), atol=1e-5)
    out = effjax.generate(qp, [[3, 4, 5]], max_new_tokens=4, eos_id=-1, recipe=r, config=lm.config)
    assert len(out[0]) == 4


@pytest.mark.parametrize("weight, act", [("mxfp4", None), ("nvfp4", "nvfp4"),
                                         ("mxfp8_e4m3", "mxfp8_e4m3")])
def test_pallas_impl_runs_the_kernels_and_matches_xla(weight, act):
    config = effjax.models.LMConfig(vocab_size=61, hidden_size=64, intermediate_size=128,
                                    num_layers=1, num_heads=2, num_kv_heads=1, head_dim=32)
    params = effjax.models.init_params(config, jax.random.PRNGKey(0))
    tokens = np.array([[1, 5, 9, 2, 7, 3]], np.int32)
    logits = {}
    for impl in ("pallas", "xla"):
        r = recipe(weight, act, impl=impl)
        qparams = quantize_params(params, r)
        fn = jax.jit(lambda p, r=r: forward(p, tokens, config=config, recipe=r)[0])
        assert ("pallas_call" in str(jax.make_jaxpr(fn)(qparams))) == (impl == "pallas")
        logits[impl] = np.asarray(fn(qparams))
    # Same operands; only the order of the float32 sums over K differs (K tiles).
    np.testing.assert_allclose(logits["pallas"], logits["xla"], rtol=0, atol=1e-4)
    assert np.abs(logits["xla"]).max() > 0.1


def test_impl_is_validated():
    with pytest.raises(ValueError, match=r"impl must be one of \('auto', 'pallas', 'xla'\)"):
        recipe("mxfp4", impl="triton")
    with pytest.raises(ValueError, match="impl must be one of"):
        qdot(jnp.ones((2, 32)), jnp.ones((32, 4)), impl="cuda")

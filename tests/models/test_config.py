"""LMConfig from Hugging Face config.json dicts; RoPE frequencies against transformers."""

import dataclasses

import numpy as np
import pytest
import transformers
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from effjax.models import SUPPORTED_ARCHITECTURES, LMConfig, RopeScaling

BASE = dict(architectures=["LlamaForCausalLM"], vocab_size=100, hidden_size=64,
            intermediate_size=96, num_hidden_layers=2, num_attention_heads=4)


def test_from_hf_defaults_and_families():
    c = LMConfig.from_hf(BASE)
    assert (c.family, c.num_kv_heads, c.head_dim, c.rope_scaling) == ("llama", 4, 16, None)
    q2 = LMConfig.from_hf({**BASE, "architectures": ["Qwen2ForCausalLM"]})
    assert q2.qkv_bias and not q2.o_bias and not q2.qk_norm
    q3 = LMConfig.from_hf({**BASE, "architectures": ["Qwen3ForCausalLM"], "head_dim": 32})
    assert q3.qk_norm and q3.head_dim == 32 and not q3.qkv_bias


GEMMA = dict(BASE, architectures=["Gemma3ForCausalLM"], model_type="gemma3_text",
             head_dim=16, num_key_value_heads=1, sliding_window=512,
             rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                              "full_attention": {"rope_type": "default", "rope_theta": 1e6}})


def test_from_hf_gemma3():
    c = LMConfig.from_hf({**GEMMA, "num_hidden_layers": 12})
    assert c.layer_types == tuple(["sliding_attention"] * 5 + ["full_attention"]) * 2
    assert (c.hidden_act, c.sandwich_norms, c.scale_embeddings, c.qk_norm) == (
        "gelu_tanh", True, True, True)
    assert c.tie_word_embeddings and c.query_pre_attn_scalar == 256
    assert (c.rope_theta, c.local_rope_theta) == (1e6, 1e4)
    np.testing.assert_allclose(c.rope_inv_freq(0), 1e4 ** -(np.arange(0, 16, 2) / 16))
    np.testing.assert_allclose(c.rope_inv_freq(5), 1e6 ** -(np.arange(0, 16, 2) / 16))
    np.testing.assert_allclose(c.rope_inv_freq(), c.rope_inv_freq(5))


@pytest.mark.parametrize("bad, match", [
    ({"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3"},
     "unsupported architecture"),
    ({"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2"}, "Gemma2ForCausalLM"),
    ({"final_logit_softcapping": 30.0}, "final_logit_softcapping=30.0 is not supported"),
    ({"use_bidirectional_attention": True}, "use_bidirectional_attention"),
    ({"layer_types": ["sliding_attention", "chunked_attention"]}, "layer_types must give"),
    ({"hidden_activation": "relu"}, "hidden_activation must be one of"),
])
def test_from_hf_refuses_what_gemma3_support_lacks(bad, match):
    with pytest.raises(ValueError, match=match):
        LMConfig.from_hf({**GEMMA, **bad})


def test_unsupported_architecture_names_the_supported_ones():
    with pytest.raises(ValueError, match="unsupported architecture") as e:
        LMConfig.from_hf({**BASE, "architectures": ["GPT2LMHeadModel"]})
    for arch in SUPPORTED_ARCHITECTURES:
        assert arch in str(e.value)


@pytest.mark.parametrize("bad, match", [
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"use_sliding_window": True}, "sliding_window is None"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "rope_type"),
    ({"num_key_value_heads": 3}, "multiple of num_kv_heads"),
])
def test_from_hf_rejects_bad_options(bad, match):
    with pytest.raises(ValueError, match=match):
        LMConfig.from_hf({**BASE, **bad})


def test_from_hf_sliding_window_layers():
    """Qwen2's rule: layers from max_window_layers on slide; explicit layer_types win."""
    c = LMConfig.from_hf({**BASE, "use_sliding_window": True, "sliding_window": 8,
                          "max_window_layers": 1})
    assert c.layer_types == ("full_attention", "sliding_attention")
    assert [c.layer_window(i) for i in range(2)] == [None, 8]
    c = LMConfig.from_hf({**BASE, "use_sliding_window": True, "sliding_window": 8,
                          "layer_types": ["sliding_attention", "full_attention"]})
    assert [c.layer_window(i) for i in range(2)] == [8, None]
    off = LMConfig.from_hf({**BASE, "use_sliding_window": False, "sliding_window": 8})
    assert off.sliding_window is None and off.layer_window(1) is None


def test_config_validation():
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        LMConfig(vocab_size=10, hidden_size=0, intermediate_size=4, num_layers=1, num_heads=1,
                 num_kv_heads=1, head_dim=4)
    with pytest.raises(ValueError, match="rope_type"):
        RopeScaling(rope_type="ntk", factor=2.0)
    sizes = dict(vocab_size=10, hidden_size=4, intermediate_size=4, num_layers=2, num_heads=1,
                 num_kv_heads=1, head_dim=4)
    with pytest.raises(ValueError, match="sliding_window must be a positive integer"):
        LMConfig(**sizes, sliding_window=0)
    with pytest.raises(ValueError, match="layer_types must give one of"):
        LMConfig(**sizes, sliding_window=4, layer_types=("full_attention",))
    with pytest.raises(ValueError, match="layer_types must give one of"):
        LMConfig(**sizes, sliding_window=4, layer_types=("full_attention", "chunked"))


def test_first_layers_cuts_the_layer_types_too():
    config = LMConfig(vocab_size=10, hidden_size=4, intermediate_size=4, num_layers=3,
                      num_heads=1, num_kv_heads=1, head_dim=4, sliding_window=2,
                      layer_types=("sliding_attention", "full_attention", "sliding_attention"))
    two = config.first_layers(2)
    assert two.num_layers == 2 and two.layer_types == config.layer_types[:2]
    assert [two.layer_window(i) for i in range(2)] == [2, None]
    plain = LMConfig(vocab_size=10, hidden_size=4, intermediate_size=4, num_layers=3,
                     num_heads=1, num_kv_heads=1, head_dim=4)
    assert plain.first_layers(1).layer_types is None
    with pytest.raises(ValueError, match=r"n must be in \[1, 3\], got 4"):
        config.first_layers(4)


@pytest.mark.parametrize("rope", [
    None,
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 64},
])
def test_rope_inv_freq_matches_transformers(rope):
    hf = transformers.LlamaConfig(hidden_size=256, num_attention_heads=4, rope_theta=50000.0,
                                  rope_scaling=rope)
    c = LMConfig.from_hf({**hf.to_dict(), "architectures": ["LlamaForCausalLM"]})
    rope_type = "default" if rope is None else rope["rope_type"]
    if rope_type == "default":
        ref = 1.0 / 50000.0 ** (np.arange(0, 64, 2) / 64)
    else:
        ref = ROPE_INIT_FUNCTIONS[rope_type](hf, "cpu")[0].numpy()
    np.testing.assert_allclose(c.rope_inv_freq(), ref, rtol=1e-6)


def test_from_hf_names_a_missing_or_mistyped_required_field():
    for field in ("hidden_size", "num_attention_heads"):
        hf = {k: v for k, v in BASE.items() if k != field}
        with pytest.raises(ValueError, match=rf"lacks the required field\(s\) \['{field}'\]"):
            LMConfig.from_hf(hf)
    with pytest.raises(ValueError, match=r"field 'hidden_size' must be an integer, got '64'"):
        LMConfig.from_hf({**BASE, "hidden_size": "64"})
    with pytest.raises(ValueError, match=r"rope scaling of type 'linear' lacks its 'factor'"):
        LMConfig.from_hf({**BASE, "rope_scaling": {"rope_type": "linear"}})


def test_to_hf_round_trip_through_transformers():
    """config.json as effjax writes it reads back the same, in effjax and in transformers."""
    from tests.models.hf_tiny import TINY

    for name, (config_cls, model_cls, extra) in TINY.items():
        hf = config_cls(vocab_size=97, hidden_size=48, intermediate_size=80,
                        num_hidden_layers=2, **extra).to_dict()
        config = LMConfig.from_hf({**hf, "architectures": [model_cls.__name__]})
        written = config.to_hf()
        assert LMConfig.from_hf(written) == config, name
        theirs = transformers.AutoConfig.for_model(**written).to_dict()
        assert LMConfig.from_hf(theirs) == config, name
        if name == "llama_mha_untied":
            with pytest.raises(ValueError, match=r"cannot express this config's \['o_bias'\]"):
                dataclasses.replace(config, qkv_bias=True).to_hf()

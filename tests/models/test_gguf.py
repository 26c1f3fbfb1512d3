"""SmolLM2-135M from its GGUF file against transformers loading the same file."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import effjax
from effjax.models.gguf_loader import _unpermute

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "In 1905, Albert Einstein published four papers that",
    "<|im_start|>user\nWhat is 12 times 7?<|im_end|>\n<|im_start|>assistant\n",
]


@pytest.fixture(scope="module")
def reference(smollm2):
    from transformers import AutoModelForCausalLM

    path = effjax.zoo.smollm2_path()
    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                dtype=torch.float32).eval()


def test_unpermute_inverts_llama_cpp_permute():
    # llama.cpp's convert script: rows of each head reordered as (2, half) -> (half, 2).
    n_heads, head_dim, cols = 3, 8, 5
    w = np.random.RandomState(0).randn(n_heads * head_dim, cols)
    permuted = (w.reshape(n_heads, 2, head_dim // 2, cols).swapaxes(1, 2).reshape(w.shape))
    np.testing.assert_array_equal(_unpermute(permuted, n_heads), w)
    assert not np.array_equal(permuted, w)


def test_smollm2_config(smollm2):
    c = smollm2.config
    assert (c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads) == (30, 576, 9, 3)
    assert (c.intermediate_size, c.vocab_size, c.tie_word_embeddings) == (1536, 49152, True)
    assert "lm_head" not in smollm2.params


def test_smollm2_logits_match_transformers(smollm2, reference):
    for prompt in PROMPTS:
        ids = smollm2.tokenizer(prompt, return_tensors="np")["input_ids"].astype(np.int32)
        ours = np.asarray(smollm2.apply(smollm2.params, ids))
        with torch.no_grad():
            ref = reference(torch.tensor(ids, dtype=torch.long)).logits.numpy()
        rel = np.abs(ours - ref).max() / np.abs(ref).max()
        assert rel <= 1e-3, (prompt, rel)


@pytest.mark.slow
def test_smollm2_greedy_continuations_match_transformers(smollm2, reference):
    tok = smollm2.tokenizer
    for prompt in PROMPTS:
        ids = tok(prompt)["input_ids"]
        ours = effjax.generate(smollm2.params, [ids], max_new_tokens=32,
                               eos_id=-1, config=smollm2.config)[0]
        seq = list(ids)
        with torch.no_grad():  # plain greedy loop: argmax of the full forward, no EOS stop
            for _ in range(32):
                seq.append(int(reference(torch.tensor([seq])).logits[0, -1].argmax()))
        ref = seq[len(ids):]
        assert ours == ref, (prompt, tok.decode(ours), tok.decode(ref))


TINY_GGUF = effjax.models.LMConfig(vocab_size=40, hidden_size=16, intermediate_size=24,
                                   num_layers=2, num_heads=4, num_kv_heads=2, head_dim=4,
                                   rms_norm_eps=2.0**-17, max_position_embeddings=64,
                                   tie_word_embeddings=True)
_GGUF_LAYER = {"attn_norm": ("input_norm", "weight"), "ffn_norm": ("post_attn_norm", "weight"),
               "attn_q": ("attn", "q_proj", "kernel"), "attn_k": ("attn", "k_proj", "kernel"),
               "attn_v": ("attn", "v_proj", "kernel"), "attn_output": ("attn", "o_proj", "kernel"),
               "ffn_gate": ("mlp", "gate_proj", "kernel"), "ffn_up": ("mlp", "up_proj", "kernel"),
               "ffn_down": ("mlp", "down_proj", "kernel")}


def _permute(w, n_heads):
    """llama.cpp's interleaving of q/k rows (what `_unpermute` undoes)."""
    return (w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _write_tiny_gguf(path, config, params, skip=()):
    """A float32 llama GGUF of `params`, as llama.cpp's converter lays it out."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    for key, value in (("block_count", config.num_layers),
                       ("context_length", config.max_position_embeddings),
                       ("embedding_length", config.hidden_size),
                       ("feed_forward_length", config.intermediate_size),
                       ("head_count", config.num_heads), ("head_count_kv", config.num_kv_heads),
                       ("vocab_size", config.vocab_size),
                       ("layer_norm_rms_eps", config.rms_norm_eps),
                       ("rope_dimension_count", config.head_dim)):
        if key not in skip:
            getattr(w, f"add_{key}")(value)
    w.add_tensor("token_embd.weight", np.asarray(params["embed"]["embedding"]))
    w.add_tensor("output_norm.weight", np.asarray(params["norm"]["weight"]))
    for i, layer in params["layers"].items():
        for name, target in _GGUF_LAYER.items():
            value = np.asarray(layer[target[0]][target[1]][target[2]] if len(target) == 3
                               else layer[target[0]][target[1]])
            if target[-1] == "kernel":
                value = value.T  # (out, in) rows
                if target[1] == "q_proj":
                    value = _permute(value, config.num_heads)
                elif target[1] == "k_proj":
                    value = _permute(value, config.num_kv_heads)
            w.add_tensor(f"blk.{i}.{name}.weight", np.ascontiguousarray(value, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    params = effjax.models.init_params(TINY_GGUF, jax.random.PRNGKey(0))
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    _write_tiny_gguf(path, TINY_GGUF, params)
    return path, params


def test_tiny_gguf_round_trip(tiny_gguf):
    path, params = tiny_gguf
    lm = effjax.models.load_gguf(path)
    config, loaded = lm.config, lm.params
    assert config == TINY_GGUF
    for (k, a), (_, b) in zip(jax.tree_util.tree_flatten_with_path(loaded)[0],
                              jax.tree_util.tree_flatten_with_path(params)[0], strict=True):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(k))


@pytest.mark.parametrize("cut", [100, 1])
def test_truncated_gguf_names_the_tensor_and_the_bytes(tiny_gguf, tmp_path, cut):
    import gguf

    path, _ = tiny_gguf
    data = path.read_bytes()
    last = max(gguf.GGUFReader(str(path)).tensors, key=lambda t: t.data_offset)
    short = tmp_path / "short.gguf"
    short.write_bytes(data[:-cut])
    have = len(data) - cut - last.data_offset
    assert have < last.n_bytes  # the cut reaches into the last tensor (no end padding)
    with pytest.raises(ValueError, match=(
            rf"{re.escape(repr(str(short)))} is truncated: tensor '{last.name}' needs "
            rf"{last.n_bytes} bytes at offset {last.data_offset}, but the file "
            rf"\({len(data) - cut} bytes\) holds only {have} there")):
        effjax.models.load_gguf(short)


def test_corrupt_gguf_header_names_the_file(tiny_gguf, tmp_path):
    path, _ = tiny_gguf
    for size in (200, 10, 0):
        short = tmp_path / f"head{size}.gguf"
        short.write_bytes(path.read_bytes()[:size])
        with pytest.raises(ValueError, match=rf"{re.escape(repr(str(short)))} is not a "
                                             r"readable GGUF file"):
            effjax.models.load_gguf(short)


def test_gguf_missing_metadata_names_the_key(tmp_path):
    params = effjax.models.init_params(TINY_GGUF, jax.random.PRNGKey(0))
    path = tmp_path / "nokey.gguf"
    _write_tiny_gguf(path, TINY_GGUF, params, skip=("feed_forward_length",))
    with pytest.raises(ValueError, match=r"lacks the GGUF metadata key "
                                         r"'llama.feed_forward_length'"):
        effjax.models.load_gguf(path)


TINY_GEMMA = dataclasses.replace(
    TINY_GGUF, family="gemma3", num_layers=6, hidden_size=16, num_heads=2, num_kv_heads=1,
    head_dim=256, rms_norm_eps=2.0**-20, rope_theta=1e6, qk_norm=True, hidden_act="gelu_tanh",
    sandwich_norms=True, scale_embeddings=True, query_pre_attn_scalar=256.0,
    local_rope_theta=1e4, sliding_window=4,
    layer_types=("sliding_attention",) * 5 + ("full_attention",))


def _write_tiny_gemma_gguf(path, config, params):
    """A float32 gemma3 GGUF of `params` as llama.cpp's converter lays it out: norms as
    1 + w (effjax's form), q/k rows unpermuted, the sliding pattern and local base implied."""
    import gguf

    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_block_count(config.num_layers)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_heads)
    w.add_head_count_kv(config.num_kv_heads)
    w.add_key_length(config.head_dim)
    w.add_value_length(config.head_dim)
    w.add_sliding_window(config.sliding_window)
    w.add_rope_freq_base(config.rope_theta)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_vocab_size(config.vocab_size)
    names = {**_GGUF_LAYER, "post_attention_norm": ("attn_out_norm", "weight"),
             "post_ffw_norm": ("mlp_out_norm", "weight"),
             "attn_q_norm": ("attn", "q_norm", "weight"),
             "attn_k_norm": ("attn", "k_norm", "weight")}
    w.add_tensor("token_embd.weight", np.asarray(params["embed"]["embedding"]))
    w.add_tensor("output_norm.weight", np.asarray(params["norm"]["weight"]))
    for i, layer in params["layers"].items():
        for name, target in names.items():
            value = layer
            for key in target:
                value = value[key]
            value = np.asarray(value)
            if target[-1] == "kernel":
                value = value.T
            w.add_tensor(f"blk.{i}.{name}.weight", np.ascontiguousarray(value, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_tiny_gemma3_gguf_matches_transformers_reading_it(tmp_path):
    """effjax and transformers (which subtracts llama.cpp's + 1 from the norms and reads
    the sliding pattern its own way) load one gemma3 GGUF to the same logits, over a
    sequence four times the window. head_dim is 256 as in Gemma 3 up to 12B, where
    llama.cpp's score scale (key_length ** -0.5) and transformers' default
    query_pre_attn_scalar (256) agree."""
    from transformers import AutoModelForCausalLM

    rng = np.random.default_rng(0)
    params = effjax.models.init_params(TINY_GEMMA, jax.random.PRNGKey(0))
    params = jax.tree_util.tree_map_with_path(  # norms (1 + w) away from 1
        lambda path, a: a + jnp.asarray(rng.normal(0, 0.3, a.shape), a.dtype)
        if getattr(path[-1], "key", "") == "weight" else a, params)
    path = tmp_path / "tiny-gemma3.gguf"
    _write_tiny_gemma_gguf(path, TINY_GEMMA, params)
    lm = effjax.models.load_gguf(path)
    assert lm.config == TINY_GEMMA
    jax.tree.map(np.testing.assert_array_equal, lm.params, params)
    tokens = rng.integers(0, TINY_GEMMA.vocab_size, (2, 16)).astype(np.int32)
    ref = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name,
                                               dtype=torch.float32).eval()
    with torch.no_grad():
        want = ref(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
    got = np.asarray(lm.apply(lm.params, tokens))
    assert np.abs(want).max() > 1.0
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_gemma3_270m_logits_match_transformers(gemma3):
    """Gemma 3 270M (Q4_K_M GGUF, dequantized): effjax against transformers reading the same
    file, on the prompts above and one past the 512-token window."""
    from transformers import AutoModelForCausalLM

    c = gemma3.config
    assert (c.family, c.num_layers, c.hidden_size, c.head_dim, c.sliding_window) == (
        "gemma3", 18, 640, 256, 512)
    assert c.layer_types.count("full_attention") == 3 and c.vocab_size == 262144
    path = effjax.zoo.gemma3_path()
    reference = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                                     dtype=torch.float32).eval()
    long = " ".join(PROMPTS[2] + f" ({i})" for i in range(60))
    for prompt in [*PROMPTS, long]:
        ids = gemma3.tokenizer(prompt, return_tensors="np")["input_ids"].astype(np.int32)
        ours = np.asarray(gemma3.apply(gemma3.params, ids))
        with torch.no_grad():
            ref = reference(torch.tensor(ids, dtype=torch.long)).logits.numpy()
        rel = np.abs(ours - ref).max() / np.abs(ref).max()
        assert rel <= 1e-3, (prompt[:40], ids.shape, rel)
    assert ids.shape[1] > c.sliding_window

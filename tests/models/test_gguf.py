"""SmolLM2-135M from its GGUF file against transformers loading the same file."""

import re

import jax
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

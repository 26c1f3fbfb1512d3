"""SmolLM2-135M from its GGUF file against transformers loading the same file."""

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

    path = effjax.models.zoo_path("smollm2-135m")
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
        ours = effjax.generate(smollm2.params, smollm2.config, [ids], max_new_tokens=32,
                               eos_id=-1)[0]
        seq = list(ids)
        with torch.no_grad():  # plain greedy loop: argmax of the full forward, no EOS stop
            for _ in range(32):
                seq.append(int(reference(torch.tensor([seq])).logits[0, -1].argmax()))
        ref = seq[len(ids):]
        assert ours == ref, (prompt, tok.decode(ours), tok.decode(ref))

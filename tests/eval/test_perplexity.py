"""Sliding-window perplexity against a float64 reference on PyTorch logits."""

import dataclasses

import numpy as np
import pytest
import torch

import effjax
from effjax.eval import perplexity, sliding_windows
from tests.models.hf_tiny import torch_logits, write_tiny


class ByteTokenizer:
    """Bytes modulo the vocabulary: enough of a tokenizer to test windowing; with `bos`,
    that id goes before the text unless add_special_tokens=False (as Gemma's does)."""

    def __init__(self, vocab, bos=None):
        self.vocab, self.bos = vocab, bos

    def __call__(self, text, add_special_tokens=True):
        ids = [b % self.vocab for b in text.encode()]
        return {"input_ids": ([self.bos] if add_special_tokens and self.bos is not None
                              else []) + ids}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen2")
    model = write_tiny("qwen2_gqa3_bias_window", path)
    lm = effjax.load(path)
    return dataclasses.replace(lm, tokenizer=ByteTokenizer(lm.config.vocab_size)), model


@pytest.mark.parametrize("n, seq_len, stride", [(100, 32, 32), (100, 32, 10), (33, 32, 16),
                                                (7, 32, 8), (64, 16, 1)])
def test_windows_score_each_token_once_with_enough_context(n, seq_len, stride):
    scored = []
    for begin, end, first in sliding_windows(n, seq_len, stride):
        assert end - begin == min(seq_len, n) and begin < first < end
        assert first - begin >= max(seq_len - stride, 1) or begin == 0
        scored.extend(range(first, end))
    assert scored == list(range(1, n))


def test_windows_bad_input():
    with pytest.raises(ValueError, match="stride"):
        sliding_windows(10, 4, 5)
    with pytest.raises(ValueError, match="seq_len >= 2"):
        sliding_windows(10, 1, 1)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        sliding_windows(1, 4, 4)


def _reference_nll(model, ids, seq_len, stride, prefix=None):
    """Float64 NLL of each scored token from PyTorch logits, one window at a time; with a
    prefix id, `ids` start with it and it replaces every window's first token."""
    total, count = 0.0, 0
    for begin, end, first in sliding_windows(len(ids), seq_len, stride):
        window = np.asarray(ids[begin:end])
        if prefix is not None:
            window[0] = prefix
        logp = torch.log_softmax(torch.tensor(torch_logits(model, window[None])[0],
                                              dtype=torch.float64), -1).numpy()
        for j in range(first, end):  # token j is predicted at window position j - begin - 1
            total -= logp[j - begin - 1, ids[j]]
            count += 1
    return total / count, count


@pytest.mark.parametrize("seq_len, stride, batch_size", [(48, 48, 2), (48, 16, 3), (64, 40, 4)])
def test_perplexity_matches_float64_reference(tiny, seq_len, stride, batch_size):
    lm, model = tiny
    text = "the quick brown fox jumps over the lazy dog; " * 6
    ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    ref_nll, ref_count = _reference_nll(model, ids, seq_len, stride)
    r = perplexity(lm, text, seq_len=seq_len, stride=stride, batch_size=batch_size,
                   progress=False)
    assert r.num_tokens == ref_count == len(ids) - 1
    assert abs(r.nll - ref_nll) < 1e-5
    assert abs(r.perplexity - np.exp(ref_nll)) / np.exp(ref_nll) < 1e-5
    assert r.corpus == "text" and r.num_windows == len(sliding_windows(len(ids), seq_len, stride))


def test_prefix_token_leads_every_window(tiny):
    """A tokenizer that puts <bos> before text: every window starts with it and the text's
    first token is scored too."""
    lm, model = tiny
    lm = dataclasses.replace(lm, tokenizer=ByteTokenizer(lm.config.vocab_size, bos=1))
    text = "the quick brown fox jumps over the lazy dog; " * 3
    ids = lm.tokenizer(text)["input_ids"]  # [1, text...]
    ref_nll, ref_count = _reference_nll(model, ids, 48, 16, prefix=1)
    r = perplexity(lm, text, seq_len=48, stride=16, progress=False)
    assert r.num_tokens == ref_count == len(ids) - 1 == len(text)
    assert abs(r.nll - ref_nll) < 1e-5
    plain = perplexity(dataclasses.replace(lm, tokenizer=ByteTokenizer(lm.config.vocab_size)),
                       text, seq_len=48, stride=16, progress=False)
    assert abs(plain.nll - r.nll) > 1e-3  # the prefix changes what is scored


class DecodingByteTokenizer(ByteTokenizer):
    """Decodes id i as the character 200 + i: two UTF-8 bytes per token."""

    def decode(self, ids):
        return "".join(chr(200 + i) for i in ids)


def test_bits_per_byte_counts_the_scored_texts_bytes(tiny):
    lm, _ = tiny
    text = "the quick brown fox; " * 4
    plain = perplexity(lm, text, seq_len=32, stride=32, progress=False)
    assert plain.num_bytes is None and plain.bits_per_byte is None  # no decode
    lm = dataclasses.replace(lm, tokenizer=DecodingByteTokenizer(lm.config.vocab_size))
    r = perplexity(lm, text, seq_len=32, stride=32, progress=False)
    ids = lm.tokenizer(text)["input_ids"]
    want_bytes = len(lm.tokenizer.decode(ids[1:]).encode("utf-8"))  # every token but the first
    assert r.num_bytes == want_bytes == 2 * r.num_tokens
    assert r.bits_per_byte == pytest.approx(r.nll * r.num_tokens / np.log(2) / want_bytes,
                                            rel=1e-12)


def test_perplexity_params_override_and_max_tokens(tiny):
    lm, _ = tiny
    docs = ["first document text", "second document, a little longer than the first"]
    base = perplexity(lm, docs, seq_len=32, stride=16, progress=False)
    assert base.num_tokens == len(lm.tokenizer("\n\n".join(docs))["input_ids"]) - 1
    zeroed = dict(lm.params, norm={"weight": lm.params["norm"]["weight"] * 0})
    uniform = perplexity(lm, docs, seq_len=32, stride=16, params=zeroed, progress=False)
    assert abs(uniform.perplexity - lm.config.vocab_size) < 1e-3  # zero logits: uniform
    short = perplexity(lm, docs, seq_len=32, stride=16, max_tokens=20, progress=False)
    assert short.num_tokens == 19


def test_perplexity_bad_input(tiny):
    lm, _ = tiny
    with pytest.raises(ValueError, match="seq_len 4096 is past the context length"):
        perplexity(lm, "abc", seq_len=4096, stride=16)
    with pytest.raises(ValueError, match="batch_size"):
        perplexity(lm, "abcdef", seq_len=8, stride=8, batch_size=0)
    with pytest.raises(ValueError, match="tokenizer"):
        perplexity(dataclasses.replace(lm, tokenizer=None), "abc", seq_len=8, stride=8)


@pytest.mark.slow
def test_smollm2_wikitext2_perplexity(smollm2):
    corpus = effjax.data.load_corpus("wikitext2")
    r = perplexity(smollm2, corpus, seq_len=1024, stride=512, max_tokens=8192, progress=False)
    assert r.num_tokens == 8191
    assert 5.0 < r.perplexity < 40.0  # a 135M model on Wikipedia prose; random would be ~49152

"""token_kl and kl_and_perplexity against a float64 NumPy computation of the same windows."""

import jax
import numpy as np
import pytest

import effjax
from effjax.eval import kl_and_perplexity, token_kl
from effjax.quant import recipe
from tests.transforms.helpers import tiny_lm

TEXT = "The quick brown fox jumps over the lazy dog. " * 8


def _ref_kl(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    la = a - np.log(np.sum(np.exp(a - a.max(-1, keepdims=True)), -1, keepdims=True)) - a.max(
        -1, keepdims=True)
    lb = b - np.log(np.sum(np.exp(b - b.max(-1, keepdims=True)), -1, keepdims=True)) - b.max(
        -1, keepdims=True)
    return np.mean(np.sum(np.exp(la) * (la - lb), -1))


def test_token_kl_matches_numpy_and_is_zero_for_itself():
    lm = tiny_lm(tied=False)
    other = effjax.models.LM(lm.config, jax.tree.map(lambda x: x * 1.05, lm.params),
                             lm.tokenizer, "scaled")
    assert token_kl(lm, lm, TEXT, seq_len=32, max_tokens=128, progress=False) == (
        pytest.approx(0.0, abs=1e-6))
    ids = np.asarray(lm.tokenizer(TEXT)["input_ids"][:128], np.int32).reshape(4, 32)
    want = _ref_kl(lm.apply(lm.params, ids), other.apply(other.params, ids))
    got = token_kl(lm, other, TEXT, seq_len=32, max_tokens=128, progress=False)
    assert got == pytest.approx(want, rel=1e-4) and got > 0
    r = recipe("mxfp4", "mxfp4")
    q = effjax.models.LM(lm.config, effjax.quant.quantize_params(lm.params, r), lm.tokenizer, "q")
    assert token_kl(lm, q, TEXT, recipe=r, seq_len=32, max_tokens=128, progress=False) > 0
    with pytest.raises(ValueError, match="fewer than one window of 512"):
        token_kl(lm, lm, "short", seq_len=512, progress=False)


def _ref_nll(logits, ids):
    a = np.asarray(logits, np.float64)[:, :-1]
    la = a - a.max(-1, keepdims=True)
    la = la - np.log(np.sum(np.exp(la), -1, keepdims=True))
    return -np.take_along_axis(la, ids[:, 1:, None], -1).mean()


def test_kl_and_perplexity_match_numpy_in_one_pass():
    lm = tiny_lm(tied=False)
    other = effjax.models.LM(lm.config, jax.tree.map(lambda x: x * 0.9, lm.params),
                             lm.tokenizer, "scaled")
    ids = np.asarray(lm.tokenizer(TEXT)["input_ids"][:96], np.int32).reshape(3, 32)
    got = kl_and_perplexity(lm, other, TEXT, seq_len=32, max_tokens=100, batch_size=2,
                            progress=False)
    assert got.tokens == 96
    assert got.kl == pytest.approx(_ref_kl(lm.apply(lm.params, ids),
                                           other.apply(other.params, ids)), rel=1e-4)
    assert got.perplexity == pytest.approx(np.exp(_ref_nll(other.apply(other.params, ids), ids)),
                                           rel=1e-4)
    assert got.kl == token_kl(lm, other, TEXT, seq_len=32, max_tokens=100, progress=False)

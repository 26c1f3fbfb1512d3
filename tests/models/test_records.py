"""The model records' text helpers: the tokenizer's prefix token and the windows that
calibration and token KL read."""

import numpy as np
import pytest

import effjax
from effjax.models import prefix_token, token_windows
from tests.eval.test_perplexity import ByteTokenizer


def _lm(tokenizer):
    return effjax.models.LM(config=None, params={}, tokenizer=tokenizer, source="test")


def test_prefix_token():
    assert prefix_token(ByteTokenizer(50, bos=7)) == 7
    assert prefix_token(ByteTokenizer(50)) is None


class _Suffixed(ByteTokenizer):
    """Adds an end token after the text: no prefix."""

    def __call__(self, text, add_special_tokens=True):
        ids = super().__call__(text, add_special_tokens=False)["input_ids"]
        return {"input_ids": ids + ([3] if add_special_tokens else [])}


def test_prefix_token_ignores_suffixes():
    assert prefix_token(_Suffixed(50)) is None


@pytest.mark.parametrize("bos", [None, 7])
def test_token_windows(bos):
    text = "abcdefghijklmnopqrstuvwxyz"
    ids = [b % 50 for b in text.encode()]
    rows = token_windows(_lm(ByteTokenizer(50, bos=bos)), text, window=6, max_windows=3)
    assert rows.dtype == np.int32 and rows.shape == (3, 6)
    body = rows if bos is None else rows[:, 1:]
    if bos is not None:
        assert (rows[:, 0] == bos).all()
    np.testing.assert_array_equal(body.reshape(-1), ids[:body.size])  # the text, in order
    everything = token_windows(_lm(ByteTokenizer(50, bos=bos)), [text, text], window=6,
                               max_windows=100)
    assert len(everything) == (2 * 26 + 2) // (6 - (bos is not None))  # docs joined by \n\n


def test_token_windows_bad_input():
    lm = _lm(ByteTokenizer(50, bos=7))
    with pytest.raises(ValueError, match="the text has 3 tokens, fewer than one window of 5 "
                                         "after the prefix token"):
        token_windows(lm, "abc", window=6, max_windows=1)
    with pytest.raises(ValueError, match="need window >= 2 and max_windows >= 1"):
        token_windows(lm, "abcdef", window=1, max_windows=1)
    with pytest.raises(ValueError, match="without a tokenizer"):
        token_windows(_lm(None), "abcdef", window=4, max_windows=1)

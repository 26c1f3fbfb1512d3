"""Loading llama- and gemma3-architecture GGUF files (llama.cpp) into effjax params,
dequantized with numpy."""

from __future__ import annotations

import pathlib
from typing import TYPE_CHECKING

import jax
import numpy as np

from effjax.formats import QArray, get_format
from effjax.models.config import LMConfig, RopeScaling
from effjax.models.decoder import Params
from effjax.models.hf import check_params, set_path
from effjax.models.records import LM

if TYPE_CHECKING:
    import gguf

_LAYER_NAMES = {
    "attn_norm.weight": ("input_norm", "weight"),
    "ffn_norm.weight": ("post_attn_norm", "weight"),
    "attn_q.weight": ("attn", "q_proj", "kernel"),
    "attn_k.weight": ("attn", "k_proj", "kernel"),
    "attn_v.weight": ("attn", "v_proj", "kernel"),
    "attn_output.weight": ("attn", "o_proj", "kernel"),
    "ffn_gate.weight": ("mlp", "gate_proj", "kernel"),
    "ffn_up.weight": ("mlp", "up_proj", "kernel"),
    "ffn_down.weight": ("mlp", "down_proj", "kernel"),
}
# Gemma 3's four norms per block (see `effjax.models.hf`) and its q/k norms. llama.cpp's
# converter stores every Gemma norm as 1 + w, the form effjax keeps.
_GEMMA_LAYER_NAMES = {
    **_LAYER_NAMES,
    "post_attention_norm.weight": ("attn_out_norm", "weight"),
    "post_ffw_norm.weight": ("mlp_out_norm", "weight"),
    "attn_q_norm.weight": ("attn", "q_norm", "weight"),
    "attn_k_norm.weight": ("attn", "k_norm", "weight"),
}
ARCHITECTURES = ("llama", "gemma3")
# llama.cpp's fixed Gemma 3 layout: every 6th layer global, the others local with RoPE base 1e4.
_GEMMA_PATTERN = 6
_GEMMA_LOCAL_THETA = 10000.0
_TOP_NAMES = {
    "token_embd.weight": ("embed", "embedding"),
    "output_norm.weight": ("norm", "weight"),
    "output.weight": ("lm_head", "kernel"),
}


def _field(reader: gguf.GGUFReader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


class _GGUFFileError(ValueError):
    """A GGUF file that is truncated or malformed (the message names the file)."""


def _check_tensor_bytes(data: np.ndarray, start: int, fields, path: str) -> None:
    """Raises `_GGUFFileError` naming the first tensor whose data runs past the file's end.

    Args:
      data: the file's bytes (the reader's memmap).
      start: offset of the tensor data section.
      fields: the reader's tensor-info fields (name, dims, type and offset of each tensor).
      path: the file, for the message.
    """
    import gguf  # noqa: PLC0415

    for field in fields:
        try:
            _, name, _, dims, raw_type, offset = field.parts
        except (TypeError, ValueError):  # another gguf version's layout: the reader checks
            return
        name = bytes(name).decode("utf-8", "replace")
        try:
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(int(raw_type[0]))]
        except (ValueError, KeyError):
            raise _GGUFFileError(f"{path!r}: tensor {name!r} has unknown GGML type "
                                 f"{int(raw_type[0])}") from None
        need = int(np.prod(dims.astype(np.int64))) * type_size // block
        at = start + int(offset[0])
        have = max(len(data) - at, 0)
        if have < need:
            raise _GGUFFileError(
                f"{path!r} is truncated: tensor {name!r} needs {need} bytes at offset {at}, "
                f"but the file ({len(data)} bytes) holds only {have} there")


def _open(path: str) -> gguf.GGUFReader:
    """A `gguf.GGUFReader` for `path`, with a ValueError naming the file (and, for a
    truncated file, the tensor cut short) where the reader would fail."""
    import gguf  # noqa: PLC0415

    class Reader(gguf.GGUFReader):
        def _build_tensors(self, start_offs, fields):
            _check_tensor_bytes(self.data, start_offs, fields, path)
            super()._build_tensors(start_offs, fields)

    try:
        return Reader(path)
    except _GGUFFileError:
        raise
    except (ValueError, KeyError, IndexError, TypeError, OSError) as e:
        raise ValueError(f"{path!r} is not a readable GGUF file (truncated or corrupt?): "
                         f"{type(e).__name__}: {e}") from e


def _permute_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's interleaving of each head's rotary halves (what `_unpermute` undoes;
    the GGUF exporter writes q/k rows this way)."""
    rows = w.shape[0]
    return (w.reshape(n_heads, 2, rows // n_heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undoes llama.cpp's interleaving of the rotary halves in q/k projection rows.

    llama.cpp stores each head's rows as (pairs, 2) interleaved for its rotary kernel;
    Hugging Face (and effjax) keep the two halves as contiguous blocks.
    """
    rows = w.shape[0]
    return (w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def _exact_blocks(tensor, gguf) -> bool:
    """Whether a GGUF tensor's blocks are an effjax format bit for bit (MXFP4; Q4_0; Q8_0
    without the code -128, which effjax's symmetric INT8 reserves for NaN)."""
    kind = tensor.tensor_type
    if kind in (gguf.GGMLQuantizationType.MXFP4, gguf.GGMLQuantizationType.Q4_0):
        return True
    if kind == gguf.GGMLQuantizationType.Q8_0:
        codes = np.asarray(tensor.data).reshape(-1, 34)[:, 2:].view(np.int8)
        return not (codes == -128).any()
    return False


def _blocks_qarray(blocks: np.ndarray, inputs: int, kind: str, dtype) -> QArray:
    """GGML blocks (out, in / 32 * block bytes) as the (in, out) effjax kernel they hold.

    MXFP4: the E8M0 bytes become the scales and the nibbles (element j low, j + 16 high in
    GGML) are repacked as effjax's neighbours (element 2i low, 2i + 1 high). Q8_0: the f16
    scales as float32, the int8 codes as they are. Q4_0 (value = d * (nibble - 8)): INT4
    per 32, symmetric when no nibble is 0 (effjax's NaN code -8), else with zero points 8.
    """
    rows, nb = blocks.shape[0], inputs // 32
    head = {"Q8_0": 2, "Q4_0": 2, "MXFP4": 1}[kind]
    b = blocks.reshape(rows, nb, -1)
    zero = None
    if kind == "Q8_0":
        codes = np.ascontiguousarray(b[..., 2:]).view(np.int8).reshape(rows, inputs)
        fmt = get_format("int8", granularity="group", group_size=32)
    else:
        packed = b[..., head:]
        elements = np.concatenate([packed & 0xF, packed >> 4], axis=-1).reshape(rows, inputs)
        fmt = get_format("mxfp4")
        if kind == "Q4_0":
            symmetric = not (elements == 0).any()
            elements = (elements - 8) & 0xF if symmetric else elements
            zero = None if symmetric else np.full((rows, nb), 8.0, np.float32)
            fmt = get_format("int4", granularity="group", group_size=32, symmetric=symmetric)
        codes = (elements[:, 0::2] | (elements[:, 1::2] << 4)).astype(np.uint8)
    if head == 2:
        scale = np.ascontiguousarray(b[..., :2]).view(np.float16)[..., 0].astype(np.float32)
    else:
        scale = np.ascontiguousarray(b[..., 0])
    return QArray(codes=jax.numpy.asarray(codes), scale=jax.numpy.asarray(scale),
                  global_scale=None, zero_point=None if zero is None else jax.numpy.asarray(zero),
                  levels=None, fmt=fmt, axis=0, shape=(inputs, rows), dtype=np.dtype(dtype).name)


def read_gguf_config(reader: gguf.GGUFReader, path: str) -> LMConfig:
    """Builds an `LMConfig` from a GGUF file's llama.* or gemma3.* metadata.

    Gemma 3 follows llama.cpp: layers 6, 12, ... are global, the others slide over
    `attention.sliding_window` with RoPE base 1e4, and scores are scaled by key_length ** -0.5
    (true of every Gemma 3 size but 27B).

    Raises:
      ValueError: an architecture outside `ARCHITECTURES`, an unsupported RoPE option, or a
        missing metadata key (naming `path` and the key).
    """
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(f"unsupported GGUF architecture {arch!r} in {path!r}; "
                         f"supported: {list(ARCHITECTURES)}")
    g = lambda key, default=None: _field(reader, f"{arch}.{key}", default)  # noqa: E731

    def need(key):
        value = g(key)
        if value is None:
            raise ValueError(f"{path!r} lacks the GGUF metadata key '{arch}.{key}'")
        return value

    hidden, heads = int(need("embedding_length")), int(need("attention.head_count"))
    names = {t.name for t in reader.tensors}
    if "rope_freqs.weight" in names:
        raise ValueError(f"{path!r} has per-frequency RoPE factors (rope_freqs), which are not "
                         "supported; load the Hugging Face directory instead")
    scaling = None
    scaling_type = g("rope.scaling.type", "none")
    if scaling_type == "linear":
        scaling = RopeScaling(rope_type="linear", factor=float(g("rope.scaling.factor")))
    elif scaling_type not in ("none", None):
        raise ValueError(f"GGUF rope.scaling.type must be 'none' or 'linear', got {scaling_type!r}")
    tok = lambda key: _field(reader, f"tokenizer.ggml.{key}")  # noqa: E731
    vocab = g("vocab_size")
    if vocab is None:
        if "tokenizer.ggml.tokens" not in reader.fields:
            raise ValueError(f"{path!r} has neither 'llama.vocab_size' nor "
                             "'tokenizer.ggml.tokens' to give the vocabulary size")
        vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    extra = {}
    head_dim = int(g("rope.dimension_count", hidden // heads))
    if arch == "gemma3":
        head_dim = int(need("attention.key_length"))
        layers, window = int(need("block_count")), g("attention.sliding_window")
        extra = dict(
            hidden_act="gelu_tanh", sandwich_norms=True, scale_embeddings=True, qk_norm=True,
            query_pre_attn_scalar=float(head_dim), local_rope_theta=_GEMMA_LOCAL_THETA,
            sliding_window=None if window is None else int(window),
            layer_types=None if window is None else tuple(
                "full_attention" if (i + 1) % _GEMMA_PATTERN == 0 else "sliding_attention"
                for i in range(layers)))
    return LMConfig(
        family=arch,
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(need("feed_forward_length")),
        num_layers=int(need("block_count")),
        num_heads=heads,
        num_kv_heads=int(g("attention.head_count_kv", heads)),
        head_dim=head_dim,
        rms_norm_eps=float(g("attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(g("rope.freq_base", 10000.0)),
        rope_scaling=scaling,
        max_position_embeddings=int(g("context_length", 2048)),
        tie_word_embeddings="output.weight" not in names,
        bos_token_id=tok("bos_token_id"),
        eos_token_id=tok("eos_token_id"),
        pad_token_id=tok("padding_token_id"),
        **extra,
    )


def load_gguf(path: str | pathlib.Path, *, dtype=np.float32, tokenizer: bool = False,
              quantized: bool = False) -> LM:
    """Reads a llama or gemma3 GGUF file: config, dequantized parameters and optionally its
    tokenizer.

    Args:
      path: the .gguf file.
      dtype: dtype of the returned arrays.
      tokenizer: also build the file's tokenizer (`transformers`).
      quantized: load the projection kernels whose GGML type effjax has exactly as `QArray`s,
        with no float round trip: MXFP4 as "mxfp4", Q8_0 (an f16 scale per 32 int8 codes,
        none of them -128) as "int8:32", Q4_0 as "int4:32" (with zero points 8 where a
        code is -8); other tensors are dequantized.

    Returns:
      An `LM` whose params have (in, out) kernels and q/k rows in Hugging Face order.

    Raises:
      ValueError: the file is missing, truncated (naming the tensor cut short, with the
        bytes it needs and the bytes left), not a readable GGUF file, an architecture
        outside `ARCHITECTURES`, or lacks a tensor or metadata key the config needs.
    """
    path = str(path)
    if not pathlib.Path(path).is_file():
        raise ValueError(f"GGUF file not found: {path!r}")
    import gguf  # noqa: PLC0415 (only reading a .gguf file needs it)

    reader = _open(path)
    config = read_gguf_config(reader, path)
    gemma = config.family == "gemma3"
    layer_names = _GEMMA_LAYER_NAMES if gemma else _LAYER_NAMES
    params: Params = {}
    for tensor in reader.tensors:
        name = tensor.name
        if name in _TOP_NAMES:
            target = _TOP_NAMES[name]
        elif name.startswith("blk."):
            _, index, rest = name.split(".", 2)
            if rest not in layer_names:
                continue
            target = ("layers", int(index), *layer_names[rest])
        else:
            continue
        exact = quantized and target[-1] == "kernel" and _exact_blocks(tensor, gguf)
        if exact:  # the stored blocks as byte rows (out, in / 32 * block bytes)
            value = np.asarray(tensor.data).reshape(int(tensor.shape[1]), -1)
        else:
            value = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            value = value.reshape(tuple(int(d) for d in reversed(tensor.shape)))
        if not gemma and target[-2] in ("q_proj", "k_proj"):  # gemma3 keeps HF's row order
            value = _unpermute(value, config.num_heads if target[-2] == "q_proj"
                               else config.num_kv_heads)
        if exact:
            value = _blocks_qarray(value, int(tensor.shape[0]), tensor.tensor_type.name, dtype)
        elif target[-1] == "kernel":
            value = np.ascontiguousarray(value.T, dtype=dtype)
        else:
            value = np.ascontiguousarray(value, dtype=dtype)
        set_path(params, target, value)
    check_params(params, source=path, config=config)
    tok = None
    if tokenizer:
        from transformers import AutoTokenizer  # noqa: PLC0415

        file = pathlib.Path(path)
        tok = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
    return LM(config=config, params=jax.tree.map(jax.numpy.asarray, params), tokenizer=tok,
              source=path)

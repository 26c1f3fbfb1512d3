"""Writing effjax decoder LMs as GGUF files (llama.cpp's format) through the `gguf` package.

A kernel whose effjax format GGML has bit for bit is written as it is stored: MXFP4 (E8M0
block scale, E2M1 elements, blocks of 32; GGML keeps element j of a block in the low nibble
of byte j and element j + 16 in the high one, effjax packs neighbours, so only the nibbles
move). INT8 / INT4 per 32 go to Q8_0 / Q4_0 (symmetric) and Q4_1 (with a zero point) with
their codes unchanged and each scale stored as GGML's float16: bit for bit when the scales
are float16 values (a GGUF file loaded with `quantized=True` and written back), else off by
that rounding alone. Every other quantized kernel is dequantized and re-quantized to the
GGML type asked for (`requantize`), float tensors are cast to `float_type`, norms stay
float32; each tensor's record says which happened and the largest difference from effjax's
values it caused (measured by the `gguf` package's dequantization of what was written).

Architectures: "llama" (q/k rows interleaved as llama.cpp's converter does) and "gemma3"
(llama.cpp's fixed layout: every 6th layer global, local RoPE base 1e4, Gemma's norms as the
1 + w effjax keeps). After writing, the file's config is read back with effjax's loader and
must equal the model's, or the file is removed and the differing fields are named.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from effjax.export.common import TensorRecord, int_codes, refuse_online_transforms
from effjax.formats import Format, QArray, dequantize, parse_format_spec
from effjax.models.config import LMConfig
from effjax.models.gguf_loader import (
    _GEMMA_LAYER_NAMES,
    _LAYER_NAMES,
    _TOP_NAMES,
    _permute_rows,
)
from effjax.models.records import LM

EXACT = {"mxfp4": "MXFP4", "int8:32": "Q8_0", "int4:32": "Q4_0", "int4:32@asym": "Q4_1"}
"""effjax format spec -> the GGML type its kernels are written in, codes as they are: MXFP4
bit for bit; the INT types with each scale (and Q4_1's minimum, -zero_point * scale) as a
float16, bit for bit where those are float16 values (the record says)."""
GGML_TYPES = ("q8_0", "q4_0", "q4_1", "bf16", "f16", "f32")
"""What `requantize` and `float_type` may name (GGML types the `gguf` package encodes)."""


def _mxfp4_blocks(q: QArray, name: str) -> np.ndarray:
    """An MXFP4 kernel's (out, in) GGML blocks as bytes (out, in / 32 * 17)."""
    codes = np.asarray(q.codes)  # (out, in / 2): element 2i low nibble, 2i + 1 high
    scale = np.asarray(q.scale)  # (out, in / 32) E8M0 bytes
    if (scale == 255).any():
        raise ValueError(f"{name}: a block scale is NaN (E8M0 0xFF), which GGML's MXFP4 "
                         "cannot hold (it reads the byte as 2^127)")
    rows, nb = scale.shape
    elements = np.stack([codes & 0xF, codes >> 4], axis=-1).reshape(rows, nb, 32)
    packed = elements[..., :16] | (elements[..., 16:] << 4)
    return np.concatenate([scale[..., None], packed], axis=-1).reshape(rows, nb * 17)


def _exact_type(fmt: Format) -> str | None:
    """The GGML type of `EXACT` that holds a format's codes (any MX scale mode), or None."""
    key = (fmt.name, fmt.granularity, fmt.group_size, fmt.symmetric)
    for spec, ggml in EXACT.items():
        f = parse_format_spec(spec)
        if (f.name, f.granularity, f.group_size, f.symmetric) == key:
            return ggml
    return None


def _int_blocks(q: QArray, codes: np.ndarray, ggml: str) -> np.ndarray:
    """An INT kernel per 32 with its `int_codes` (out, in) as GGML Q8_0 / Q4_0 / Q4_1 blocks
    (out, in / 32 * block bytes), the codes unchanged and the scales (and Q4_1 minima)
    rounded to float16."""
    rows, nb = codes.shape[0], q.shape[0] // 32
    scale = np.asarray(q.scale, np.float32).reshape(rows, nb)
    head = [scale.astype(np.float16)]
    if ggml == "Q8_0":
        body = codes.astype(np.int8).view(np.uint8).reshape(rows, nb, 32)
    else:
        if ggml == "Q4_0":  # signed -7..7 -> q + 8
            codes = codes + 8
        else:
            zero = np.asarray(q.zero_point, np.float32).reshape(rows, nb)
            head.append((-zero * scale).astype(np.float16))
        nib = codes.astype(np.uint8).reshape(rows, nb, 32)
        body = nib[..., :16] | (nib[..., 16:] << 4)
    parts = [h.view(np.uint8).reshape(rows, nb, 2) for h in head] + [body]
    return np.concatenate(parts, axis=-1).reshape(rows, -1)


def _encode(value, name: str, *, requantize: str, float_type: str, heads: int | None,
            kernel: bool):
    """(data, GGML type, record) of one tensor; `heads` permutes q/k rows for llama."""
    import gguf  # noqa: PLC0415

    types = gguf.GGMLQuantizationType
    if isinstance(value, QArray):
        if value.ndim != 2 or value.axis != 0:
            raise ValueError(f"{name}: a quantized tensor must be a 2-D kernel quantized along "
                             f"its input axis, got shape {value.shape}, axis {value.axis}")
        source = value.fmt.name
        exact = _exact_type(value.fmt)
        rows = np.asarray(dequantize(value, np.float32)).T  # (out, in)
        if exact and value.shape[0] % 32 == 0:
            ggml = getattr(types, exact)
            if exact == "MXFP4":
                data = _mxfp4_blocks(value, name)
            else:
                data = _int_blocks(value, int_codes(value, name, ggml.name), ggml.name)
            if heads:
                data, rows = _permute_rows(data, heads), _permute_rows(rows, heads)
            back = gguf.quants.dequantize(data, ggml).reshape(rows.shape)
            err = float(np.max(np.abs(back - rows), initial=0.0))
            same = bool(np.array_equal(back, rows, equal_nan=True))
            return data, ggml, TensorRecord(name, source, ggml.name, same, 0.0 if same else err)
        target = requantize
    else:
        source = "float32"
        rows = np.asarray(value, np.float32)
        rows = rows.T if kernel else rows
        target = float_type if rows.ndim == 2 else "f32"
    if heads:
        rows = _permute_rows(rows, heads)
    ggml = getattr(types, target.upper())
    if ggml == types.F32:
        return rows, ggml, TensorRecord(name, source, "F32", True, 0.0)
    if rows.shape[-1] % gguf.GGML_QUANT_SIZES[ggml][0]:
        raise ValueError(f"{name}: {rows.shape[-1]} inputs are not whole {target} blocks of "
                         f"{gguf.GGML_QUANT_SIZES[ggml][0]}")
    data = gguf.quants.quantize(rows, ggml)
    back = gguf.quants.dequantize(data, ggml).reshape(rows.shape)
    err = float(np.max(np.abs(back - rows))) if rows.size else 0.0
    return data, ggml, TensorRecord(name, source, ggml.name, err == 0.0, err)


def _check_exportable(config: LMConfig, params) -> str:
    """The GGUF architecture of a model, or a ValueError naming what GGUF cannot hold."""
    arch = "gemma3" if config.family == "gemma3" else "llama"
    if config.family not in ("llama", "gemma3"):
        raise ValueError(f"GGUF export writes the llama and gemma3 architectures; a "
                         f"{config.family!r} model's layout differs (write it with its family's "
                         "converter)")
    unsupported = [f for f in ("qkv_bias", "o_bias", "mlp_bias", "mrope_section")
                   if getattr(config, f)]
    if arch == "llama":
        unsupported += [f for f in ("qk_norm", "sandwich_norms", "sliding_window")
                        if getattr(config, f)]
    if config.rope_scaling is not None and config.rope_scaling.rope_type != "linear":
        unsupported.append(f"rope_scaling={config.rope_scaling.rope_type}")
    if unsupported:
        raise ValueError(f"GGUF's {arch} architecture cannot hold this model's {unsupported}")
    refuse_online_transforms(params, "GGUF")
    return arch


def _metadata(writer, config: LMConfig, arch: str) -> None:
    writer.add_block_count(config.num_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_heads)
    writer.add_head_count_kv(config.num_kv_heads)
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    if arch == "gemma3":
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
        if config.sliding_window is not None:
            writer.add_sliding_window(config.sliding_window)
    else:
        writer.add_rope_dimension_count(config.head_dim)
    if config.rope_scaling is not None:
        import gguf  # noqa: PLC0415

        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(config.rope_scaling.factor)
    writer.add_quantization_version(2)


def _copy_tokenizer(writer, source: str) -> bool:
    """Copies the tokenizer.* metadata of a source GGUF file; False when there is none."""
    import gguf  # noqa: PLC0415

    if not str(source).endswith(".gguf") or not pathlib.Path(source).is_file():
        return False
    reader = gguf.GGUFReader(source)
    copied = False
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), kind, sub)
        copied = True
    return copied


def _config_difference(a: LMConfig, b: LMConfig) -> list[str]:
    """Fields where two configs differ (floats compared as GGUF stores them, float32)."""
    out = []
    for f in dataclasses.fields(LMConfig):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, float) and isinstance(y, float):
            same = np.float32(x) == np.float32(y)
        else:
            same = x == y
        if not same:
            out.append(f"{f.name}: model {x!r}, file {y!r}")
    return out


def export_gguf(lm: LM, path: str | os.PathLike, *, params=None, requantize: str = "q8_0",
                float_type: str = "f32") -> list[TensorRecord]:
    """Writes a decoder LM (float or quantized) as a GGUF file.

    Args:
      lm: the model: its config, and tokenizer metadata when `lm.source` is a GGUF file.
      path: the .gguf file to write (through a temporary file: a crash leaves no half file).
      params: the parameters to write (default `lm.params`), e.g. `PTQResult.lm.params`.
      requantize: the GGML type of quantized kernels whose format has no `EXACT` type
        (`GGML_TYPES`).
      float_type: the GGML type of float matrices (embeddings, float kernels); norms stay F32.

    Returns:
      One `TensorRecord` per tensor, in file order.

    Raises:
      ValueError: a type outside `GGML_TYPES`, a model GGUF's llama / gemma3 layouts cannot
        hold (biases, online transforms, another family), a NaN MXFP4 block or INT element,
        or a file whose
        config reads back different from the model's (the file is then removed).
    """
    import gguf  # noqa: PLC0415

    from effjax.models.gguf_loader import _open, read_gguf_config  # noqa: PLC0415

    for arg, value in (("requantize", requantize), ("float_type", float_type)):
        if value not in GGML_TYPES:
            raise ValueError(f"{arg} must be one of {GGML_TYPES}, got {value!r}")
    config = lm.config
    params = lm.params if params is None else params
    arch = _check_exportable(config, params)
    names = {v: k for k, v in (_GEMMA_LAYER_NAMES if arch == "gemma3" else _LAYER_NAMES).items()}
    top = {v: k for k, v in _TOP_NAMES.items()}
    tensors = [(top[("embed", "embedding")], params["embed"]["embedding"], None, False),
               (top[("norm", "weight")], params["norm"]["weight"], None, False)]
    if "lm_head" in params:
        tensors.append((top[("lm_head", "kernel")], params["lm_head"]["kernel"], None, True))
    for i in range(config.num_layers):
        layer = params["layers"][i]
        for target, gguf_name in names.items():
            node = layer
            for key in target:
                node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                continue
            heads = None
            if arch == "llama" and target[-2] in ("q_proj", "k_proj"):
                heads = config.num_heads if target[-2] == "q_proj" else config.num_kv_heads
            tensors.append((f"blk.{i}.{gguf_name}", node, heads, target[-1] == "kernel"))
    path = pathlib.Path(path)
    partial = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(str(partial), arch)
    records = []
    try:
        _metadata(writer, config, arch)
        if not _copy_tokenizer(writer, lm.source):
            for key, value in (("bos", config.bos_token_id), ("eos", config.eos_token_id),
                               ("pad", config.pad_token_id)):
                if value is not None:
                    getattr(writer, f"add_{key}_token_id")(value)
        for name, value, heads, kernel in tensors:
            data, ggml, record = _encode(value, name, requantize=requantize,
                                         float_type=float_type, heads=heads, kernel=kernel)
            writer.add_tensor(name, data, raw_dtype=ggml)
            records.append(record)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        back = read_gguf_config(_open(str(partial)), str(path))
        diff = _config_difference(dataclasses.replace(config, family=arch), back)
        if diff:
            raise ValueError(f"{path}: the file's config reads back different from the "
                             f"model's: {diff}")
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return records

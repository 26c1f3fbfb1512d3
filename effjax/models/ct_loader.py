"""Hugging Face directories in the compressed-tensors format (what llm-compressor writes and
vLLM / transformers load): reading them into effjax params with the quantized kernels as
`QArray`s (no float round trip), and the tensor codec the exporter shares.

Per quantized Linear the directory holds, beside its config.json's `quantization_config`:

- "pack-quantized" (INT, 1..8 bits): `weight_packed` int32 (out, ceil(in * bits / 32)),
  the signed codes plus 2^(bits-1) as a little-endian bit stream per row; `weight_scale`
  (1,), (out, 1) or (out, in / group); `weight_shape` [out, in]; asymmetric:
  `weight_zero_point` int32, the signed zero points packed the same way along `out`.
  Value = (q - zero_point) * scale.
- "naive-quantized" / "int-quantized" / "float-quantized": `weight` int8 or float8_e4m3fn
  (out, in), `weight_scale`, int8 `weight_zero_point` when asymmetric.
- "nvfp4-pack-quantized": `weight_packed` uint8 (out, in / 2), E2M1 codes, element 2j in
  the low nibble (effjax's packing); `weight_scale` float8_e4m3fn (out, in / 16);
  `weight_global_scale` float32 (1,), which *divides* (effjax's global scale multiplies).
- "mxfp4-pack-quantized" / "mxfp6-pack-quantized" / "mxfp8-quantized": E2M1 nibbles, E2M3
  sextets (four per three bytes, little-endian) or float8_e4m3fn codes, and E8M0 scale
  bytes (out, in / 32), all exactly effjax's storage.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from effjax.formats import QArray, dequantize, get_format
from effjax.formats.core import pack_codes
from effjax.formats.registry import INT_GROUP_SIZES, Format
from effjax.models.config import LMConfig
from effjax.models.decoder import Params
from effjax.models.hf import (
    _offset_norms,
    _weight_files,
    check_params,
    hf_name_to_path,
    read_config,
    read_json,
    set_path,
)

# effjax format name -> (compressed-tensors format, its fixed weight arguments).
_BLOCK_SCHEMES = {
    "nvfp4": ("nvfp4-pack-quantized", dict(num_bits=4, type="float", strategy="tensor_group",
                                           group_size=16, scale_dtype="torch.float8_e4m3fn")),
    "mxfp4": ("mxfp4-pack-quantized", dict(num_bits=4, type="float", strategy="group",
                                           group_size=32, scale_dtype="torch.uint8")),
    "mxfp6_e2m3": ("mxfp6-pack-quantized", dict(num_bits=6, type="float", strategy="group",
                                                group_size=32, scale_dtype="torch.uint8")),
    "mxfp8_e4m3": ("mxfp8-quantized", dict(num_bits=8, type="float", strategy="group",
                                           group_size=32, scale_dtype="torch.uint8")),
}
EXPORTABLE = ("int8", "int4", "int3", "int2", "fp8_e4m3", *_BLOCK_SCHEMES)
"""effjax formats with a compressed-tensors encoding (INT symmetric or not, per tensor,
channel or group; FP8 E4M3 per tensor or channel; NVFP4; MXFP4 / MXFP6 E2M3 / MXFP8 E4M3)."""
NVFP4_KEY = "effjax.nvfp4_global_scale."
"""safetensors metadata key prefix (+ module name) of the NVFP4 multiplier effjax wrote, as
`float.hex`: compressed-tensors stores a divisor, whose float32 reciprocal is not always the
multiplier, so effjax's loader reads the multiplier from here when present."""
_PACKED = {"pack-quantized", "nvfp4-pack-quantized", "mxfp4-pack-quantized",
           "mxfp6-pack-quantized"}


def ct_scheme(fmt: Format) -> tuple[str, dict[str, Any]]:
    """The compressed-tensors format and weight arguments of an effjax format.

    Args:
      fmt: the kernel's `Format`.

    Returns:
      (format, arguments), e.g. ("pack-quantized", {"num_bits": 4, "type": "int", ...}).

    Raises:
      ValueError: the format has no compressed-tensors encoding, naming it and `EXPORTABLE`.
    """
    args = dict(symmetric=True, dynamic=False, group_size=None)
    if fmt.kind == "int":
        if not fmt.symmetric and fmt.granularity == "tensor":
            raise ValueError(f"{fmt.name} asymmetric per tensor has no compressed-tensors "
                             "encoding (its zero point is packed per channel or group); use "
                             "granularity 'channel' or 'group'")
        group = fmt.group_size if fmt.granularity == "group" else None
        return "pack-quantized", {**args, "num_bits": fmt.bits, "type": "int",
                                  "symmetric": fmt.symmetric, "strategy": fmt.granularity,
                                  "group_size": group}
    if fmt.name == "fp8_e4m3":
        return "float-quantized", {**args, "num_bits": 8, "type": "float",
                                   "strategy": fmt.granularity}
    if fmt.name in _BLOCK_SCHEMES:
        name, fixed = _BLOCK_SCHEMES[fmt.name]
        return name, {**args, **fixed}
    raise ValueError(f"format {fmt.name!r} has no compressed-tensors encoding; the formats "
                     f"that have one: {list(EXPORTABLE)}")


def pack_int32(u: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned codes (rows, n) < 2^bits as compressed-tensors' int32 words
    (rows, ceil(n * bits / 32)): code i of a row at bits i*bits .. (i+1)*bits - 1 of the
    row's little-endian bit stream."""
    rows, n = u.shape
    stream = ((u[..., None].astype(np.uint32) >> np.arange(bits, dtype=np.uint32)) & 1)
    packed = np.packbits(stream.astype(np.uint8).reshape(rows, n * bits), axis=-1,
                         bitorder="little")
    words = -(-n * bits // 32)
    packed = np.pad(packed, ((0, 0), (0, 4 * words - packed.shape[1])))
    return np.ascontiguousarray(packed).view("<i4")


def unpack_int32(words: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Inverse of `pack_int32`: the first n codes of each row, as int32."""
    stream = np.unpackbits(np.ascontiguousarray(words.astype("<i4")).view(np.uint8), axis=-1,
                           bitorder="little")[:, :n * bits]
    weights = (1 << np.arange(bits)).astype(np.int32)
    return stream.reshape(words.shape[0], n, bits).astype(np.int32) @ weights


def _int_qarray(q: np.ndarray, zero: np.ndarray | None, scale: np.ndarray, bits: int,
                strategy: str, group: int | None, name: str) -> QArray:
    """An (in, out) INT kernel from signed codes q (out, in), signed zero points (or None)
    and scales: symmetric where the codes allow it (effjax reserves -2^(bits-1) for NaN),
    else with zero points 2^(bits-1) + zero."""
    out, k = q.shape
    if f"int{bits}" not in EXPORTABLE:
        raise ValueError(f"{name}: {bits}-bit INT has no effjax format (int8, int4, int3, "
                         "int2)")
    if strategy == "group" and group not in INT_GROUP_SIZES:
        raise ValueError(f"{name}: INT group size {group} has no effjax format (group sizes "
                         f"{INT_GROUP_SIZES})")
    if strategy not in ("tensor", "channel", "group"):
        raise ValueError(f"{name}: INT strategy {strategy!r} has no effjax format (tensor, "
                         "channel, group)")
    offset = 1 << (bits - 1)
    symmetric = zero is None and not (q == -offset).any()
    fmt = get_format(f"int{bits}", granularity=strategy, group_size=group,
                     symmetric=symmetric)
    scale = np.asarray(scale, np.float32).reshape((1, 1) if strategy == "tensor" else (out, -1))
    if symmetric:
        codes = (q & 0xF).astype(np.uint8) if bits == 4 else q.astype(np.int8)
        zero_point = None
    else:
        codes = (q + offset).astype(np.uint8)
        zero = np.zeros_like(scale, np.int32) if zero is None else zero
        zero_point = (np.asarray(zero, np.float32).reshape(scale.shape) + offset)
    return _qarray(codes, scale, fmt, k, zero_point=zero_point)


def _qarray(codes, scale, fmt: Format, k: int, *, zero_point=None) -> QArray:
    """A float32 (k, out) kernel QArray from unpacked codes (out, k) (packed here)."""
    return QArray(codes=jnp.asarray(pack_codes(jnp.asarray(codes), fmt.bits)),
                  scale=jnp.asarray(scale), global_scale=None,
                  zero_point=None if zero_point is None else jnp.asarray(zero_point),
                  levels=None, fmt=fmt, axis=0, shape=(k, codes.shape[0]), dtype="float32")


def decode_kernel(tensors: Mapping[str, np.ndarray], ct_format: str,
                  args: Mapping[str, Any], name: str) -> QArray:
    """One Linear's compressed-tensors tensors as an (in, out) effjax kernel.

    Args:
      tensors: its tensors by suffix ("weight_packed", "weight_scale", ...).
      ct_format: its compressed-tensors format.
      args: its scheme's weight arguments (num_bits, type, symmetric, strategy, group_size).
      name: the module, for messages.

    Returns:
      The `QArray`, bit for bit what was stored.

    Raises:
      ValueError: a format, strategy or size effjax has no format for, or a tensor missing.
    """
    def need(key):
        if key not in tensors:
            raise ValueError(f"{name}: the {ct_format} format needs {name}.{key}, which the "
                             f"files lack (they hold {sorted(tensors)})")
        return np.asarray(tensors[key])

    bits, group = int(args.get("num_bits", 8)), args.get("group_size")
    # compressed-tensors infers a missing strategy from group_size: > 0 group, -1 channel
    strategy = args.get("strategy") or (
        "group" if (group or 0) > 0 else "channel" if group == -1 else "tensor")
    group = group if strategy == "group" else None
    kind = args.get("type", "int")
    scale = need("weight_scale")
    if ct_format == "pack-quantized":
        out, k = (int(v) for v in need("weight_shape"))
        q = unpack_int32(need("weight_packed"), bits, k) - (1 << (bits - 1))
        zero = None
        if "weight_zero_point" in tensors:
            zp = need("weight_zero_point")
            zero = unpack_int32(zp.T, bits, out).T - (1 << (bits - 1))
        return _int_qarray(q, zero, scale, bits, strategy, group, name)
    if ct_format in ("naive-quantized", "int-quantized", "float-quantized") and kind == "int":
        w = need("weight")
        zero = tensors.get("weight_zero_point")
        return _int_qarray(w.astype(np.int32), None if zero is None else np.asarray(
            zero, np.int32), scale, bits, strategy, group, name)
    if ct_format in ("naive-quantized", "float-quantized", "int-quantized"):
        w = need("weight")
        if w.dtype != ml_dtypes.float8_e4m3fn or strategy not in ("tensor", "channel"):
            raise ValueError(f"{name}: float {w.dtype} weights with strategy {strategy!r} have "
                             "no effjax format (fp8_e4m3 per tensor or channel)")
        fmt = get_format("fp8_e4m3", granularity=strategy)
        shape = (1, 1) if strategy == "tensor" else (w.shape[0], 1)
        return _qarray(w, np.asarray(scale, np.float32).reshape(shape), fmt, w.shape[1])
    by_ct = {v[0]: k for k, v in _BLOCK_SCHEMES.items()}
    if ct_format not in by_ct:
        raise ValueError(f"{name}: compressed-tensors format {ct_format!r} has no effjax "
                         f"format; readable: pack-quantized, naive/int/float-quantized, "
                         f"{sorted(by_ct)}")
    fmt = get_format(by_ct[ct_format])
    if ct_format == "mxfp8-quantized":
        codes = need("weight")
        k = codes.shape[1]
    else:
        codes = need("weight_packed")
        k = codes.shape[1] * 8 // fmt.bits
    g = None
    if fmt.name == "nvfp4":
        g = np.float32(1.0) / np.asarray(need("weight_global_scale"), np.float32).reshape(())
    return QArray(codes=jnp.asarray(codes), scale=jnp.asarray(scale), global_scale=(
        None if g is None else jnp.asarray(g)), zero_point=None, levels=None, fmt=fmt, axis=0,
        shape=(k, codes.shape[0]), dtype="float32")


def _matches(module: str, patterns) -> bool:
    """compressed-tensors' target rule for our decoders (every projection is a Linear): the
    class name "Linear", the module's exact name or "re:<regex>" matched from its start."""
    for p in patterns or ():
        if p == "Linear" or p == module or (p.startswith("re:") and re.match(p[3:], module)):
            return True
    return False


def module_scheme(qc: Mapping[str, Any], module: str) -> tuple[str, dict[str, Any]] | None:
    """The (format, weight arguments) a quantization_config gives a Linear module, or None
    when it is ignored or no group targets it.

    Args:
      qc: the config.json's quantization_config.
      module: the Linear's name ("model.layers.0.self_attn.q_proj").
    """
    if _matches(module, qc.get("ignore")):
        return None
    for group in (qc.get("config_groups") or {}).values():
        if isinstance(group, dict) and _matches(module, group.get("targets")):
            weights = group.get("weights")
            if weights is None:
                return None
            return group.get("format") or qc.get("format"), weights
    return None


_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2, "I64": np.int64,
    "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def read_safetensors(file: pathlib.Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every tensor of a safetensors file as a NumPy array (float8 and bfloat16 as
    `ml_dtypes`, which `safetensors`' own NumPy reader lacks), and the file's metadata.

    Raises:
      ValueError: the file is truncated or corrupt, naming it and the first tensor cut short.
    """
    import json  # noqa: PLC0415

    data = np.memmap(file, np.uint8, mode="r") if file.stat().st_size else np.zeros(0, np.uint8)
    size = len(data)
    n = int.from_bytes(bytes(data[:8]), "little") if size >= 8 else 0
    if size < 8 or 8 + n > size:
        raise ValueError(f"{str(file)!r} is truncated: {size} bytes cannot hold its header")
    try:
        header = json.loads(bytes(data[8:8 + n]))
        tensors, metadata = {}, dict(header.get("__metadata__") or {})
        for key, info in header.items():
            if key == "__metadata__":
                continue
            start, end = (8 + n + int(o) for o in info["data_offsets"])
            if end > size:
                raise ValueError(f"{str(file)!r} is truncated: tensor {key!r} ends at byte "
                                 f"{end}, the file has {size}")
            dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
            tensors[key] = np.frombuffer(data[start:end], dtype).reshape(info["shape"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{str(file)!r} has a corrupt header: {type(e).__name__}: {e}") from e
    return tensors, metadata


def is_compressed(path: str | pathlib.Path) -> bool:
    """Whether a checkpoint directory's config.json declares compressed-tensors weights."""
    cfg = pathlib.Path(path) / "config.json"
    if not cfg.is_file():
        return False
    qc = read_json(cfg).get("quantization_config") or {}
    return qc.get("quant_method") == "compressed-tensors"


def read_compressed(path: str | pathlib.Path, *, quantized: bool = True
                    ) -> tuple[LMConfig, Params, dict[str, Any]]:
    """Reads a compressed-tensors checkpoint directory.

    Args:
      path: the directory (config.json with a compressed-tensors `quantization_config`,
        safetensors, single or sharded).
      quantized: keep quantized kernels as `QArray`s (else dequantize them to float32).

    Returns:
      (config, params, quantization_config). Activation schemes in the config are not
      applied: they come back in the dict for the caller's recipe.

    Raises:
      ValueError: no compressed-tensors config, a truncated or corrupt file (naming the file
        and tensor), a scheme effjax has no format for (naming the module), or missing or
        misshapen weights.
    """
    path = pathlib.Path(path)
    config = read_config(path)
    qc = read_json(path / "config.json").get("quantization_config") or {}
    if qc.get("quant_method") != "compressed-tensors":
        raise ValueError(f"{str(path)!r}: config.json has no compressed-tensors "
                         f"quantization_config (quant_method {qc.get('quant_method')!r})")
    if qc.get("quantization_status", "compressed") != "compressed":
        raise ValueError(f"{str(path)!r}: quantization_status must be 'compressed', got "
                         f"{qc.get('quantization_status')!r}")
    tensors, metadata = {}, {}
    for file in _weight_files(path):
        t, m = read_safetensors(file)
        tensors.update(t)
        metadata.update(m)
    modules: dict[str, dict[str, np.ndarray]] = {}
    params: Params = {}
    for key, value in tensors.items():
        module, _, suffix = key.rpartition(".")
        target = hf_name_to_path(module + ".weight", family=config.family)
        linear = target is not None and target[-1] == "kernel"
        if suffix.startswith("weight_") or (suffix == "weight" and linear
                                            and module_scheme(qc, module)):
            modules.setdefault(module, {})[suffix] = value
            continue
        target = hf_name_to_path(key, family=config.family)
        if target is None:
            continue
        value = np.asarray(value, np.float32)
        if target[-1] == "kernel":
            value = value.T
        set_path(params, target, value)
    for module, parts in modules.items():
        scheme = module_scheme(qc, module)
        target = hf_name_to_path(module + ".weight", family=config.family)
        if scheme is None or target is None:
            raise ValueError(f"{str(path)!r}: {module} holds quantized tensors "
                             f"{sorted(parts)} but no config group targets it")
        kernel = decode_kernel(parts, scheme[0], scheme[1], module)
        if NVFP4_KEY + module in metadata:  # effjax's own multiplier, bit for bit
            kernel = dataclasses.replace(kernel, global_scale=jnp.float32(
                float.fromhex(metadata[NVFP4_KEY + module])))
        set_path(params, target, kernel if quantized else dequantize(kernel, jnp.float32))
    if config.tie_word_embeddings:
        params.pop("lm_head", None)
    check_params(params, source=str(path), config=config)
    params = jax.tree.map(lambda a: a if isinstance(a, QArray) else jnp.asarray(a), params,
                          is_leaf=lambda x: isinstance(x, QArray))
    if config.family == "gemma3":
        params = _offset_norms(params, 1.0)
    return config, params, qc

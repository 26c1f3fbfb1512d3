"""Writing effjax decoder LMs as Hugging Face directories with compressed-tensors weights.

The directory holds config.json (the model's Hugging Face config and a compressed-tensors
`quantization_config`: one config group per scheme, each with its `format`; the float
Linears in `ignore`), model.safetensors (the tensors under compressed-tensors' names, see
`effjax.models.ct_loader`) and the tokenizer's files. `transformers` with the
`compressed-tensors` package loads it; `effjax.models.load(path, quantized=True)` loads it
back into the same `QArray`s.

Every scheme but NVFP4 is written bit for bit. compressed-tensors decompresses the FP4 / MX
formats to bfloat16 (exact for MXFP4 / MXFP6 / MXFP8, whose values bfloat16 holds) and
divides by NVFP4's global scale where effjax multiplies, so NVFP4 with a two-level scale
reads back within a bfloat16 rounding; each tensor's record says which.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil

import jax
import ml_dtypes
import numpy as np

from effjax.export.common import TensorRecord, int_codes, refuse_online_transforms
from effjax.formats import QArray, dequantize
from effjax.formats.core import decode_elements, unpack_codes
from effjax.models.ct_loader import _PACKED, NVFP4_KEY, ct_scheme, pack_int32
from effjax.models.hf import _GEMMA_LAYER_NAMES, _LAYER_NAMES, _TOP_NAMES, _offset_norms
from effjax.models.records import LM

FLOAT_DTYPES = ("float32", "bfloat16", "float16")
"""What `dtype` (the float tensors' dtype in the files and config.json) may name."""
CT_VERSION = "0.20.0"
"""The compressed-tensors version whose formats the files follow."""


def _hf_names(family: str) -> dict[tuple, str]:
    """effjax path -> Hugging Face tensor name, for the top tensors and inside a layer."""
    layer = _GEMMA_LAYER_NAMES if family == "gemma3" else _LAYER_NAMES
    return {**{v: k for k, v in _TOP_NAMES.items()},
            **{("layer", *v): k for k, v in layer.items()}}


def _reader_values(q: QArray, ours: np.ndarray, tensors: dict[str, np.ndarray]) -> np.ndarray:
    """(out, in) float32 values compressed-tensors decompresses from the written tensors,
    given effjax's (out, in) values `ours`: INT / FP8 (q - zero) * scale in float32 (effjax's
    arithmetic); FP4 / MX through bfloat16, NVFP4 as e2m1 * (scale / global) rounded so."""
    values, fmt_name = ours, q.fmt.name
    if fmt_name == "nvfp4":
        k = q.shape[0]
        elements = np.asarray(decode_elements(unpack_codes(q.codes, 4, k), q.fmt))
        scale = np.asarray(q.scale, np.float32) / tensors["weight_global_scale"][0]
        values = elements * np.repeat(scale, 16, axis=-1)[:, :k]
    if fmt_name in ("nvfp4", "mxfp4", "mxfp6_e2m3", "mxfp8_e4m3"):
        values = values.astype(ml_dtypes.bfloat16).astype(np.float32)
    return values


def _encode(q: QArray, module: str) -> tuple[dict[str, np.ndarray], str, dict, TensorRecord]:
    """One quantized kernel's tensors (by suffix), format, weight arguments and record."""
    if q.ndim != 2 or q.axis != 0:
        raise ValueError(f"{module}: a quantized tensor must be a 2-D kernel quantized along "
                         f"its input axis, got shape {q.shape}, axis {q.axis}")
    fmt = q.fmt
    ct_format, args = ct_scheme(fmt)
    k, out = q.shape
    if fmt.kind == "int" and fmt.granularity == "group" and k % fmt.group_size:
        raise ValueError(f"{module}: compressed-tensors needs whole groups; {k} inputs are not "
                         f"a multiple of {fmt.group_size}")
    if fmt.kind in ("mx", "nvfp4") and k % fmt.group_size:
        raise ValueError(f"{module}: compressed-tensors needs whole {fmt.name} blocks; {k} "
                         f"inputs are not a multiple of {fmt.group_size}")
    scale = np.asarray(q.scale)
    tensors: dict[str, np.ndarray] = {}
    if fmt.kind == "int":
        codes = int_codes(q, module, "compressed-tensors")
        unsigned = codes + (1 << (fmt.bits - 1)) if fmt.symmetric else codes
        tensors["weight_packed"] = pack_int32(unsigned, fmt.bits)
        tensors["weight_shape"] = np.array([out, k], np.int64)
        tensors["weight_scale"] = scale.astype(np.float32).reshape(
            (1,) if fmt.granularity == "tensor" else (out, -1))
        if not fmt.symmetric:
            zero = np.asarray(q.zero_point).reshape(out, -1).astype(np.int32)
            tensors["weight_zero_point"] = pack_int32(zero.T, fmt.bits).T.copy()
    elif fmt.kind == "fp8":
        tensors["weight"] = np.asarray(q.codes)
        tensors["weight_scale"] = scale.astype(np.float32).reshape(
            (1,) if fmt.granularity == "tensor" else (out, 1))
    else:
        if fmt.kind == "mx" and (scale == 255).any():
            raise ValueError(f"{module}: a block scale is NaN (E8M0 0xFF), which "
                             "compressed-tensors decodes as 2^128")
        tensors["weight" if ct_format not in _PACKED else "weight_packed"] = np.asarray(q.codes)
        tensors["weight_scale"] = scale
    if fmt.name == "nvfp4":  # compressed-tensors divides by it; effjax multiplies
        g = 1.0 if q.global_scale is None else float(np.asarray(q.global_scale))
        tensors["weight_global_scale"] = np.array([1.0 / g], np.float32)
    ours = np.asarray(dequantize(q, np.float32)).T
    theirs = _reader_values(q, ours, tensors)
    err = float(np.max(np.abs(theirs - ours), initial=0.0))
    same = bool(np.array_equal(theirs, ours, equal_nan=True))
    record = TensorRecord(module, fmt.name, ct_format, same, 0.0 if same else err)
    return tensors, ct_format, args, record


def _quantization_config(groups: dict[tuple, list[str]], ignore: list[str]) -> dict:
    """The compressed-tensors quantization_config: one group per (format, arguments as
    sorted items), targeting "Linear" when there is one group, else its modules by name."""
    config_groups, formats = {}, set()
    for i, ((ct_format, args), modules) in enumerate(groups.items()):
        targets = ["Linear"] if len(groups) == 1 else sorted(modules)
        config_groups[f"group_{i}"] = {"targets": targets, "weights": dict(args),
                                       "input_activations": None,
                                       "output_activations": None, "format": ct_format}
        formats.add(ct_format)
    return {"quant_method": "compressed-tensors", "version": CT_VERSION,
            "format": formats.pop() if len(formats) == 1 else "mixed-precision",
            "quantization_status": "compressed", "config_groups": config_groups,
            "ignore": sorted(ignore), "kv_cache_scheme": None,
            "global_compression_ratio": None, "sparsity_config": {}, "transform_config": {}}


def export_hf(lm: LM, path: str | os.PathLike, *, params=None,
              dtype: str = "float32") -> list[TensorRecord]:
    """Writes a decoder LM with quantized kernels as a compressed-tensors Hugging Face directory.

    Args:
      lm: the model: its config, and its tokenizer (saved beside the weights when it has
        `save_pretrained`).
      path: the directory to write; it must not exist (written beside it and renamed, so a
        crash leaves no half directory).
      params: the parameters to write (default `lm.params`), e.g. `PTQResult.lm.params`:
        `QArray` kernels in the formats of `effjax.models.ct_loader.EXPORTABLE`.
      dtype: the dtype of the float tensors (embeddings, norms, float kernels) and of
        config.json, one of `FLOAT_DTYPES`.

    Returns:
      One `TensorRecord` per tensor (name = the Hugging Face tensor or module name).

    Raises:
      ValueError: `dtype` outside `FLOAT_DTYPES`, `path` exists, a kernel format with no
        compressed-tensors encoding (naming it and the formats that have one), online
        transforms, or a config Hugging Face cannot express.
    """
    from safetensors.numpy import save_file  # noqa: PLC0415

    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {FLOAT_DTYPES}, got {dtype!r}")
    path = pathlib.Path(path)
    if path.exists():
        raise ValueError(f"path {str(path)!r} exists; export_hf writes a new directory")
    config = lm.config
    params = lm.params if params is None else params
    refuse_online_transforms(params, "compressed-tensors")
    hf_config = {**config.to_hf(), "dtype": dtype}
    if config.family == "gemma3":
        params = _offset_norms(params, -1.0)
    names = _hf_names(config.family)
    leaves = jax.tree_util.tree_flatten_with_path(
        params, is_leaf=lambda x: isinstance(x, QArray))[0]
    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    tensors: dict[str, np.ndarray] = {}
    records: list[TensorRecord] = []
    groups: dict[tuple, list[str]] = {}
    ignore: list[str] = []
    metadata = {"format": "pt"}
    for key_path, value in leaves:
        keys = tuple(getattr(k, "key", getattr(k, "idx", None)) for k in key_path)
        lookup = ("layer", *keys[2:]) if keys[0] == "layers" else keys
        if lookup not in names:
            raise ValueError(f"params{jax.tree_util.keystr(key_path)} has no Hugging Face "
                             f"name in the {config.family} layout")
        name = names[lookup]
        if keys[0] == "layers":
            name = f"model.layers.{keys[1]}.{name}"
        module = name.removesuffix(".weight")
        kernel = keys[-1] == "kernel"
        if isinstance(value, QArray) and kernel:
            parts, ct_format, args, record = _encode(value, module)
            tensors.update({f"{module}.{s}": v for s, v in parts.items()})
            groups.setdefault((ct_format, tuple(sorted(args.items()))), []).append(module)
            records.append(record)
            if "weight_global_scale" in parts:
                metadata[NVFP4_KEY + module] = float(np.float32(
                    1.0 if value.global_scale is None else value.global_scale)).hex()
            continue
        source = value.fmt.name if isinstance(value, QArray) else "float32"
        array = np.asarray(dequantize(value, np.float32) if isinstance(value, QArray)
                           else value, np.float32)
        array = array.T if kernel else array
        written = array.astype(np_dtype)
        tensors[name] = np.ascontiguousarray(written)
        err = float(np.max(np.abs(written.astype(np.float32) - array), initial=0.0))
        records.append(TensorRecord(name, source, "dense", err == 0.0, err))
        if kernel:
            ignore.append(module)
    if groups:
        hf_config["quantization_config"] = _quantization_config(groups, ignore)
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        save_file(tensors, str(partial / "model.safetensors"), metadata=metadata)
        (partial / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        if hasattr(lm.tokenizer, "save_pretrained"):
            lm.tokenizer.save_pretrained(str(partial))
        partial.rename(path)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return records

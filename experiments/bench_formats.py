"""Quantize + dequantize throughput of every format on CPU: effjax vs a copy, qwix and torchao.

    python -m experiments.bench_formats [--config=configs/bench_formats.py[:tiny]]

Each implementation quantizes a float32 matrix along its last axis to its stored form
(codes and scales) and dequantizes it back to float32; both steps are timed together,
with the stored form materialized in between (two jitted calls for JAX, eager PyTorch for
torchao). GB/s counts the float32 input bytes. The memory floor is an elementwise negation
(one read and one write of the matrix) in the same framework. Peers run the formats they
have, configured to the same block sizes and scale rules where they allow it; the
"identical" columns give the share of dequantized elements that equal effjax's bit for
bit. Peers come from the `benchmark` extra (`pip install -e ".[benchmark]"`); a peer that
is not installed is reported as such.
"""

from __future__ import annotations

import importlib.util
import platform

import jax
import jax.numpy as jnp
import numpy as np

import effjax.formats as F
from experiments.common import (
    command,
    main_with_config,
    markdown_table,
    median_seconds,
    write_report,
)


def _qwix(name: str, options: dict):
    """A jitted quantize and dequantize with qwix for an effjax format, or None."""
    import qwix

    grouped = options.get("granularity") == "group"
    specs = {  # effjax format -> (qwix qtype, channelwise axes, tiled axes)
        "int8": (jnp.int8, (0,), {}),
        "int4": (jnp.int4, (0,), {1: options.get("group_size")} if grouped else {}),
        "fp8_e4m3": (jnp.float8_e4m3fn, (), {}),
        "fp8_e5m2": (jnp.float8_e5m2, (), {}),
        "mxfp8_e4m3": ("mxfp8", (0,), {1: 32}),
        "mxfp4": ("mxfp4", (0,), {1: 32}),
        "nvfp4": ("nvfp4", (0,), {1: 16}),
    }
    if name not in specs:
        return None
    qtype, channels, tiles = specs[name]
    quantize = jax.jit(lambda x: qwix.quantize(x, qtype, channelwise_axes=channels,
                                               tiled_axes=tiles))
    dequantize = jax.jit(qwix.dequantize)
    return lambda x: np.asarray(dequantize(quantize(x)))


def _torchao(name: str, options: dict):
    """An eager quantize and dequantize with torchao for an effjax format, or None."""
    import torch
    from torchao.prototype.mx_formats.mx_tensor import to_dtype, to_mx
    from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, per_tensor_amax_to_scale
    from torchao.quantization.quant_primitives import (
        MappingType,
        choose_qparams_affine,
        dequantize_affine,
        quantize_affine,
    )

    mx = {"mxfp8_e4m3": torch.float8_e4m3fn, "mxfp8_e5m2": torch.float8_e5m2,
          "mxfp6_e2m3": "fp6_e2m3", "mxfp6_e3m2": "fp6_e3m2", "mxfp4": torch.float4_e2m1fn_x2}

    def run(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x)
        with torch.inference_mode():
            if name in mx:
                scale, data = to_mx(t, mx[name], 32)
                out = to_dtype(data, scale, mx[name], 32, torch.float32)
            elif name == "nvfp4":
                q = NVFP4Tensor.to_nvfp4(t, per_tensor_scale=per_tensor_amax_to_scale(
                    t.abs().max()))
                out = q.dequantize(torch.float32)
            else:  # symmetric integers over the same range as effjax: [-qmax, qmax]
                qmax = {"int8": 127, "int4": 7}[name]
                block = (1, options["group_size"] if "group_size" in options else t.shape[1])
                scale, zero = choose_qparams_affine(t, MappingType.SYMMETRIC, block, torch.int8,
                                                    -qmax, qmax)
                q = quantize_affine(t, block, scale, zero, torch.int8, -qmax, qmax)
                out = dequantize_affine(q, block, scale, zero, torch.int8, -qmax, qmax)
        return out.numpy()

    return run if name in mx or name in ("nvfp4", "int8", "int4") else None


_PEERS = {"qwix": _qwix, "torchao": _torchao}


def _effjax(name: str, options: dict):
    quantize = jax.jit(lambda x: F.quantize(x, name, axis=-1, **options))
    dequantize = jax.jit(lambda q: F.dequantize(q, jnp.float32))
    return quantize, dequantize


def _identical(a: np.ndarray, b: np.ndarray) -> float:
    """Percent of elements equal bit for bit (NaN equal to NaN)."""
    return 100.0 * float(np.mean((a == b) | (np.isnan(a) & np.isnan(b))))


def _rel_rms(x_hat: np.ndarray, x: np.ndarray) -> float:
    return float(np.sqrt(np.mean((x_hat - x) ** 2) / np.mean(x**2)))


def run(config) -> str:
    """Runs the benchmark and writes its Markdown table; returns the report text."""
    x_np = np.random.RandomState(0).randn(*config.shape).astype(np.float32)
    x = jnp.asarray(x_np)
    gbytes = x_np.nbytes / 1e9
    negate = jax.jit(jnp.negative)
    floor_s = median_seconds(lambda: negate(x).block_until_ready(), config.repeats)
    floor_rows = [["JAX (XLA:CPU)", floor_s * 1e3, gbytes / floor_s]]
    peers = [p for p in config.peers if importlib.util.find_spec(p) is not None]
    missing = [p for p in config.peers if p not in peers]
    if "torchao" in peers:
        import torch

        t = torch.from_numpy(x_np)
        torch_s = median_seconds(lambda: torch.neg(t), config.repeats)
        floor_rows.append([f"PyTorch ({torch.get_num_threads()} threads)", torch_s * 1e3,
                           gbytes / torch_s])
    rows = []
    for name, options in config.formats:
        options = dict(options)
        quantize, dequantize = _effjax(name, options)
        ours_s = median_seconds(lambda q=quantize, d=dequantize: d(q(x)).block_until_ready(),
                                config.repeats)
        q = quantize(x)
        ours = np.asarray(dequantize(q))
        label = name + "".join(f" {k}={v}" for k, v in options.items())
        row = [label, q.bits_per_element(), ours_s * 1e3, gbytes / ours_s, ours_s / floor_s,
               _rel_rms(ours, x_np)]
        for peer in peers:
            fn = _PEERS[peer](name, options)
            if fn is None:
                row += ["-", "-", "-"]
                continue
            theirs_s = median_seconds(lambda f=fn: f(x_np), config.repeats)
            row += [theirs_s * 1e3, theirs_s / ours_s, _identical(fn(x_np), ours)]
        rows.append(row)
        print(" | ".join(str(v) for v in row), flush=True)
    headers = ["format", "bits/element", "effjax ms", "effjax GB/s", "effjax / floor",
               "rel. RMS error"]
    for peer in peers:
        headers += [f"{peer} ms", f"{peer} / effjax", f"identical to {peer} %"]
    versions = [f"jax {jax.__version__}"] + [
        f"{p} {importlib.metadata.version(p)}" for p in peers]
    report = "\n".join([
        "# Quantize + dequantize throughput on CPU, every format",
        "",
        f"Command: {command('bench_formats')}",
        f"Machine: {platform.machine()}, {jax.device_count()} {jax.default_backend()} device(s); "
        f"{', '.join(versions)}. Input: float32 {config.shape[0]}x{config.shape[1]} "
        f"(N(0, 1), seed 0), quantized along the last axis. Median of {config.repeats} runs "
        "after a warm-up; everything measured in this run.",
        "",
        "Memory floor (negation: one read, one write):",
        "",
        markdown_table(["framework", "ms", "GB/s"], floor_rows),
        "Formats (`effjax / floor`: time over the JAX floor; `peer / effjax`: above 1 means "
        "effjax is faster; `-`: the peer lacks the format"
        + (f"; not installed: {', '.join(missing)}" if missing else "") + "):",
        "",
        markdown_table(headers, rows),
        "Quantize and dequantize are timed together with the stored form materialized in "
        "between (two jitted calls for JAX; eager calls for torchao). Definitions differ "
        "where `identical` is below 100: qwix scales integers by amax / (qmax + 0.5), its "
        "jitted FP8 scale is amax * (1 / 448) (an ulp from amax / 448 here, so every element "
        "moves), and it derives MX and NVFP4 scales its own way; torchao's NVFP4 multiplies "
        "by reciprocal scales where FORMATS.md divides, and clamps block scales at 2^-6 "
        "rather than 2^-9.",
    ])
    return write_report(config.output, report)


if __name__ == "__main__":
    main_with_config(run, "bench_formats")

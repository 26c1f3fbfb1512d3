"""The Pallas kernels on the machine's accelerator: checked against their references, timed
against the XLA path and a bfloat16 matmul. One table; meant to finish in under 3 minutes.

    python -m experiments.bench_kernels [--config=configs/bench_kernels.py[:tiny]]

Matmul rows: activations bfloat16 (M, K) times a (K, N) weight quantized along K.
`kernel` is `pallas_kernels.dequant_matmul` (W4A16 / W8A16) or, for `A:` rows, the
activation quantize kernel plus `pallas_kernels.scaled_matmul`; `XLA` is effjax's XLA path
(`effjax.quant.qdot(..., impl="xla")`: dequantize, then a dot); `bf16` is a plain bfloat16
matmul with the float weight. `max rel err` compares the kernel with its reference (the
same arithmetic in jnp; summation order may differ on hardware). Quantize rows compare
codes and scales bit for bit. Off TPU and GPU the kernels run in interpret mode (only the
tiny config makes sense there).
"""

from __future__ import annotations

import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import effjax.formats as F
import pallas_kernels as K
from effjax.eval import markdown_table, write_atomic
from effjax.quant import qdot
from experiments.cli import format_spec, main_with_config, median_seconds


def _time(fn, args: tuple, repeats: int) -> float:
    """Median milliseconds of fn(*args)."""
    return median_seconds(lambda: jax.block_until_ready(fn(*args)), repeats) * 1e3


def _rel_err(got, ref) -> float:
    got, ref = np.asarray(got, np.float32), np.asarray(ref, np.float32)
    return float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-30))


def _matmul_rows(config, deadline, skipped):
    rows = []
    key = jax.random.PRNGKey(0)
    for m, k, n in config.shapes:
        kx, kw, key = jax.random.split(key, 3)
        x = jax.random.normal(kx, (m, k), jnp.bfloat16)
        w = jax.random.normal(kw, (k, n), jnp.float32) * k**-0.5
        wb = w.astype(jnp.bfloat16)
        bf16 = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
        bf16_ms = _time(bf16, (x, wb), config.repeats)
        cases = [(s, None) for s in config.weight_formats]
        if m == max(s[0] for s in config.shapes):
            cases += [(s, s) for s in config.scaled_formats]
        for wspec, aspec in cases:
            label = f"{m}x{k}x{n} W:{wspec}" + (f" A:{aspec}" if aspec else "")
            if time.perf_counter() > deadline:
                skipped.append(label)
                continue
            wf, af = format_spec(wspec), format_spec(aspec)
            q = jax.jit(lambda a, f=wf: F.quantize(a, f, axis=0))(w)
            if af is None:
                kern = jax.jit(lambda a, b: K.dequant_matmul(a, b))
                ref = K.dequant_matmul_reference(x, q)
            else:
                kern = jax.jit(lambda a, b, f=af: K.scaled_matmul(K.block_quantize(a, f), b))
                ref = K.scaled_matmul_reference(F.quantize(x, af, axis=1), q)
            xla = jax.jit(lambda a, b, f=af: qdot(a, b, f, impl="xla"))
            got = kern(x, q)
            k_ms = _time(kern, (x, q), config.repeats)
            x_ms = _time(xla, (x, q), config.repeats)
            rows.append([label, _rel_err(got, ref), k_ms, x_ms, bf16_ms, x_ms / k_ms,
                         bf16_ms / k_ms])
            print(" | ".join(str(v) for v in rows[-1]), flush=True)
    return rows


def _quantize_rows(config, deadline, skipped):
    rows = []
    x = jax.random.normal(jax.random.PRNGKey(1), config.quantize_shape, jnp.float32)
    for spec in config.quantize_formats:
        f = format_spec(spec)
        ops = [("quantize", jax.jit(lambda a, f=f: K.block_quantize(a, f)),
                jax.jit(lambda a, f=f: F.quantize(a, f, axis=1)), x),
               ("fused_fake_quant", jax.jit(lambda a, f=f: K.fused_fake_quant(a, f)),
                jax.jit(lambda a, f=f: F.fake_quant(a, f, axis=1)), x)]
        q = jax.jit(lambda a, f=f: F.quantize(a, f, axis=1))(x)
        ops.append(("dequantize", jax.jit(K.block_dequantize), jax.jit(F.dequantize), q))
        for op, kern, xla, arg in ops:
            label = f"{op} {spec} {config.quantize_shape[0]}x{config.quantize_shape[1]}"
            if time.perf_counter() > deadline:
                skipped.append(label)
                continue
            same = all(np.array_equal(np.asarray(a).view(np.uint8), np.asarray(b).view(np.uint8))
                       for a, b in zip(jax.tree.leaves(kern(arg)), jax.tree.leaves(xla(arg)),
                                       strict=True))
            k_ms, x_ms = _time(kern, (arg,), config.repeats), _time(xla, (arg,), config.repeats)
            rows.append([label, "identical" if same else "DIFFERENT", k_ms, x_ms, x_ms / k_ms])
            print(" | ".join(str(v) for v in rows[-1]), flush=True)
    return rows


def run(config) -> str:
    """Runs the checks and timings and writes the Markdown report; returns its text."""
    start = time.perf_counter()
    deadline = start + config.time_budget_s
    skipped: list[str] = []
    device = jax.devices()[0]
    mm = _matmul_rows(config, deadline, skipped)
    qr = _quantize_rows(config, deadline, skipped)
    report = "\n".join([
        "# Pallas kernels against XLA",
        "",
        f"Command: `{' '.join(['python -m experiments.bench_kernels', *sys.argv[1:]])}`",
        f"Device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
        f"{platform.machine()} host. Median of {config.repeats} calls after a warm-up; every "
        f"time measured in this run ({time.perf_counter() - start:.0f} s in all).",
        "",
        markdown_table(["matmul (MxKxN, formats)", "max rel err vs reference", "kernel ms",
                        "XLA ms", "bf16 ms", "XLA / kernel", "bf16 / kernel"], mm),
        markdown_table(["op", "vs XLA (bits)", "kernel ms", "XLA ms", "XLA / kernel"], qr),
        f"Skipped for the time budget ({config.time_budget_s:.0f} s): "
        + (", ".join(skipped) if skipped else "none") + ".",
    ])
    write_atomic(config.output, report)
    print(report, flush=True)
    return report


if __name__ == "__main__":
    main_with_config(run, "bench_kernels")

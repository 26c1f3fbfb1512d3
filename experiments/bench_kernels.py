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

import functools
import itertools
import platform

import jax
import jax.numpy as jnp
import numpy as np

import effjax.formats as F
import pallas_kernels as K
from effjax.formats import parse_format_spec
from effjax.quant import qdot
from experiments.common import (
    command,
    main_with_config,
    markdown_table,
    median_seconds,
    stopwatch,
    write_report,
)
from pallas_kernels import common


def _time(fn, args: tuple, config) -> float:
    """Milliseconds per call of fn(*args): the median over `config.repeats` batches of
    `config.inner` back-to-back calls with one wait at the end (the device's throughput,
    not the host's round trip per call)."""
    inner = config.inner

    def batch():
        out = None
        for _ in range(inner):
            out = fn(*args)
        jax.block_until_ready(out)

    return median_seconds(batch, config.repeats) * 1e3 / inner


def _rel_err(got, ref) -> float:
    got, ref = np.asarray(got, np.float32), np.asarray(ref, np.float32)
    return float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-30))


def _failure(e: Exception) -> str:
    """One table cell for a kernel that failed to lower or run."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"FAILED: {type(e).__name__}: {first[:160]}"


def _matmul_case(x, w, wspec, aspec, bf16_ms, config) -> list:
    """[max rel err, kernel ms, XLA ms, bf16 ms, XLA/kernel, bf16/kernel] of one format pair."""
    wf, af = parse_format_spec(wspec), parse_format_spec(aspec)
    q = jax.jit(lambda a: F.quantize(a, wf, axis=0))(w)
    if af is None:
        kern = jax.jit(lambda a, b: K.dequant_matmul(a, b))
        ref = K.dequant_matmul_reference(x, q)
    else:
        kern = jax.jit(lambda a, b: K.scaled_matmul(K.block_quantize(a, af), b))
        ref = K.scaled_matmul_reference(F.quantize(x, af, axis=1), q)
    xla = jax.jit(lambda a, b: qdot(a, b, af, impl="xla"))
    got = kern(x, q)
    k_ms = _time(kern, (x, q), config)
    x_ms = _time(xla, (x, q), config)
    return [_rel_err(got, ref), k_ms, x_ms, bf16_ms, x_ms / k_ms, bf16_ms / k_ms]


def _matmul_rows(config, over, skipped):
    rows = []
    key = jax.random.PRNGKey(0)
    for m, k, n in config.shapes:
        kx, kw, key = jax.random.split(key, 3)
        x = jax.random.normal(kx, (m, k), jnp.bfloat16)
        w = jax.random.normal(kw, (k, n), jnp.float32) * k**-0.5
        wb = w.astype(jnp.bfloat16)
        bf16 = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
        bf16_ms = _time(bf16, (x, wb), config)
        cases = [(s, None) for s in config.weight_formats]
        if m == max(s[0] for s in config.shapes):
            cases += [(s, s) for s in config.scaled_formats]
        for wspec, aspec in cases:
            label = f"{m}x{k}x{n} W:{wspec}" + (f" A:{aspec}" if aspec else "")
            if over():
                skipped.append(label)
                continue
            try:
                rows.append([label, *_matmul_case(x, w, wspec, aspec, bf16_ms, config)])
            except Exception as e:  # noqa: BLE001 (a kernel that fails to lower is a result)
                rows.append([label, _failure(e), "", "", bf16_ms, "", ""])
            print(" | ".join(str(v) for v in rows[-1]), flush=True)
    return rows


def _bytes(a) -> np.ndarray:
    """The bytes of an array, 0-d ones (NVFP4's global scale) too."""
    return np.atleast_1d(np.asarray(a)).view(np.uint8)


def _quantize_case(kern, xla, arg, config) -> list:
    """[bit comparison, kernel ms, XLA ms, XLA/kernel] of one elementwise op."""
    same = all(np.array_equal(_bytes(a), _bytes(b))
               for a, b in zip(jax.tree.leaves(kern(arg)), jax.tree.leaves(xla(arg)), strict=True))
    k_ms, x_ms = _time(kern, (arg,), config), _time(xla, (arg,), config)
    return ["identical" if same else "DIFFERENT", k_ms, x_ms, x_ms / k_ms]


def _quantize_rows(config, over, skipped):
    rows = []
    x = jax.random.normal(jax.random.PRNGKey(1), config.quantize_shape, jnp.float32)
    for spec in config.quantize_formats:
        f = parse_format_spec(spec)
        ops = [("quantize", jax.jit(lambda a, f=f: K.block_quantize(a, f)),
                jax.jit(lambda a, f=f: F.quantize(a, f, axis=1)), x),
               ("fused_fake_quant", jax.jit(lambda a, f=f: K.fused_fake_quant(a, f)),
                jax.jit(lambda a, f=f: F.fake_quant(a, f, axis=1)), x)]
        q = jax.jit(lambda a, f=f: F.quantize(a, f, axis=1))(x)
        ops.append(("dequantize", jax.jit(K.block_dequantize), jax.jit(F.dequantize), q))
        for op, kern, xla, arg in ops:
            label = f"{op} {spec} {config.quantize_shape[0]}x{config.quantize_shape[1]}"
            if over():
                skipped.append(label)
                continue
            try:
                rows.append([label, *_quantize_case(kern, xla, arg, config)])
            except Exception as e:  # noqa: BLE001 (a kernel that fails to lower is a result)
                rows.append([label, _failure(e), "", "", ""])
            print(" | ".join(str(v) for v in rows[-1]), flush=True)
    return rows


def _sweep_rows(config, over, skipped):
    """dequant_matmul over the tile grid: per (shape, format) the best tiles, the default
    tiles and XLA, all timed in this run."""
    rows = []
    for (m, k, n), spec in itertools.product(config.sweep_shapes, config.sweep_formats):
        label = f"{m}x{k}x{n} W:{spec}"
        if over():
            skipped.append(f"sweep {label}")
            continue
        kx, kw = jax.random.split(jax.random.PRNGKey(m + k + n))
        x = jax.random.normal(kx, (m, k), jnp.bfloat16)
        fmt = parse_format_spec(spec)
        q = jax.jit(lambda a, f=fmt: F.quantize(a, f, axis=0))(
            jax.random.normal(kw, (k, n), jnp.float32) * k**-0.5)
        xla_ms = _time(jax.jit(lambda a, b: qdot(a, b, None, impl="xla")), (x, q), config)
        default = common.matmul_setup(m, n, k, fmt.group_size, None, None, None, None, None)[:3]
        timed = {}
        for tiles in itertools.product(config.sweep_block_m, config.sweep_block_n,
                                       config.sweep_block_k):
            bm, bn, bk = tiles
            if bm > max(16, m) or n % bn or k % bk or bk % fmt.group_size:
                continue
            if over():
                skipped.append(f"sweep {label} tiles {bm}x{bn}x{bk}")
                continue
            kern = jax.jit(functools.partial(K.dequant_matmul, block_m=bm, block_n=bn,
                                             block_k=bk))
            try:
                timed[tiles] = _time(kern, (x, q), config)
            except Exception as e:  # noqa: BLE001 (tiles that fail to lower are a result)
                print(f"{label} tiles {tiles}: {_failure(e)}", flush=True)
            print(f"{label} tiles {tiles}: {timed.get(tiles)} ms", flush=True)
        if not timed:
            continue
        best = min(timed, key=timed.get)
        default_ms = timed.get(tuple(default), float("nan"))
        rows.append([label, "x".join(map(str, best)), timed[best], "x".join(map(str, default)),
                     default_ms, xla_ms, default_ms / timed[best], xla_ms / timed[best],
                     len(timed)])
    return rows


def run(config) -> str:
    """Runs the checks and timings and writes the Markdown report; returns its text."""
    elapsed = stopwatch()
    over = lambda: elapsed() > config.time_budget_s  # the time budget is spent
    skipped: list[str] = []
    device = jax.devices()[0]
    qr = _quantize_rows(config, over, skipped)  # cheapest first, the budget cuts the rest
    sw = _sweep_rows(config, over, skipped)
    mm = _matmul_rows(config, over, skipped)
    report = "\n".join([
        "# Pallas kernels against XLA",
        "",
        f"Command: {command('bench_kernels')}",
        f"Device: {device.device_kind} ({jax.default_backend()}), jax {jax.__version__}, "
        f"{platform.machine()} host. Time per call: the median of {config.repeats} batches of "
        f"{config.inner} back-to-back calls, after a warm-up; every time measured in this run "
        f"({elapsed():.0f} s in all).",
        "",
        markdown_table(["matmul (MxKxN, formats)", "max rel err vs reference", "kernel ms",
                        "XLA ms", "bf16 ms", "XLA / kernel", "bf16 / kernel"], mm),
        markdown_table(["op", "vs XLA (bits)", "kernel ms", "XLA ms", "XLA / kernel"], qr),
        "Tile sweep of dequant_matmul (block_m x block_n x block_k):",
        "",
        markdown_table(["matmul", "best tiles", "best ms", "default tiles", "default ms",
                        "XLA ms", "default / best", "XLA / best", "tiles tried"], sw),
        f"Skipped for the time budget ({config.time_budget_s:.0f} s): "
        + (", ".join(skipped) if skipped else "none") + ".",
    ])
    return write_report(config.output, report)


if __name__ == "__main__":
    main_with_config(run, "bench_kernels")

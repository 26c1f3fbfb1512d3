"""GPTQ speed on this CPU: calibration plus GPTQ of every SmolLM2-135M projection, and one
layer's GPTQ against qwix's (`qwix.contrib.gptq_core.quantize_weight`) on the same weight and
Hessian, in the same run.

    python -m experiments.bench_gptq [--config=configs/bench_gptq.py[:tiny]]

Per-layer times are steady state (median of repeated calls after a compiling call, whose
time is reported apart: qwix traces one step per column, effjax one loop per block).
"""

from __future__ import annotations

import importlib.util
import platform

import jax
import jax.numpy as jnp
import numpy as np

import effjax
from effjax.formats import parse_format_spec
from effjax.ptq import calibrate, gptq, gptq_quantize
from effjax.quant import get_layer, recipe
from experiments.common import (
    command,
    for_model,
    main_with_config,
    markdown_table,
    model_line,
    stopwatch,
    timed_call,
    write_report,
)


def _windows(lm, config) -> np.ndarray:
    corpus = effjax.data.load_corpus(config.corpus, split=config.split)
    ids = lm.tokenizer("\n\n".join(corpus.texts))["input_ids"]
    n = config.num_windows * config.window
    if len(ids) < n:
        raise ValueError(f"calibration text has {len(ids)} tokens, fewer than {n}")
    return np.asarray(ids[:n], np.int32).reshape(config.num_windows, config.window)


def _qwix_layer(w, h, spec):
    """qwix's GPTQ of w (d_in, d_out) with Hessian h, jitted; None if qwix is absent."""
    if importlib.util.find_spec("qwix") is None:
        return None
    from qwix._src.core import qarray
    from qwix.contrib import gptq_core

    f = parse_format_spec(spec)
    qtype = {"int4": jnp.int4, "int8": jnp.int8}[f.name]
    tiles = {1: f.group_size} if f.granularity == "group" else {}
    how = qarray.HowToQuantize(qtype=qtype, channelwise_axes=(0,), tiled_axes=tiles)
    fn = jax.jit(lambda wt, hh: gptq_core.quantize_weight(wt, hh, how)[0])

    def call():  # qwix relies on implicit rank promotion, which strict settings refuse
        with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
            return jax.block_until_ready(fn(w.T, h))

    return call


def run(config) -> str:
    """Runs the benchmark and writes its Markdown report; returns the text."""
    config = for_model(config)  # files named for a non-default model
    lm = effjax.load(config.model, tokenizer=True)
    tokens = _windows(lm, config)
    elapsed = stopwatch()
    calib = calibrate(lm.params, tokens, progress=False, config=lm.config)
    calib_s = elapsed()
    whole = []
    for spec in config.formats:
        elapsed = stopwatch()
        gptq(lm.params, calib, recipe(parse_format_spec(spec)), progress=True)
        gptq_s = elapsed()
        whole.append([spec, calib_s, gptq_s, calib_s + gptq_s])
    layers = []
    for path in config.layers:
        w = get_layer(lm.params, path)["kernel"]
        stats = calib[path]
        h = 2.0 * stats.xtx / stats.count.astype(jnp.float32)
        f = parse_format_spec(config.layer_format)

        def ours(w=w, stats=stats, f=f):
            return jax.block_until_ready(gptq_quantize(w, stats.xtx, int(stats.count), f).codes)

        _, ours_s, ours_first = timed_call(ours, config.repeats)
        theirs = _qwix_layer(w, h, config.layer_format)
        if theirs is None:
            layers.append([path, tuple(w.shape), ours_first, ours_s, "-", "-", "-"])
            continue
        _, theirs_s, theirs_first = timed_call(theirs, config.repeats)
        layers.append([path, tuple(w.shape), ours_first, ours_s, theirs_first, theirs_s,
                       theirs_s / ours_s])
    report = "\n".join([
        "# GPTQ speed on CPU",
        "",
        f"Command: {command('bench_gptq')}",
        model_line(config.model),
        f"Machine: {platform.machine()}, {jax.device_count()} {jax.default_backend()} device(s), "
        f"jax {jax.__version__}. Model {config.model}; calibration: {config.num_windows} "
        f"windows of {config.window} tokens ({config.corpus}, {config.split}).",
        "",
        "Whole model (every attention and MLP projection), seconds:",
        "",
        markdown_table(["format", "calibration s", "GPTQ s", "total s"], whole),
        f"One layer, {config.layer_format}, same weight and Hessian (seconds; first call "
        "includes compilation; `qwix / effjax` above 1 means effjax is faster):",
        "",
        markdown_table(["layer", "kernel shape", "effjax first", "effjax", "qwix first", "qwix",
                        "qwix / effjax"], layers),
    ])
    return write_report(config.output, report)


if __name__ == "__main__":
    main_with_config(run, "bench_gptq")

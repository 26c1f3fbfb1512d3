"""The long quickstart tables: a model's perplexity (float32, bfloat16) on 32k tokens, 16
round-to-nearest quantized variants (weight-only, W8A8, W4A4) and two generations. The main
job, a short version of this, is `python -m effjax.demo` (`make demo`).

    python -m experiments.quickstart_full [--config=configs/quickstart_full.py[:gemma3|:tiny]]

Writes the Markdown report named by `config.output`.
"""

from __future__ import annotations

import pathlib
import platform

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

import effjax
from effjax.formats import QArray, dequantize, parse_format_spec
from effjax.quant import quantize_params, recipe
from experiments.common import (
    command,
    for_model,
    main_with_config,
    markdown_table,
    model_line,
    stopwatch,
    write_report,
)


def run(config) -> str:
    """Runs the full quickstart and writes its report; returns the report text."""
    config = for_model(config)  # files named for a non-default model
    total = stopwatch()
    print(f"loading {config.model} ...", flush=True)
    lm = effjax.load(config.model)
    load_s = total()
    corpus = effjax.data.load_corpus(config.corpus)
    print(f"corpus: {corpus.name} ({corpus.source})", flush=True)
    rows = []
    for name in config.dtypes:
        dtype = jnp.dtype(name)
        params = jax.tree.map(lambda a, d=dtype: a.astype(d), lm.params)
        elapsed = stopwatch()
        r = effjax.perplexity(lm, corpus, seq_len=config.seq_len, stride=config.stride,
                              batch_size=config.batch_size, params=params, dtype=dtype,
                              max_tokens=config.max_tokens)
        secs = elapsed()
        rows.append([name, r.perplexity, r.nll, r.bits_per_byte, r.num_tokens, r.num_windows,
                     secs])
        print(f"{name}: perplexity {r.perplexity:.4f} over {r.num_tokens} tokens "
              f"({secs:.1f} s)", flush=True)
    quant_table = quantized_rows(lm, corpus, config)
    prompts = [lm.tokenizer(p)["input_ids"] for p in config.prompts]
    elapsed = stopwatch()
    outs = effjax.generate(lm.params, prompts, config=lm.config,
                           max_new_tokens=config.max_new_tokens)
    gen_s = elapsed()
    gen_lines = []
    for p, o in zip(config.prompts, outs, strict=True):
        gen_lines += [f"**Prompt:** `{p!r}`", "", "````", lm.tokenizer.decode(o), "````", ""]
    report = "\n".join([
        f"# Quickstart: {config.model} in effjax",
        "",
        f"Command: {command('quickstart_full')}",
        model_line(config.model),
        f"File: `{pathlib.Path(lm.source).name}` ({lm.config.num_layers} layers, hidden "
        f"{lm.config.hidden_size}, vocabulary {lm.config.vocab_size}); loaded in {load_s:.1f} s.",
        f"Machine: {platform.machine()}, {jax.device_count()} {jax.default_backend()} device(s), "
        f"jax {jax.__version__}.",
        "",
        f"## Perplexity on {corpus.name} ({corpus.split})",
        "",
        f"Source: `{corpus.source}`; first {config.max_tokens} tokens, windows of "
        f"{config.seq_len} tokens with stride {config.stride}, every token scored once "
        "(`effjax.eval.sliding_windows`); "
        + ("each window starts with the tokenizer's prefix token (`<bos>`), so the first "
           "token is scored too." if effjax.models.prefix_token(lm.tokenizer) is not None
           else "the first token has no context and is not scored."),
        "",
        markdown_table(["compute dtype", "perplexity", "nll (nats/token)",
                        "bits per byte (any tokenizer)", "tokens scored", "windows", "seconds"],
                       rows),
        "## Quantized (round to nearest, per-block scales as each format defines)",
        "",
        f"First {config.quant_max_tokens} tokens of the same corpus, windows of "
        f"{config.quant_seq_len}; weights quantized along their input axis, activations "
        "along their features (INT/FP8: one scale per output channel / per token). "
        "Weight-only rows run the float graph on the dequantized weights: the QArray path's "
        "values, with logits equal up to float32 rounding (within 1e-5 in "
        "tests/quant/test_quant.py), without compiling a graph per format.",
        "",
        quant_table,
        f"## Greedy generation ({config.max_new_tokens} new tokens max, float32, {gen_s:.1f} s "
        "including compilation)",
        "",
        *gen_lines,
    ])
    write_report(config.output, report)
    print(f"wrote {config.output} ({total():.0f} s in all)", flush=True)
    return report


def quantized_rows(lm, corpus, config) -> str:
    """Perplexity of each quantized variant beside float32 on the same tokens (a table)."""
    kwargs = dict(seq_len=config.quant_seq_len, stride=config.quant_seq_len,
                  batch_size=config.batch_size, max_tokens=config.quant_max_tokens,
                  progress=False)
    base = effjax.perplexity(lm, corpus, **kwargs).perplexity
    rows = [["float32", "-", "-", base, 0.0, 32.0, "-"]]
    for label, weight, act in tqdm(config.quant_rows, desc="quantized variants", unit="row"):
        elapsed = stopwatch()
        r = recipe(parse_format_spec(weight), parse_format_spec(act))
        params = quantize_params(lm.params, r)
        if act is None:  # weight-only: the float graph (compiled once) on the same values
            run_params, run_recipe = jax.tree.map(
                lambda a: dequantize(a, jnp.float32) if isinstance(a, QArray) else a, params,
                is_leaf=lambda a: isinstance(a, QArray)), None
        else:
            run_params, run_recipe = params, r
        ppl = effjax.perplexity(lm, corpus, params=run_params, recipe=run_recipe,
                                **kwargs).perplexity
        kernel = params["layers"][0]["mlp"]["up_proj"]["kernel"]
        rows.append([label, weight, act or "-", ppl, ppl - base, kernel.bits_per_element(),
                     f"{elapsed():.0f}"])
    return markdown_table(["variant", "weights", "activations", "perplexity", "vs float32",
                           "weight bits/element", "seconds"], rows)


if __name__ == "__main__":
    main_with_config(run, "quickstart_full")

"""The main job: load SmolLM2-135M, report perplexity (float32, bfloat16) and a generation.

    python -m experiments.quickstart [--config=configs/quickstart.py[:tiny]]

Writes the Markdown report named by `config.output`.
"""

from __future__ import annotations

import pathlib
import platform
import sys
import time

import jax
import jax.numpy as jnp
from absl import app
from ml_collections import config_flags

import effjax
from effjax.eval import markdown_table, write_atomic


def run(config) -> str:
    """Runs the quickstart and writes its report; returns the report text."""
    t0 = time.perf_counter()
    print(f"loading {config.model} ...", flush=True)
    lm = effjax.load(config.model)
    load_s = time.perf_counter() - t0
    corpus = effjax.data.load_corpus(config.corpus)
    print(f"corpus: {corpus.name} ({corpus.source})", flush=True)
    rows = []
    for name in config.dtypes:
        dtype = jnp.dtype(name)
        params = jax.tree.map(lambda a, d=dtype: a.astype(d), lm.params)
        start = time.perf_counter()
        r = effjax.perplexity(lm, corpus, seq_len=config.seq_len, stride=config.stride,
                              batch_size=config.batch_size, params=params, dtype=dtype,
                              max_tokens=config.max_tokens)
        secs = time.perf_counter() - start
        rows.append([name, r.perplexity, r.nll, r.num_tokens, r.num_windows, secs])
        print(f"{name}: perplexity {r.perplexity:.4f} over {r.num_tokens} tokens "
              f"({secs:.1f} s)", flush=True)
    prompts = [lm.tokenizer(p)["input_ids"] for p in config.prompts]
    start = time.perf_counter()
    outs = effjax.generate(lm.params, lm.config, prompts, max_new_tokens=config.max_new_tokens)
    gen_s = time.perf_counter() - start
    gen_lines = []
    for p, o in zip(config.prompts, outs, strict=True):
        gen_lines += [f"**Prompt:** `{p!r}`", "", "````", lm.tokenizer.decode(o), "````", ""]
    report = "\n".join([
        "# Quickstart: SmolLM2-135M-Instruct in effjax",
        "",
        f"Command: `{' '.join(['python -m experiments.quickstart', *sys.argv[1:]])}`",
        f"Model: `{pathlib.Path(lm.source).name}` ({lm.config.num_layers} layers, hidden "
        f"{lm.config.hidden_size}); loaded in {load_s:.1f} s.",
        f"Machine: {platform.machine()}, {jax.device_count()} {jax.default_backend()} device(s), "
        f"jax {jax.__version__}.",
        "",
        f"## Perplexity on {corpus.name} ({corpus.split})",
        "",
        f"Source: `{corpus.source}`; first {config.max_tokens} tokens, windows of "
        f"{config.seq_len} tokens with stride {config.stride}, every token but the first scored "
        "once (`effjax.eval.sliding_windows`).",
        "",
        markdown_table(["compute dtype", "perplexity", "nll (nats/token)", "tokens scored",
                        "windows", "seconds"], rows),
        f"## Greedy generation ({config.max_new_tokens} new tokens max, float32, {gen_s:.1f} s "
        "including compilation)",
        "",
        *gen_lines,
    ])
    write_atomic(config.output, report)
    print(f"wrote {config.output} ({time.perf_counter() - t0:.0f} s in all)", flush=True)
    return report


def main():
    # Defined here, not at import, so several experiment modules can be imported together.
    config = config_flags.DEFINE_config_file(
        "config", str(pathlib.Path(__file__).parents[1] / "configs" / "quickstart.py"),
        "quickstart config", lock_config=True)
    app.run(lambda argv: run(config.value))


if __name__ == "__main__":
    main()

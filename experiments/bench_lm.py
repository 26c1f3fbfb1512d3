"""Prefill and decode throughput, compile times and attention memory: effjax vs transformers
(PyTorch) on the same CPU, same run.

    python -m experiments.bench_lm [--config=configs/bench_lm.py[:tiny]]

Both sides run float32 on the same weights: transformers loads the GGUF file effjax loaded
(SmolLM2-135M by default, `--config.model=gemma3-270m` for Gemma 3). Prefill: tokens/s of one
forward over the layers stacked once (`stack_layers`, so every run of like layers is one scan;
median of `repeats` runs after a warm-up). Decode: greedy tokens/s after a prompt, (new - 1) /
(time(new tokens) - time(1 token)), so the prompt's prefill cancels out. Compile: the first call
of a new parameter structure (an RTN-quantized variant), layers under `scan` against the
unrolled reference, both measured here. Where the time goes: each prefill again with attention
replaced by a stub that returns its queries (both sides), so total - stubbed is the time in
attention. Memory: XLA's temporary buffer size for one layer's attention at the longest prefill,
dense against blocked.
"""

from __future__ import annotations

import contextlib
import functools
import pathlib
import platform

import jax
import jax.numpy as jnp
import numpy as np
import torch

import effjax
from effjax.models import forward
from effjax.models.sdpa import attention
from experiments.common import (
    command,
    for_model,
    main_with_config,
    markdown_table,
    median_seconds,
    model_line,
    stopwatch,
    write_report,
)


@functools.partial(jax.jit, static_argnames=("config", "scan_layers", "attention_impl"))
def _logits(params, tokens, *, config, scan_layers=True, attention_impl="auto"):
    return forward(params, tokens, config=config, scan_layers=scan_layers,
                   attention_impl=attention_impl)[0]


@contextlib.contextmanager
def _no_attention():
    """Both sides' attention replaced by a stub returning the queries (a new jit traces
    the stub; the caller makes one inside this context)."""
    import effjax.models.decoder as decoder

    ours, theirs = decoder.attention, torch.nn.functional.scaled_dot_product_attention
    decoder.attention = lambda q, k, v, **kw: q
    torch.nn.functional.scaled_dot_product_attention = lambda q, k, v, *a, **kw: q
    try:
        yield
    finally:
        decoder.attention, torch.nn.functional.scaled_dot_product_attention = ours, theirs


def _decode_rate(run, new: int, repeats: int) -> float:
    """Tokens/s of decoding alone: run(n) generates n tokens after the same prompt."""
    longer, one = median_seconds(lambda: run(new), repeats), median_seconds(lambda: run(1), repeats)
    return (new - 1) / max(longer - one, 1e-9)


def _compile_seconds(params, tokens, config, scan_layers: bool) -> float:
    """Wall time of the first call of a new parameter structure minus a warm call."""
    call = functools.partial(_logits, config=config, scan_layers=scan_layers)
    clock = stopwatch()
    call(params, tokens).block_until_ready()
    first = clock()
    return first - median_seconds(lambda: call(params, tokens).block_until_ready(), 1)


def _attention_temp_bytes(config, length: int, implementation: str) -> int:
    """XLA's temporary buffers for one layer's causal attention over `length` tokens."""
    q = jax.ShapeDtypeStruct((1, length, config.num_heads, config.head_dim), jnp.float32)
    kv = jax.ShapeDtypeStruct((1, length, config.num_kv_heads, config.head_dim), jnp.float32)
    fn = jax.jit(functools.partial(attention, causal=True, implementation=implementation))
    return fn.lower(q, kv, kv).compile().memory_analysis().temp_size_in_bytes


def run(config) -> str:
    """Runs the benchmark and writes its Markdown tables; returns the report text."""
    config = for_model(config)  # files named for a non-default model
    from transformers import AutoModelForCausalLM

    lm = effjax.load(config.model, tokenizer=False)
    c = lm.config
    path = pathlib.Path(lm.source)  # the same GGUF file, read by transformers as the reference
    if path.suffix != ".gguf":
        raise ValueError(f"bench_lm compares against transformers reading the model's GGUF file; "
                         f"{config.model!r} was loaded from {lm.source!r}")
    ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                               dtype=torch.float32).eval()
    rng = np.random.RandomState(0)
    stacked = effjax.models.stack_layers(lm.params, config=c)
    rows, profile = [], []
    for batch, length in config.prefill_shapes:
        tokens = rng.randint(0, c.vocab_size, (batch, length)).astype(np.int32)
        t_tokens = torch.tensor(tokens, dtype=torch.long)
        seconds = []
        for stub in (False, True):
            with _no_attention() if stub else contextlib.nullcontext():
                logits = jax.jit(functools.partial(_logits.__wrapped__, config=c))
                seconds.append(median_seconds(
                    lambda t=tokens, f=logits: f(stacked, t).block_until_ready(),
                    config.repeats))
                with torch.inference_mode():
                    seconds.append(median_seconds(lambda t=t_tokens: ref(t), config.repeats))
        ours, theirs, ours_rest, theirs_rest = seconds
        n = batch * length
        rows.append([f"prefill {batch}x{length}", n / ours, n / theirs, theirs / ours])
        profile.append([f"prefill {batch}x{length}", ours, ours - ours_rest, theirs,
                        theirs - theirs_rest])
    new = config.decode_new_tokens
    for p in config.decode_prompt_lens:
        prompt = rng.randint(0, c.vocab_size, (1, p))
        t_prompt, ids = torch.tensor(prompt, dtype=torch.long), prompt.tolist()
        ours = _decode_rate(lambda n, ids=ids: effjax.generate(
            lm.params, ids, max_new_tokens=n, eos_id=-1, config=c), new, config.repeats)
        with torch.inference_mode():
            theirs = _decode_rate(
                lambda n, t_prompt=t_prompt: ref.generate(
                    t_prompt, attention_mask=torch.ones_like(t_prompt), max_new_tokens=n,
                    min_new_tokens=n, do_sample=False),
                new, config.repeats)
        rows.append([f"greedy decode after a {p}-token prompt", ours, theirs, ours / theirs])

    tokens = rng.randint(0, c.vocab_size, (1, config.compile_len)).astype(np.int32)
    compile_rows = []
    for scan in (False, True):
        first = _compile_seconds(lm.params, tokens, c, scan)
        variant = effjax.quant.quantize_params(lm.params, effjax.quant.recipe(config.variant))
        compile_rows.append(["layers under scan" if scan else "unrolled (before)", first,
                             _compile_seconds(variant, tokens, c, scan)])
    memory = [[impl, _attention_temp_bytes(c, config.memory_len, impl) / 2**20]
              for impl in ("dense", "xla")]
    report = "\n".join([
        f"# CPU speed: effjax vs transformers (PyTorch), {config.model} float32",
        "",
        model_line(config.model),
        f"Command: {command('bench_lm')}",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} PyTorch threads, jax "
        f"{jax.__version__}, torch {torch.__version__}. Median of {config.repeats} runs after a "
        "warm-up; both sides measured in this run. Decode rates exclude the prompt's prefill.",
        "",
        markdown_table(["workload", "effjax tokens/s", "PyTorch tokens/s", "effjax / PyTorch"],
                       rows),
        "",
        "## Where the prefill time goes (seconds; attention = total - total with attention "
        "stubbed out)",
        "",
        markdown_table(["workload", "effjax total", "effjax attention", "PyTorch total",
                        "PyTorch attention"], profile),
        "",
        f"## Compile time (seconds, forward at 1x{config.compile_len})",
        "",
        markdown_table(["layers", "first call of the model",
                        f"first call of a new {config.variant} variant"], compile_rows),
        "",
        f"## Attention temporaries at {config.memory_len} tokens (one layer, causal, XLA's "
        "memory analysis)",
        "",
        markdown_table(["implementation", "MiB"], memory),
    ])
    return write_report(config.output, report)


if __name__ == "__main__":
    main_with_config(run, "bench_lm")

"""Prefill and greedy-decode throughput: effjax vs transformers PyTorch on the same CPU, same run.

    python -m experiments.bench_lm [--config=configs/bench_lm.py[:tiny]]

Both sides run float32 on the same SmolLM2-135M weights (transformers loads the same GGUF
file). Reports tokens/s (median of `repeats` runs after a warm-up) and effjax / PyTorch.
"""

from __future__ import annotations

import platform

import jax
import numpy as np
import torch

import effjax
from experiments.common import (
    command,
    main_with_config,
    markdown_table,
    median_seconds,
    write_report,
)


def run(config) -> str:
    """Runs the benchmark and writes its Markdown table; returns the report text."""
    from transformers import AutoModelForCausalLM

    lm = effjax.load(config.model, tokenizer=False)
    path = effjax.zoo.smollm2_path()  # the GGUF file transformers reads as the reference
    ref = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                               dtype=torch.float32).eval()
    rng = np.random.RandomState(0)
    rows = []
    for batch, length in config.prefill_shapes:
        tokens = rng.randint(0, lm.config.vocab_size, (batch, length)).astype(np.int32)
        t_tokens = torch.tensor(tokens, dtype=torch.long)
        ours = median_seconds(lambda t=tokens: lm.apply(lm.params, t).block_until_ready(),
                               config.repeats)
        with torch.inference_mode():
            theirs = median_seconds(lambda t=t_tokens: ref(t), config.repeats)
        n = batch * length
        rows.append([f"prefill {batch}x{length}", n / ours, n / theirs, theirs / ours])
    b, p, new = config.decode_batch, config.decode_prompt_len, config.decode_new_tokens
    prompt = rng.randint(0, lm.config.vocab_size, (b, p))
    ours = median_seconds(lambda: effjax.generate(lm.params, prompt.tolist(),
                                                   max_new_tokens=new, eos_id=-1, config=lm.config),
                           config.repeats)
    t_prompt = torch.tensor(prompt, dtype=torch.long)
    with torch.inference_mode():
        theirs = median_seconds(
            lambda: ref.generate(t_prompt, attention_mask=torch.ones_like(t_prompt),
                                 max_new_tokens=new, min_new_tokens=new, do_sample=False),
            config.repeats)
    rows.append([f"greedy decode {b}x{new} (prompt {p}, incl. prefill)", b * new / ours,
                 b * new / theirs, theirs / ours])
    report = "\n".join([
        "# CPU throughput: effjax vs transformers (PyTorch), SmolLM2-135M float32",
        "",
        f"Command: {command('bench_lm')}",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} PyTorch threads, jax "
        f"{jax.__version__}, torch {torch.__version__}. Median of {config.repeats} runs after a "
        "warm-up; both sides measured in this run.",
        "",
        markdown_table(["workload", "effjax tokens/s", "PyTorch tokens/s", "effjax / PyTorch"],
                       rows),
    ])
    return write_report(config.output, report)


if __name__ == "__main__":
    main_with_config(run, "bench_lm")

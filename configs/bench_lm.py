"""CPU throughput of SmolLM2-135M: effjax (JAX/XLA) against transformers (PyTorch eager)."""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "smollm2-135m"
    c.prefill_shapes = ((1, 512), (4, 256))  # (batch, prompt length)
    c.decode_batch = 1
    c.decode_prompt_len = 16
    c.decode_new_tokens = 64
    c.repeats = 3  # the median of this many timed runs, after one warm-up
    c.output = "experiments/results/bench_lm_cpu.md"
    if variant == "tiny":
        c.prefill_shapes = ((1, 32),)
        c.decode_new_tokens, c.repeats = 4, 1
        c.output = "/tmp/effjax_bench_lm_tiny.md"
    elif variant:
        raise ValueError(f"unknown bench_lm variant {variant!r}; expected '' or 'tiny'")
    return c

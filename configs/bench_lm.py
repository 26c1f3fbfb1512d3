"""CPU throughput of SmolLM2-135M: effjax (JAX/XLA) against transformers (PyTorch eager)."""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "smollm2-135m"
    c.prefill_shapes = ((1, 512), (1, 2048), (1, 8192), (4, 1024))  # (batch, length)
    c.decode_prompt_lens = (16, 2048)
    c.decode_new_tokens = 64
    c.compile_len = 128  # tokens of the forward whose compilation is timed
    c.variant = "int4"  # the quantized variant (weights) whose compilation is timed
    c.memory_len = 8192  # tokens of the attention whose temporaries are reported
    c.repeats = 3  # the median of this many timed runs, after one warm-up
    c.output = "experiments/results/bench_lm_cpu.md"
    if variant == "tiny":
        c.prefill_shapes = ((1, 32),)
        c.decode_prompt_lens, c.decode_new_tokens, c.repeats = (8,), 4, 1
        c.compile_len, c.memory_len = 16, 256
        c.output = "/tmp/effjax_bench_lm_tiny.md"
    elif variant:
        raise ValueError(f"unknown bench_lm variant {variant!r}; expected '' or 'tiny'")
    return c

"""GPTQ speed on SmolLM2-135M: the whole model, and one layer against qwix's GPTQ."""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "smollm2-135m"
    c.corpus = "auto"  # calibration text: WikiText-2 valid when ../shared/data has it
    c.split = "valid"
    c.num_windows = 32
    c.window = 512
    c.formats = ("int4:128", "mxfp4")  # whole-model runs
    c.layers = ("layers/0/attn/q_proj", "layers/0/mlp/down_proj")  # against qwix
    c.layer_format = "int4:64"  # both implementations have it (qwix needs groups dividing d_in)
    c.repeats = 3
    c.output = "experiments/results/bench_gptq_cpu.md"
    if variant == "tiny":
        c.num_windows, c.window = 2, 32
        c.formats = ("mxfp4",)
        c.layers = ("layers/0/attn/k_proj",)
        c.repeats = 1
        c.output = "/tmp/effjax_bench_gptq_tiny.md"
    elif variant:
        raise ValueError(f"unknown bench_gptq variant {variant!r}; expected '' or 'tiny'")
    return c

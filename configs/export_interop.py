"""Exported models read by other tools (`experiments/export_interop.py`): SmolLM2-135M's
round-to-nearest kernels in six compressed-tensors schemes read by transformers, and its
MXFP4 / Q8_0 / Q4_0 GGUF files run by llama.cpp (`llama-cpp-python`, the `interop` extra).

`--config=configs/export_interop.py` runs SmolLM2-135M; `:tiny` a smoke variant.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "smollm2-135m"
    c.corpus = "wikitext2"
    c.window = 512
    c.windows = 16  # 8176 scored tokens, the same in every reader
    c.prompts = ("The capital of France is a city that", "def add(a, b):\n    return",
                 "Question: what is 12 times 7?\nAnswer:")
    # compressed-tensors: (label, weight format spec)
    c.hf_schemes = (("MXFP4", "mxfp4"), ("NVFP4", "nvfp4"), ("MXFP8 E4M3", "mxfp8_e4m3"),
                    ("INT4 g32 asym", "int4:32@asym"), ("INT8 per channel", "int8"),
                    ("FP8 E4M3 per channel", "fp8_e4m3:channel"))
    # GGUF: (label, weight format spec) written in their exact GGML types
    c.gguf_schemes = (("MXFP4", "mxfp4"), ("Q8_0 (INT8 g32)", "int8:32"),
                      ("Q4_0 (INT4 g32)", "int4:32"))
    c.threads = 2
    c.output = "experiments/results/export_interop.md"
    if variant == "tiny":
        c.window, c.windows = 64, 2
        c.prompts = c.prompts[:1]
        c.hf_schemes = c.hf_schemes[:1]
        c.gguf_schemes = c.gguf_schemes[:1]
        c.output = "/tmp/effjax_export_interop_tiny.md"
    elif variant:
        raise ValueError(f"unknown export_interop variant {variant!r}; expected '' or 'tiny'")
    return c

"""The main job: SmolLM2-135M perplexity in float32 and bfloat16, and a greedy generation.

`--config=configs/quickstart.py` runs the default; `--config=configs/quickstart.py:tiny` a
seconds-long smoke variant.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "smollm2-135m"
    c.corpus = "auto"  # WikiText-2 test when ../shared/data has it, else the stdlib source
    c.seq_len = 1024
    c.stride = 1024
    c.batch_size = 4
    c.max_tokens = 32768
    c.dtypes = ("float32", "bfloat16")
    c.prompts = (
        "The three primary colours are",
        "<|im_start|>user\nWrite a Python function that reverses a string.<|im_end|>\n"
        "<|im_start|>assistant\n",
    )
    c.max_new_tokens = 48
    c.output = "experiments/results/quickstart.md"
    if variant == "tiny":
        c.seq_len, c.stride, c.max_tokens, c.max_new_tokens = 128, 64, 400, 8
        c.corpus = "stdlib"
        c.output = "/tmp/effjax_quickstart_tiny.md"
    elif variant:
        raise ValueError(f"unknown quickstart variant {variant!r}; expected '' or 'tiny'")
    return c

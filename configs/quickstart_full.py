"""The long quickstart tables (`experiments/quickstart_full.py`): a model's perplexity in
float32 and bfloat16, 16 quantized variants and two greedy generations.

`--config=configs/quickstart_full.py` runs SmolLM2-135M; `:gemma3` Gemma 3 270M (one window
per forward: its 262k-entry vocabulary makes a 1024-token window's logits 1 GiB), written to
`quickstart_full.gemma3-270m.md` (`experiments.common.for_model`); `:tiny` a seconds-long
smoke variant (`--config.model=gemma3-270m` runs it on Gemma).
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "smollm2-135m"
    c.corpus = "wikitext2"  # the shipped WikiText-2 test split
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
    # Quantized rows: (label, weight format, activation format), round-to-nearest weights.
    # Each is scored on the first `quant_max_tokens` tokens beside float32 on the same ones.
    c.quant_rows = (
        ("W4 INT4 g128", "int4:128", None),
        ("W4 MXFP4", "mxfp4", None),
        ("W4 NVFP4", "nvfp4", None),
        ("W4 HiF4", "hif4", None),
        ("W8 INT8", "int8", None),
        ("W8 FP8 E4M3", "fp8_e4m3", None),
        ("W8 FP8 E5M2", "fp8_e5m2", None),
        ("W8 MXFP8 E4M3", "mxfp8_e4m3", None),
        ("W8 MXFP8 E5M2", "mxfp8_e5m2", None),
        ("W8 MXINT8", "mxint8", None),
        ("W8 HiF8", "hif8", None),
        ("W8A8 MXFP8 E4M3", "mxfp8_e4m3", "mxfp8_e4m3"),
        ("W8A8 HiF8", "hif8", "hif8"),
        ("W4A4 MXFP4", "mxfp4", "mxfp4"),
        ("W4A4 NVFP4", "nvfp4", "nvfp4"),
        ("W4A4 HiF4", "hif4", "hif4"),
    )
    c.quant_seq_len = 512
    c.quant_max_tokens = 2048
    c.output = "experiments/results/quickstart_full.md"
    if variant == "tiny":
        c.seq_len, c.stride, c.max_tokens, c.max_new_tokens = 128, 64, 400, 8
        c.quant_rows = (("W4A4 MXFP4", "mxfp4", "mxfp4"), ("W8 INT8", "int8", None))
        c.quant_seq_len, c.quant_max_tokens = 128, 256
        c.corpus = "stdlib"
        c.output = "/tmp/effjax_quickstart_full_tiny.md"
    elif variant == "gemma3":
        c.model = "gemma3-270m"
        c.batch_size = 1
        c.prompts = ("The three primary colours are", "def reverse_string(s):\n")
    elif variant:
        raise ValueError(f"unknown quickstart_full variant {variant!r}; expected '', 'gemma3' "
                         "or 'tiny'")
    return c

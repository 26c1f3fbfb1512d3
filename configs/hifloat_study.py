"""The HiFloat study on SmolLM2-135M: HiF8 / HiF4 against FP8, INT, MXFP and NVFP4.

Format strings: "int4:16" (INT4 per group of 16), "fp8_e4m3:tensor" / ":channel" (the weight
scale per tensor / per output channel). Activations and the KV cache always get one scale
per vector (per token, per head) for INT and FP8: a per-tensor dynamic scale is refused by
`effjax.quant.Recipe`. Cells already in `cache` are not rerun.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "smollm2-135m"
    c.layers = None  # all decoder layers (quick: the first few, real weights)
    # Perplexity and token KL vs float32, from one pass over the first eval_tokens tokens.
    c.eval_corpus, c.eval_split = "wikitext2", "test"
    c.eval_seq_len, c.eval_tokens = 512, 2048
    # Calibration for the PTQ methods and the token windows the tensor statistics see.
    c.calib_corpus, c.calib_split = "wikitext2", "valid"
    c.num_windows, c.window = 8, 512
    c.stats_tokens = 512
    c.stats_split_by = "kurtosis"  # narrow-range vs high-variance: above / below the median
    c.formats8 = (
        ("HiF8", "hif8"),
        ("FP8 E4M3 /tensor", "fp8_e4m3:tensor"), ("FP8 E4M3 /channel", "fp8_e4m3:channel"),
        ("FP8 E5M2 /tensor", "fp8_e5m2:tensor"), ("FP8 E5M2 /channel", "fp8_e5m2:channel"),
        ("INT8 /channel", "int8"), ("MXFP8 E4M3", "mxfp8_e4m3"))
    c.settings8 = ("W8A8", "KV8")
    c.formats4 = (("HiF4", "hif4"), ("MXFP4", "mxfp4"), ("NVFP4", "nvfp4"),
                  ("INT4 g16", "int4:16"), ("INT4 g32", "int4:32"), ("INT4 g64", "int4:64"))
    c.settings4 = ("W4A16", "W4A4", "KV4")
    # PTQ compatibility (claim 3): methods x (setting, format) beside RTN.
    c.ptq_methods = ("smoothquant", "gptq", "quarot")
    c.ptq_cells = (("W4A16", "hif4"), ("W4A4", "hif4"), ("W8A8", "hif8"))
    c.cache = "experiments/results/hifloat_study.json"
    c.output = "experiments/results/hifloat_study.md"
    c.plot = "experiments/results/hifloat_study.png"
    if variant == "quick":  # the real loop in about a minute: 4 layers, a few cells
        c.layers = 4
        c.eval_seq_len, c.eval_tokens = 128, 256
        c.num_windows, c.window = 2, 128
        c.stats_tokens = 64
        c.formats8 = (("HiF8", "hif8"), ("INT8 /channel", "int8"))
        c.settings8 = ("W8A8",)
        c.formats4 = (("HiF4", "hif4"), ("INT4 g32", "int4:32"))
        c.settings4 = ("W4A4",)
        c.ptq_methods = ("smoothquant",)
        c.ptq_cells = (("W4A4", "hif4"),)
        c.cache = "/tmp/effjax_hifloat_study_quick.json"
        c.output = "/tmp/effjax_hifloat_study_quick.md"
        c.plot = "/tmp/effjax_hifloat_study_quick.png"
    elif variant:
        raise ValueError(f"unknown hifloat_study variant {variant!r}; expected '' or 'quick'")
    return c

"""The Pallas kernels on a GPU or TPU: correctness against the references, time against XLA."""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # (M, K, N): decode shapes and a prefill shape (the only one with `A:` rows) first, then
    # the larger decode shapes, so a spent time budget skips the least informative rows.
    c.shapes = ((1, 4096, 4096), (16, 4096, 4096), (2048, 4096, 4096), (1, 8192, 8192),
                (16, 8192, 8192))
    c.weight_formats = ("mxfp4", "nvfp4", "int4:128", "hif4", "mxfp8_e4m3")  # W4A16 / W8A16
    c.scaled_formats = ("mxfp8_e4m3", "mxfp4", "nvfp4")  # W8A8 / W4A4, at the prefill shape
    c.quantize_shape = (4096, 4096)  # quantize / dequantize / fused fake quant
    c.quantize_formats = ("mxfp8_e4m3", "mxfp4", "nvfp4", "hif4")
    c.repeats = 20  # median of this many timed batches, after one warm-up
    c.inner = 10  # back-to-back calls per timed batch (one wait at its end)
    # dequant_matmul tile sweep (tiles that do not divide the shape are left out).
    c.sweep_shapes = ((16, 4096, 4096), (2048, 4096, 4096))
    c.sweep_formats = ("mxfp4",)
    c.sweep_block_m = (16, 64, 128)
    c.sweep_block_n = (64, 128, 256)
    c.sweep_block_k = (128, 256, 512)
    c.time_budget_s = 200.0  # rows left once spent are listed as skipped
    c.output = "experiments/results/bench_kernels.md"
    if variant == "tiny":  # CPU smoke test: interpret mode, tiny shapes
        c.shapes = ((1, 256, 128), (40, 256, 128))
        c.weight_formats = ("mxfp4", "int4:128")
        c.scaled_formats = ("nvfp4",)
        c.quantize_shape = (40, 256)
        c.quantize_formats = ("mxfp4", "nvfp4")  # NVFP4: a 0-d global scale among the leaves
        c.repeats = 1
        c.inner = 2
        c.sweep_shapes = ((40, 256, 128),)
        c.sweep_formats = ("mxfp4",)
        c.sweep_block_m = (16, 40)  # 40: the interpret-mode default
        c.sweep_block_n = (128,)
        c.sweep_block_k = (128, 256)
        c.output = "/tmp/effjax_bench_kernels_tiny.md"
    elif variant:
        raise ValueError(f"unknown bench_kernels variant {variant!r}; expected '' or 'tiny'")
    return c

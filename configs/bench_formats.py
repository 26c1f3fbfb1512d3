"""Quantize + dequantize throughput of every format on CPU, against a copy and against peers."""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.shape = (4096, 4096)  # float32, quantized along the last (contraction) axis
    c.repeats = 5  # the median of this many timed runs, after one warm-up
    # effjax format name -> options; each row is compared with the peers that have it.
    c.formats = (
        ("int8", {}),
        ("int4", {"granularity": "group", "group_size": 128}),
        ("fp8_e4m3", {}),
        ("fp8_e5m2", {}),
        ("mxfp8_e4m3", {}),
        ("mxfp8_e5m2", {}),
        ("mxfp6_e2m3", {}),
        ("mxfp6_e3m2", {}),
        ("mxfp4", {}),
        ("mxint8", {}),
        ("nvfp4", {}),
        ("hif8", {}),
        ("hif4", {}),
        ("bf16", {}),
    )
    c.peers = ("qwix", "torchao")
    c.output = "experiments/results/bench_formats_cpu.md"
    if variant == "tiny":
        c.shape = (64, 256)
        c.repeats = 1
        c.formats = (("int4", {"granularity": "group", "group_size": 128}), ("mxfp4", {}),
                     ("nvfp4", {}), ("hif4", {}))
        c.output = "/tmp/effjax_bench_formats_tiny.md"
    elif variant:
        raise ValueError(f"unknown bench_formats variant {variant!r}; expected '' or 'tiny'")
    return c

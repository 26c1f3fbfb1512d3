"""HAWK and the visual token pruning baselines on the shapes VLM (effjax.pruning).

The model is `effjax.pruning.load_shapes_vlm()` (shipped in effjax/data/zoo/shapes_vlm,
trained when missing and `train_missing`). Ratios are the fraction of visual tokens pruned.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model_dir = ""  # "" = the shipped model
    c.train_missing = True
    c.seed = 0
    c.splits = (("test", 1000), ("hard", 1000))  # (split, examples)
    c.calibration = 256  # training-split scenes never trained on, for HAWK's head weights
    c.batch_size = 100
    c.ratios = (0.5, 0.6, 0.7, 0.8, 0.9)
    c.methods = ("random", "fastv", "visionzip", "dart", "hawk")
    c.fastv_layer = 1
    c.dart_pivots = 4
    c.latency_batch = 32  # test prompts timed together (prefill and end to end)
    c.latency_ratios = (0.5, 0.8, 0.9)
    c.latency_methods = ("hawk", "fastv", "random")
    c.repeats = 7
    c.headline = 0.8  # the pruning ratio of the targets
    c.cache = "experiments/results/hawk.json"
    c.output = "experiments/results/hawk.md"
    c.plot = "experiments/results/hawk.png"
    if variant == "tiny":  # the real loop on a few examples
        c.splits = (("test", 24), ("hard", 16))
        c.calibration, c.batch_size = 16, 8
        c.ratios, c.latency_ratios = (0.5, 0.8), (0.8,)
        c.latency_batch, c.repeats = 4, 1
        c.cache = "/tmp/effjax_hawk_tiny.json"
        c.output = "/tmp/effjax_hawk_tiny.md"
        c.plot = "/tmp/effjax_hawk_tiny.png"
    elif variant:
        raise ValueError(f"unknown hawk variant {variant!r}; expected '' or 'tiny'")
    return c

"""BATQuant against the PTQ baselines on SmolLM2-135M, W4A4KV16 MXFP4, with its ablations.

Rows are (label, method, options): `effjax.ptq.METHODS` names; options go to the quantizer
(`transform_options` for SpinQuant). The learned methods' budgets are cut for this 2-core CPU
(the papers train 15 epochs per layer / 100 Cayley steps).
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "smollm2-135m"
    c.weight, c.activation = "mxfp4", "mxfp4"  # KV cache in float (W4A4KV16)
    c.calib_corpus, c.calib_split = "wikitext2", "valid"
    c.num_windows, c.window = 16, 512
    c.eval_corpus, c.eval_split = "wikitext2", "test"
    c.eval_seq_len, c.eval_tokens = 512, 2048
    learned = {"steps": 10, "batch_size": 2}
    c.rows = (
        ("RTN", "rtn", {}),
        ("QuaRot", "quarot", {}),
        ("SpinQuant", "spinquant", {"steps": 20, "batch_size": 2}),
        ("FlatQuant (= global affine ablation)", "flatquant", learned),
        ("MR-GPTQ", "mr_gptq", {}),
        ("BATQuant", "batquant", {**learned, "variant": "gpk"}),
        ("BATQuant, full blocks (no GPK)", "batquant", {**learned, "variant": "full"}),
        ("BATQuant, orthogonal blocks", "batquant", {**learned, "variant": "orthogonal"}),
        ("BATQuant, no learnable clipping", "batquant", {**learned, "clip": False}),
    )
    c.overhead_tokens, c.overhead_repeats = 2048, 5
    c.compute = True  # False: the report from the cached rows only (the others "not run")
    c.cache = "experiments/results/batquant.json"
    c.output = "experiments/results/batquant.md"
    if variant == "tiny":  # the real loop, a few windows, two rows
        c.num_windows, c.window = 2, 64
        c.eval_seq_len, c.eval_tokens = 64, 128
        c.rows = (("RTN", "rtn", {}), ("BATQuant", "batquant", {"steps": 1, "batch_size": 1}))
        c.overhead_tokens, c.overhead_repeats = 64, 1
        c.cache = "/tmp/effjax_batquant_tiny.json"
        c.output = "/tmp/effjax_batquant_tiny.md"
    elif variant:
        raise ValueError(f"unknown batquant variant {variant!r}; expected '' or 'tiny'")
    return c

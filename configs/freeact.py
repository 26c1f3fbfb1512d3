"""FreeAct against RTN, QuaRot and one shared transform, W4A4 INT4 and MXFP4, on the
masked-diffusion agent (masked vs unmasked tokens) and the shapes VLM (vision vs text).

Rows are (label, method, options): method "rtn", "quarot", "shared" (FlatQuant's Kronecker
transform and clipping, trained on the same type-balanced loss) or "freeact"; options go to
`effjax.ptq.flatquant` / `effjax.ptq.freeact`. Budgets are cut for this 2-core CPU.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.models = ("dllm", "vlm")
    c.formats = ("int4", "mxfp4")  # weights and activations (W4A4), KV cache float
    c.calib_windows = 32  # dLLM trajectories / VLM training sequences
    c.eval_windows = 256  # dLLM held-out trajectories / VLM questions per split
    c.vlm_splits = ("test", "hard")
    c.seeds = (1, 2, 3)  # calibration sets (and QuaRot's signs): mean and spread over them
    learned = {"steps": 40, "batch_size": 8}
    c.rows = (
        ("RTN", "rtn", {}),
        ("QuaRot", "quarot", {}),
        ("shared transform (FlatQuant-style)", "shared", learned),
        ("FreeAct, energy 0.9", "freeact", {**learned, "energy": 0.9}),
        ("FreeAct, energy 0.99", "freeact", {**learned, "energy": 0.99}),
        ("FreeAct, energy 0.999", "freeact", {**learned, "energy": 0.999}),
    )
    c.headline = "FreeAct, energy 0.99"
    c.compute = True  # False: the report from the cached cells only (the others "not run")
    c.cache = "experiments/results/freeact.json"
    c.output = "experiments/results/freeact.md"
    if variant == "tiny":  # the real loop: few windows, one format, two rows
        c.formats = ("int4",)
        c.calib_windows, c.eval_windows = 2, 4
        c.vlm_splits = ("test",)
        c.seeds = (1,)
        c.rows = (("RTN", "rtn", {}),
                  ("FreeAct, energy 0.99", "freeact", {"steps": 1, "batch_size": 1}))
        c.cache = "/tmp/effjax_freeact_tiny.json"
        c.output = "/tmp/effjax_freeact_tiny.md"
    elif variant:
        raise ValueError(f"unknown freeact variant {variant!r}; expected '' or 'tiny'")
    return c

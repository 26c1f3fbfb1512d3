"""The MXFP PTQ study on SmolLM2-135M: methods x (setting, format) columns.

Format strings: "int4:128" (INT4 per group of 128), "mxfp4@rceil" (an MX scale mode).
Methods: `effjax.ptq.METHODS` names; "<name>/seq" calibrates sequentially.
Columns are (label, weight, activation, kv cache). Cells already in `cache` are not rerun
(delete the file, or change a cell's settings, to rerun it).
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "smollm2-135m"
    c.calib_corpus, c.calib_split = "wikitext2", "valid"
    c.num_windows, c.window = 16, 512
    # Perplexity domains: WikiText-2 test and code (the Python standard library's source).
    c.domains = (("wikitext2", "test"), ("stdlib", "all"))
    c.eval_seq_len, c.eval_max_tokens = 512, 4096
    c.kl_max_tokens = 2048  # mean token KL vs float32, on WikiText-2 test
    c.methods = ("rtn", "gptq", "awq", "smoothquant", "quarot", "quarot_gptq", "spinquant",
                 "flatquant", "mr_gptq", "scale_opt", "gptq_scale_opt", "gptq/seq",
                 "mr_gptq/seq")
    # Per-method options: the learned transforms' budgets on this 2-core CPU (SpinQuant's
    # paper trains 100 Cayley steps; FlatQuant's 15 epochs per layer).
    c.method_options = ml_collections.ConfigDict({
        "spinquant": {"steps": 20, "batch_size": 2, "learning_rate": 1.5},
        "flatquant": {"steps": 10, "batch_size": 2, "learning_rate": 5e-3},
    })
    c.columns = (
        ("W8A8 MXFP8", "mxfp8_e4m3", "mxfp8_e4m3", None),
        ("W4A16 MXFP4", "mxfp4", None, None),
        ("W4A4 MXFP4", "mxfp4", "mxfp4", None),
        ("W4A4KV4 MXFP4", "mxfp4", "mxfp4", "mxfp4"),
        ("W8A8KV8 MXFP8", "mxfp8_e4m3", "mxfp8_e4m3", "mxfp8_e4m3"),
        ("W8A16 MXFP8", "mxfp8_e4m3", None, None),
        ("W4A16 INT4 g128", "int4:128", None, None),
        ("W8A8 INT8", "int8", "int8", None),
        ("W4A16 NVFP4", "nvfp4", None, None),
        ("W4A4 NVFP4", "nvfp4", "nvfp4", None),
        ("W4A16 HiF4", "hif4", None, None),
        ("W4A4 MXFP4 ceil", "mxfp4@ceil", "mxfp4@ceil", None),
        ("W4A4 MXFP4 even", "mxfp4@even", "mxfp4@even", None),
        ("W4A4 MXFP4 rceil", "mxfp4@rceil", "mxfp4@rceil", None),
        ("W8A8 MXFP8 rceil", "mxfp8_e4m3@rceil", "mxfp8_e4m3@rceil", None),
    )
    c.time_budget_s = 6 * 3600.0  # cells left once spent are listed as not run
    c.cache = "experiments/results/mxfp_ptq_study.json"
    c.output = "experiments/results/mxfp_ptq_study.md"
    c.plot = "experiments/results/mxfp_ptq_study.png"
    if variant == "core":  # the study's headline cells first (same cache and settings)
        c.methods = ("rtn", "gptq", "awq", "smoothquant", "quarot", "mr_gptq", "scale_opt")
        c.columns = tuple(col for col in c.columns if col[0] in (
            "W8A8 MXFP8", "W4A16 MXFP4", "W4A4 MXFP4"))
    elif variant == "modes":  # the MX scale modes and the pre-scale search
        c.methods = ("rtn", "scale_opt")
        c.columns = tuple(col for col in c.columns if col[0].startswith((
            "W4A4 MXFP4", "W8A8 MXFP8")) and "KV" not in col[0])
    elif variant == "settings":  # the KV settings and the other formats' columns
        c.methods = ("rtn", "gptq", "mr_gptq")
        c.columns = tuple(col for col in c.columns if col[0] in (
            "W4A4KV4 MXFP4", "W8A8KV8 MXFP8", "W8A16 MXFP8", "W4A16 INT4 g128", "W8A8 INT8",
            "W4A16 NVFP4", "W4A4 NVFP4", "W4A16 HiF4"))
    elif variant == "mxfp8":  # the 8-bit MX columns with the OCP-safe rceil scale
        c.methods = ("rtn", "gptq", "awq", "smoothquant", "quarot", "mr_gptq", "scale_opt",
                     "gptq_scale_opt")
        c.columns = tuple(col for col in c.columns if col[0] in (
            "W8A8 MXFP8 rceil", "W8A16 MXFP8"))
    elif variant == "formats":  # INT, NVFP4 and HiF4 beside MXFP4
        c.methods = ("rtn", "gptq", "awq", "smoothquant", "mr_gptq", "scale_opt")
        c.columns = tuple(col for col in c.columns if col[0] in (
            "W4A16 INT4 g128", "W8A8 INT8", "W4A16 NVFP4", "W4A4 NVFP4", "W4A16 HiF4"))
    elif variant == "sequential":  # sequential calibration beside whole-model calibration
        c.methods = ("gptq", "gptq/seq", "mr_gptq", "mr_gptq/seq")
        c.columns = tuple(col for col in c.columns if col[0] in ("W4A16 MXFP4", "W4A4 MXFP4"))
    elif variant == "learned":  # SpinQuant and FlatQuant on the headline columns
        c.methods = ("spinquant", "flatquant")
        c.columns = tuple(col for col in c.columns if col[0] in ("W8A8 MXFP8", "W4A4 MXFP4"))
    elif variant == "extra":  # QuaRot + GPTQ and GPTQ + pre-scale on the headline columns
        c.methods = ("quarot_gptq", "gptq_scale_opt")
        c.columns = tuple(col for col in c.columns if col[0] in (
            "W8A8 MXFP8", "W4A16 MXFP4", "W4A4 MXFP4"))
    elif variant == "kv":  # the remaining methods with the KV cache quantized
        c.methods = ("awq", "smoothquant", "quarot", "scale_opt")
        c.columns = tuple(col for col in c.columns if "KV" in col[0])
    elif variant == "tiny":  # smoke test: two cells, a few windows
        c.num_windows, c.window = 2, 64
        c.eval_seq_len, c.eval_max_tokens, c.kl_max_tokens = 64, 128, 128
        c.domains = (("stdlib", "all"),)
        c.methods = ("rtn", "gptq")
        c.columns = (("W4A4 MXFP4", "mxfp4", "mxfp4", None),)
        c.cache = "/tmp/effjax_mxfp_ptq_study_tiny.json"
        c.output = "/tmp/effjax_mxfp_ptq_study_tiny.md"
        c.plot = "/tmp/effjax_mxfp_ptq_study_tiny.png"
    elif variant:
        raise ValueError(f"unknown mxfp_ptq_study variant {variant!r}; expected '', 'core', "
                         "'modes', 'mxfp8', 'formats', 'sequential', 'learned', 'settings', "
                         "'extra', 'kv' or 'tiny'")
    return c

"""One PTQ method on SmolLM2-135M in one setting: `--config=configs/ptq.py:<setting>` with
setting one of w4a16, w8a16 (weight-only), w8a8, w4a4 (weight-activation), w4a4kv4, w8a8kv8
(weight-activation-KV), or tiny (a smoke test). 4-bit means MXFP4 and 8-bit MXFP8 E4M3 unless
`--config.w4` / `--config.w8` name other formats ("int4:128", "nvfp4", ...);
`--config.method` picks the method (`effjax.ptq.METHODS`)."""

import re

import ml_collections

SETTINGS = ("w4a16", "w8a16", "w8a8", "w4a4", "w4a4kv4", "w8a8kv8")


def get_config(variant: str = "w4a16") -> ml_collections.ConfigDict:
    tiny = variant == "tiny"
    setting = "w4a4kv4" if tiny else (variant or "w4a16")
    if setting not in SETTINGS:
        raise ValueError(f"unknown ptq setting {variant!r}; expected one of {SETTINGS} or 'tiny'")
    w, a, kv = re.fullmatch(r"w(\d)a(\d+)(?:kv(\d))?", setting).groups()
    c = ml_collections.ConfigDict()
    c.model = "smollm2-135m"
    c.setting = setting
    c.method = "gptq"
    c.w4, c.w8 = "mxfp4", "mxfp8_e4m3"
    c.weight_bits = int(w)
    c.act_bits = None if a == "16" else int(a)
    c.kv_bits = None if kv is None else int(kv)
    c.sequential = False
    c.calib_corpus, c.calib_split = "wikitext2", "valid"
    c.num_windows, c.window = 32, 512
    c.eval_corpus, c.eval_split = "wikitext2", "test"
    c.eval_seq_len, c.eval_max_tokens, c.kl_max_tokens = 512, 8192, 4096
    c.output = f"experiments/results/ptq_{setting}.md"
    if tiny:
        c.method = "gptq"
        c.num_windows, c.window = 2, 64
        c.eval_corpus, c.eval_split = "stdlib", "all"
        c.eval_seq_len, c.eval_max_tokens, c.kl_max_tokens = 64, 128, 128
        c.output = "/tmp/effjax_ptq_tiny.md"
    return c

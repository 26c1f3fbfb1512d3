"""Speculative decoding on SmolLM2-135M with quantized copies of itself as drafts.

Rules are (label, kind, options): kind "greedy" | "exact" | "typical" | "kl" (options go to
the rule's class in `effjax.decoding`). Every rule runs with every draft.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "smollm2-135m"
    # a format spec: weight-quantized copy of the target; "first:N": its first N blocks
    c.drafts = (("MXFP4 self-draft", "mxfp4"), ("first 10 of 30 blocks", "first:10"))
    c.k = 4
    kl = tuple((f"KL judge tau={t}", "kl", {"tau": t}) for t in (0.1, 0.5, 2.0))
    c.rules = (("greedy match", "greedy", {}),
               ("exact sampling T=1", "exact", {"temperature": 1.0}),
               ("typical acceptance", "typical", {}), *kl)
    # prose: WikiText-2 test paragraphs cut to prompt_tokens; arithmetic: "a + b" and "a * b"
    # questions with checkable answers
    c.prose_corpus, c.prose_split = "wikitext2", "test"
    c.prose_prompts, c.prompt_tokens = 8, 32
    c.arith_prompts, c.arith_seed = 12, 0
    c.max_new_tokens = 32
    # AutoJudge: mismatches mined on other arithmetic questions, one row per threshold
    c.judge_prompts, c.judge_seed = 32, 1
    c.judge_thresholds = (0.3, 0.6)
    c.repeats = 1  # timed runs per row (median), after one warm-up call (each rule compiles)
    c.cache = "experiments/results/speculative.json"
    c.output = "experiments/results/speculative.md"
    c.plot = "experiments/results/speculative.png"
    if variant == "tiny":  # the real loop on the real model, a few short prompts
        c.drafts = (("MXFP4 self-draft", "mxfp4"), ("first 2 blocks", "first:2"))
        c.rules = (("greedy match", "greedy", {}), ("KL judge tau=1.0", "kl", {"tau": 1.0}))
        c.prose_prompts, c.prompt_tokens, c.arith_prompts = 2, 16, 2
        c.max_new_tokens, c.repeats = 8, 1
        c.judge_prompts, c.judge_thresholds = 4, (0.5,)
        c.cache = "/tmp/effjax_speculative_tiny.json"
        c.output = "/tmp/effjax_speculative_tiny.md"
        c.plot = "/tmp/effjax_speculative_tiny.png"
    elif variant:
        raise ValueError(f"unknown speculative variant {variant!r}; expected '' or 'tiny'")
    return c

"""Speculative decoding: SmolLM2-135M with quantized copies of itself as drafts, and the
in-house arithmetic pair (the reasoning teacher verifying a one-block draft trained on the
same task).

Rules are (label, kind, options): kind "greedy" | "exact" | "typical" | "kl" (options go to
the rule's class in `effjax.decoding`). Every rule of a pair runs with every draft of it; one
AutoJudge row per threshold is added after them.
"""

import ml_collections


def _kl(taus, direction="forward"):
    name = "KL judge" if direction == "forward" else "reverse-KL judge"
    options = {} if direction == "forward" else {"direction": direction}
    return tuple((f"{name} tau={t}", "kl", {"tau": t, **options}) for t in taus)


BASE_RULES = (("greedy match", "greedy", {}),
              ("exact sampling T=1", "exact", {"temperature": 1.0}),
              ("typical acceptance", "typical", {}))


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.pairs = ("smollm2", "arith")
    s = c.smollm2 = ml_collections.ConfigDict()
    s.model = "smollm2-135m"
    # a format spec: weight-quantized copy of the target; "first:N": its first N blocks
    s.drafts = (("MXFP4 self-draft", "mxfp4"), ("first 10 of 30 blocks", "first:10"))
    s.k = 4
    s.rules = (*BASE_RULES, *_kl((0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)))
    # prose: WikiText-2 test paragraphs cut to prompt_tokens; arithmetic: "a + b" and "a * b"
    # questions with checkable answers
    s.prose_corpus, s.prose_split = "wikitext2", "test"
    s.prose_prompts, s.prompt_tokens = 8, 32
    s.arith_prompts, s.arith_seed = 12, 0
    s.max_new_tokens = 32
    # AutoJudge: mismatches mined on other arithmetic questions, one row per threshold
    s.judge_prompts, s.judge_seed = 32, 1
    s.judge_thresholds = (0.3, 0.6)
    a = c.arith = ml_collections.ConfigDict()
    # "draft": the shipped one-block draft; a format spec: a weight-quantized teacher copy
    a.drafts = (("1-block draft", "draft"), ("INT2 g32 self-draft", "int2:32@asym"))
    a.k = 4
    a.rules = (*BASE_RULES, *_kl((0.01, 0.03, 0.1, 0.3, 0.5, 0.7, 1.0, 1.5, 3.0, 10.0)),
               *_kl((0.3, 3.0), "reverse"))
    # in-domain: test problems at `levels`; domain shift: test problems at `shift_levels`
    # (longer chains than any mined judge saw)
    a.problems, a.levels, a.shift_levels, a.seed = 256, (1, 2), (3,), 0
    a.max_new_tokens = 48  # a level-3 solution takes at most 38 tokens
    # AutoJudge: mismatches mined on training problems at `levels`
    a.judge_problems, a.judge_seed = 256, 1
    a.judge_thresholds = (0.2, 0.4, 0.6, 0.8)
    c.repeats = 1  # timed runs per row (median), after one untimed call (which compiles)
    c.cache = "experiments/results/speculative.json"
    c.output = "experiments/results/speculative.md"
    c.plot = "experiments/results/speculative.png"
    if variant == "tiny":  # the real loops on the real models, a few short prompts
        s.drafts = (("MXFP4 self-draft", "mxfp4"), ("first 2 blocks", "first:2"))
        s.rules = (("greedy match", "greedy", {}), ("KL judge tau=1.0", "kl", {"tau": 1.0}))
        s.prose_prompts, s.prompt_tokens, s.arith_prompts = 2, 16, 2
        s.max_new_tokens = 8
        s.judge_prompts, s.judge_thresholds = 4, (0.5,)
        a.drafts = (("1-block draft", "draft"),)
        a.rules = s.rules
        a.problems, a.judge_problems, a.judge_thresholds = 8, 8, (0.5,)
        c.cache = "/tmp/effjax_speculative_tiny.json"
        c.output = "/tmp/effjax_speculative_tiny.md"
        c.plot = "/tmp/effjax_speculative_tiny.png"
    elif variant:
        raise ValueError(f"unknown speculative variant {variant!r}; expected '' or 'tiny'")
    return c

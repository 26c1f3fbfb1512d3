"""QuantClaw on SmolLM2-135M: bf16 / MXFP8 / MXFP4 variants, a mixed agent workload."""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.model = "smollm2-135m"
    c.tiers = (("4bit", "mxfp4"), ("8bit", "mxfp8_e4m3"), ("16bit", "bf16"))
    # requests per task type: evaluated, and (other requests) for sensitivity profiling
    c.requests, c.profile_requests = 20, 20
    c.max_new_tokens = 24
    c.tolerance = 0.01  # quality drop (of 1) the profiled policy may accept per task
    c.z = 1.0  # standard errors of the profiled drop added before comparing with tolerance
    c.max_escalations = 1  # retries at a more precise tier (PrecisionRouter's default)
    c.embedding_detector = True  # MiniLM prototypes behind the rules
    c.random_seed = 0
    c.cache = "experiments/results/quantclaw.json"
    c.output = "experiments/results/quantclaw.md"
    c.compute = True
    if variant == "tiny":
        c.requests, c.profile_requests, c.max_new_tokens = 2, 1, 6
        c.embedding_detector = False
        c.cache = "/tmp/effjax_quantclaw_tiny.json"
        c.output = "/tmp/effjax_quantclaw_tiny.md"
    return c

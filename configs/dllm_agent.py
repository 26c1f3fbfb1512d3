"""Diffusion vs autoregressive agents on the tool-use environment (effjax.agents.tools).

Agents are `effjax.agents.AgentTraining` runs (cached in effjax/data/zoo, trained when
missing); rows pair an agent with a decoder. Samplers are `DiffusionSampling` options
(gen_length is always the action canvas).
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.test_seed, c.test_tasks = 1, 200
    c.batch_size, c.max_rounds = 50, 6
    c.latency_tasks = 50  # the first tasks again, one episode at a time
    c.train = ml_collections.ConfigDict(dict(ar_steps=1500, dllm_steps=3000, batch_size=16,
                                             learning_rate=2e-3, call_focus=0.25, seed=0))
    c.zoo = ""  # "" = effjax.zoo (shipped weights, or retrained ones in $EFFJAX_CACHE)
    c.train_missing = True
    # (label, agent, sampler); agent in {"ar", "dllm", "dllm_unaligned", "dllm_nocall"}
    c.rows = (
        ("AR (KV cache, greedy)", "ar", {}),
        ("dLLM one token/step", "dllm", {"block_length": 36, "steps": 36}),
        ("dLLM 2 tokens/step", "dllm", {"block_length": 36, "steps": 18}),
        ("dLLM threshold 0.9", "dllm", {"block_length": 36, "threshold": 0.9}),
        ("dLLM threshold 0.9 + prefix cache", "dllm",
         {"block_length": 36, "threshold": 0.9, "cache": "prefix"}),
        ("dLLM threshold 0.7 + prefix cache", "dllm",
         {"block_length": 36, "threshold": 0.7, "cache": "prefix"}),
        ("dLLM unaligned masks, threshold 0.9", "dllm_unaligned",
         {"block_length": 36, "threshold": 0.9}),
        ("dLLM no tool-call data, threshold 0.9", "dllm_nocall",
         {"block_length": 36, "threshold": 0.9}),
    )
    c.fast_row = "dLLM threshold 0.9 + prefix cache"  # the diffusion agent of the speed claim
    c.cache = "experiments/results/dllm_agent.json"
    c.output = "experiments/results/dllm_agent.md"
    c.plot = "experiments/results/dllm_agent.png"
    c.compute = True  # False: write the report from the cache only
    if variant == "tiny":  # the real loop with agents trained for a few steps
        c.test_tasks, c.batch_size, c.max_rounds, c.latency_tasks = 4, 4, 2, 2
        c.train.ar_steps, c.train.dllm_steps, c.train.batch_size = 2, 2, 2
        c.rows = (c.rows[0], c.rows[4], c.rows[6])
        c.fast_row = c.rows[1][0]
        c.zoo = "/tmp/effjax_dllm_tiny/zoo"
        c.cache = "/tmp/effjax_dllm_tiny/dllm_agent.json"
        c.output = "/tmp/effjax_dllm_tiny/dllm_agent.md"
        c.plot = "/tmp/effjax_dllm_tiny/dllm_agent.png"
    return c

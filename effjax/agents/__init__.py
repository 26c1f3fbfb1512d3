"""Agents: the tool-use environment, multi-turn episodes with aligned span masks, the
autoregressive and diffusion policies and their training, QuantClaw precision routing.

Contents: Tool-use agents: `tools` (a per-task knowledge base `kb`, `calc`, `date`; the JSON
call schema `{"tool":"kb","q":"boss ana"}` / `{"answer":...}` and `check_action`, which names
malformed kinds: not JSON, schema, unknown tool, bad arguments; `tasks(seed, n, split=)`:
multi-hop chains, chain + calculator, team/city intersections, dates, 1-3 calls, and `solve`'s
reference trajectories); `episodes` (context and action spans, `span_attention_mask`:
block-causal over turns, a context never sees its own turn's action, or bidirectional;
`training_batch` with tool-call-focused rows; `ARPolicy` (KV-cached greedy) and
`DiffusionPolicy` (the sampler with the span mask); `run_episodes`: malformed calls are counted
and answered, never a crash); `AgentTraining` / `train_agent` / `load_agent` (AR cross-entropy
or the LLaDA objective, optax; the study's agents shipped in `effjax/data/zoo/agent_*`).
QuantClaw precision routing. `RuleDetector` (weighted patterns, score threshold and margin over
the runner-up), `EmbeddingDetector` (task prototypes through any encoder, e.g. MiniLM: 0.5 best
+ 0.5 top-3 mean similarity + keyword bonus), `TaskDetector` (rules, then embeddings, then a
default; decisions cached); `Policy` (task -> tier, one tier up when the detector is unsure,
`escalate`); validators (`parse_tool_call`, `has_number`); `build_variants(params)` -> bfloat16
/ MXFP8 / MXFP4 `Variant`s; `PrecisionRouter(variants, config, tokenizer).generate(prompt)` ->
`RoutedOutput` (text, tier, tiers tried after failed validation, weight bytes moved, latency,
routing time); `profile_sensitivity(router, tasks, tolerance)` -> the task -> tier map that
keeps each task's quality within tolerance of the top tier.
"""

from effjax.agents import quantclaw
from effjax.agents.episodes import (
    ACTION_LEN,
    FILL_ID,
    MASK_ID,
    ARPolicy,
    Context,
    DiffusionPolicy,
    EpisodeResult,
    question_context,
    run_episodes,
    span_attention_mask,
    training_batch,
    trajectory_context,
)
from effjax.agents.quantclaw import (
    DEFAULT_POLICY,
    DEFAULT_PROTOTYPES,
    DEFAULT_RULES,
    TIERS,
    VALIDATORS,
    Detection,
    EmbeddingDetector,
    Policy,
    PrecisionRouter,
    RoutedOutput,
    RuleDetector,
    Sensitivity,
    TaskDetector,
    Variant,
    build_variants,
    cheapest_tier,
    has_number,
    parse_tool_call,
    profile_sensitivity,
    weight_bytes,
)
from effjax.agents.tools import (
    KINDS,
    MALFORMED,
    TOOLS,
    Action,
    KnowledgeBase,
    Task,
    check_action,
    format_answer,
    format_call,
    make_task,
    run_tool,
    solve,
    tasks,
)
from effjax.agents.train import (
    AGENT_CONFIG,
    AgentTraining,
    agent_loss,
    ar_loss,
    load_agent,
    train_agent,
)

__all__ = ["ACTION_LEN", "AGENT_CONFIG", "DEFAULT_POLICY", "DEFAULT_PROTOTYPES", "DEFAULT_RULES",
           "FILL_ID", "KINDS", "MALFORMED", "MASK_ID", "TIERS", "TOOLS", "VALIDATORS", "ARPolicy",
           "Action", "AgentTraining", "Context", "Detection", "DiffusionPolicy",
           "EmbeddingDetector", "EpisodeResult", "KnowledgeBase", "Policy", "PrecisionRouter",
           "RoutedOutput", "RuleDetector", "Sensitivity", "Task", "TaskDetector", "Variant",
           "agent_loss", "ar_loss", "build_variants", "check_action", "cheapest_tier",
           "format_answer", "format_call", "has_number", "load_agent", "make_task",
           "parse_tool_call", "profile_sensitivity", "quantclaw", "question_context",
           "run_episodes", "run_tool", "solve", "span_attention_mask", "tasks", "train_agent",
           "training_batch", "trajectory_context", "weight_bytes"]

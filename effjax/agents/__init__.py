"""Agents: the tool-use environment, multi-turn episodes with aligned span masks, the
autoregressive and diffusion policies and their training, QuantClaw precision routing."""

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

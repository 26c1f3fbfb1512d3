"""Agents: QuantClaw precision routing."""

from effjax.agents import quantclaw
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
    has_number,
    parse_tool_call,
    profile_sensitivity,
    weight_bytes,
)

__all__ = ["DEFAULT_POLICY", "DEFAULT_PROTOTYPES", "DEFAULT_RULES", "TIERS", "VALIDATORS",
           "Detection", "EmbeddingDetector", "Policy", "PrecisionRouter", "RoutedOutput",
           "RuleDetector", "Sensitivity", "TaskDetector", "Variant", "build_variants", "has_number",
           "parse_tool_call", "profile_sensitivity", "quantclaw", "weight_bytes"]

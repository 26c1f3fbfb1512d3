"""Decoding: autoregressive generation and sampling, speculative decoding and its rules."""

from effjax.decoding.generate import SamplingConfig, generate, sample_logits
from effjax.decoding.speculative import (
    AcceptanceRule,
    ExactSampling,
    GreedyMatch,
    KLJudge,
    SpeculativeOutput,
    TypicalAcceptance,
    Verdict,
    early_exit_draft,
    kl_divergence,
    speculative_generate,
)

__all__ = ["AcceptanceRule", "ExactSampling", "GreedyMatch", "KLJudge", "SamplingConfig",
           "SpeculativeOutput", "TypicalAcceptance", "Verdict", "early_exit_draft", "generate",
           "kl_divergence", "sample_logits", "speculative_generate"]

"""Decoding: autoregressive generation and sampling, speculative decoding and its rules."""

from effjax.decoding.generate import SamplingConfig, generate, sample_logits
from effjax.decoding.speculative import (
    AcceptanceRule,
    AutoJudge,
    ExactSampling,
    GreedyMatch,
    KLJudge,
    Mismatches,
    SpeculativeOutput,
    TypicalAcceptance,
    Verdict,
    early_exit_draft,
    kl_divergence,
    mine_mismatches,
    speculative_generate,
    train_judge,
)

__all__ = ["AcceptanceRule", "AutoJudge", "ExactSampling", "GreedyMatch", "KLJudge", "Mismatches",
           "SamplingConfig", "SpeculativeOutput", "TypicalAcceptance", "Verdict",
           "early_exit_draft", "generate", "kl_divergence", "mine_mismatches", "sample_logits",
           "speculative_generate", "train_judge"]

"""Decoding: autoregressive generation and sampling, speculative decoding and its rules, the
masked-diffusion sampler."""

from effjax.decoding.diffusion import (
    CACHES,
    CONFIDENCES,
    DiffusionSampling,
    confidence_scores,
    diffusion_generate,
    transfer_schedule,
)
from effjax.decoding.diffusion import sample as diffusion_sample
from effjax.decoding.generate import SamplingConfig, generate, sample_logits, vlm_generate
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

__all__ = ["CACHES", "CONFIDENCES", "AcceptanceRule", "AutoJudge", "DiffusionSampling",
           "ExactSampling", "GreedyMatch", "KLJudge", "Mismatches", "SamplingConfig",
           "SpeculativeOutput", "TypicalAcceptance", "Verdict", "confidence_scores",
           "diffusion_generate", "diffusion_sample", "early_exit_draft", "generate",
           "kl_divergence", "mine_mismatches", "sample_logits", "speculative_generate",
           "train_judge", "transfer_schedule", "vlm_generate"]

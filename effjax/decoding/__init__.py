"""Decoding: autoregressive generation and sampling, speculative decoding and its rules, the
masked-diffusion sampler.

Contents: jitted greedy and temperature / top-k / top-p generation with a static-shape KV cache,
batched prompts of different lengths (left padding, masked, positions per prompt); speculative
decoding (`speculative_generate`: draft proposes k tokens from its cache, the target scores them
in one forward, both caches rolled back per row by invalidating rejected slots, one jitted
`lax.while_loop`) with pluggable acceptance rules `ExactSampling` (lossless), `GreedyMatch`,
`TypicalAcceptance`, `KLJudge` (training-free, forward or reverse KL, confidence guard) and
`AutoJudge` (logistic regression on the target's and draft's hidden states, labels mined by
replaying each mismatch: `mine_mismatches`, `train_judge`); a quantized copy of the target is a
self-draft (`draft_recipe`), and so are its first blocks (`early_exit_draft`); the
masked-diffusion sampler (`DiffusionSampling`, `diffusion_generate`, the jitted
`diffusion_sample`: semi-autoregressive blocks, a fixed reveal schedule or confidence-threshold
parallel decoding (at least one token a step), max-probability / top-2 margin / negative-entropy
confidence, Gumbel sampling at a temperature, prefix or dual KV caches per block,
classifier-free guidance, a structured attention mask; `lax` loops, no recompilation across
calls of one shape; it returns a `Sampled` whose `order` says which forward pass revealed each
token, so the canvas can be replayed pass by pass).
"""

from effjax.decoding.autojudge import Mismatches, mine_mismatches, train_judge
from effjax.decoding.diffusion import (
    CACHES,
    CONFIDENCES,
    DiffusionSampling,
    Sampled,
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
    SpeculativeOutput,
    TypicalAcceptance,
    Verdict,
    early_exit_draft,
    kl_divergence,
    speculative_generate,
)

__all__ = ["CACHES", "CONFIDENCES", "AcceptanceRule", "AutoJudge", "DiffusionSampling",
           "ExactSampling", "GreedyMatch", "KLJudge", "Mismatches", "Sampled", "SamplingConfig",
           "SpeculativeOutput", "TypicalAcceptance", "Verdict", "confidence_scores",
           "diffusion_generate", "diffusion_sample", "early_exit_draft", "generate",
           "kl_divergence", "mine_mismatches", "sample_logits", "speculative_generate",
           "train_judge", "transfer_schedule", "vlm_generate"]

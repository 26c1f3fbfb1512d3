"""Decoding: autoregressive generation and sampling."""

from effjax.decoding.generate import SamplingConfig, generate, sample_logits

__all__ = ["SamplingConfig", "generate", "sample_logits"]

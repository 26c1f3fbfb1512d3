"""Evaluation: perplexity, token KL, tensor statistics, results tables.

Contents: sliding-window perplexity with a progress bar (and bits per byte of the scored text,
comparable across tokenizers); `token_kl(ref, lm, texts)`: mean token
KL divergence of a model's next-token distribution from a reference's, and `kl_and_perplexity`
(both from one pass); tensor statistics: `tensor_stats(x, formats, kind)` (dynamic range in
binades, kurtosis, crest factor per block of 32, each format's quantization SNR with float64
sums), `model_tensors` / `model_tensor_stats` (every kernel, every distinct projection input,
the cached keys and values after RoPE, captured by one jitted forward), `format_wins`
(narrow-range vs high-variance split, wins per format); Markdown tables and atomic writes for
reports; `paired_bootstrap` (the mean paired difference of two arms on the same windows or
items, with its 95% bootstrap interval).
"""

from effjax.eval.kl import Comparison, kl_and_perplexity, token_kl
from effjax.eval.perplexity import PerplexityResult, perplexity, sliding_windows
from effjax.eval.report import markdown_table, write_atomic
from effjax.eval.stats import paired_bootstrap
from effjax.eval.tensor_stats import (
    TENSOR_KINDS,
    TensorStats,
    format_wins,
    model_tensor_stats,
    model_tensors,
    quantization_snr,
    tensor_stats,
)

__all__ = ["TENSOR_KINDS", "Comparison", "PerplexityResult", "TensorStats", "format_wins",
           "kl_and_perplexity", "markdown_table", "model_tensor_stats", "model_tensors",
           "paired_bootstrap", "perplexity", "quantization_snr", "sliding_windows",
           "tensor_stats", "token_kl", "write_atomic"]

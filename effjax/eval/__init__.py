"""Evaluation: perplexity, token KL, tensor statistics, results tables."""

from effjax.eval.kl import Comparison, kl_and_perplexity, token_kl
from effjax.eval.perplexity import PerplexityResult, perplexity, sliding_windows
from effjax.eval.report import markdown_table, write_atomic
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
           "perplexity", "quantization_snr", "sliding_windows", "tensor_stats", "token_kl",
           "write_atomic"]

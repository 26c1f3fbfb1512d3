"""Evaluation: perplexity, results tables."""

from effjax.eval.kl import token_kl
from effjax.eval.perplexity import PerplexityResult, perplexity, sliding_windows
from effjax.eval.report import markdown_table, write_atomic

__all__ = ["PerplexityResult", "markdown_table", "perplexity", "sliding_windows", "token_kl",
           "write_atomic"]

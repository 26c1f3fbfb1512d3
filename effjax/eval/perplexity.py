"""Sliding-window perplexity of a parameter pytree on a tokenized corpus."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int
from tqdm.auto import tqdm

from effjax.data.corpora import Corpus
from effjax.models.config import LMConfig
from effjax.models.decoder import Params, forward, stack_layers
from effjax.models.records import LM, check_tokens, prefix_token
from effjax.quant.recipe import Recipe


@dataclasses.dataclass(frozen=True)
class PerplexityResult:
    """Attributes:
    perplexity: exp(mean negative log-likelihood).
    nll: mean negative log-likelihood per token (nats).
    num_tokens: scored tokens (every token but the first, each exactly once; every token
      when the tokenizer has a prefix token).
    num_windows: windows evaluated.
    seq_len, stride: the window geometry.
    corpus: the corpus name ("text" for raw strings).
    num_bytes: UTF-8 bytes of the scored tokens' decoded text, or None when the tokenizer
      cannot decode.
    """

    perplexity: float
    nll: float
    num_tokens: int
    num_windows: int
    seq_len: int
    stride: int
    corpus: str
    num_bytes: int | None = None

    @property
    def bits_per_byte(self) -> float | None:
        """Total negative log-likelihood in bits per UTF-8 byte of the scored text: unlike
        perplexity, comparable between models with different tokenizers."""
        if not self.num_bytes:
            return None
        return self.nll * self.num_tokens / math.log(2) / self.num_bytes


def sliding_windows(n: int, seq_len: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows (begin, end, first_target) that score tokens 1..n-1 exactly once.

    The first window is [0, seq_len) and scores tokens 1..seq_len-1. Each later window
    scores the next min(stride, seq_len - 1) tokens and reaches back to a full seq_len
    tokens, so every scored token has at least seq_len - stride tokens of context (and
    always at least one).

    Args:
      n: number of tokens (>= 2).
      seq_len: window length (>= 2).
      stride: new tokens scored per window (1 <= stride <= seq_len).

    Returns:
      The list of (begin, end, first_target): window [begin, end) scores [first_target, end).
    """
    if n < 2:
        raise ValueError(f"need at least 2 tokens to score, got {n}")
    if seq_len < 2 or not 1 <= stride <= seq_len:
        raise ValueError(f"need seq_len >= 2 and stride in [1, {seq_len=}], got {stride=}")
    step = min(stride, seq_len - 1)
    end = min(seq_len, n)
    windows = [(0, end, 1)]
    while end < n:
        new_end = min(end + step, n)
        windows.append((new_end - seq_len, new_end, end))
        end = new_end
    return windows


@functools.partial(jax.jit, static_argnames=("config", "dtype", "recipe"))
def _window_nll(
    params: Params,
    inputs: Int[Array, "b t"],
    targets: Int[Array, "b t"],
    weights: Float[Array, "b t"],
    config: LMConfig,
    dtype,
    recipe: Recipe | None,
) -> Float[Array, " b"]:
    logits, _ = forward(params, inputs, config=config, dtype=dtype, recipe=recipe)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    return jnp.sum(nll * weights, axis=-1)


def perplexity(
    lm: LM,
    texts: str | Sequence[str] | Corpus,
    *,
    seq_len: int = 1024,
    stride: int = 512,
    batch_size: int = 4,
    params: Params | None = None,
    dtype=jnp.float32,
    max_tokens: int | None = None,
    progress: bool = True,
    recipe: Recipe | None = None,
) -> PerplexityResult:
    """Sliding-window perplexity of `params` (default `lm.params`) on `texts`.

    Documents are joined with blank lines and tokenized once; windows of `seq_len`
    tokens start every `stride` tokens and each token is scored once (see
    `sliding_windows`). Where the tokenizer puts a prefix token before text
    (`effjax.models.prefix_token`: Gemma's `<bos>`), every window starts with it in
    place of its first context token, and the text's first token is scored too.

    Args:
      lm: the model (config and tokenizer).
      texts: a string, a list of documents, or a `Corpus`.
      seq_len: window length (<= the model's context length).
      stride: step between windows.
      batch_size: windows per forward.
      params: the parameter pytree to score (default `lm.params`).
      dtype: compute dtype.
      max_tokens: keep only the first max_tokens tokens of the corpus.
      progress: show a progress bar.
      recipe: activation / KV-cache formats (`effjax.quant.Recipe`) for quantized params.

    Returns:
      A `PerplexityResult`.
    """
    if lm.tokenizer is None:
        raise ValueError("perplexity needs lm.tokenizer; this model was loaded without one")
    if seq_len > lm.config.max_position_embeddings:
        raise ValueError(f"seq_len {seq_len} is past the context length "
                         f"{lm.config.max_position_embeddings=}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    corpus_name = texts.name if isinstance(texts, Corpus) else "text"
    if isinstance(texts, Corpus):
        docs = texts.texts
    else:
        docs = [texts] if isinstance(texts, str) else texts
    ids = np.asarray(lm.tokenizer("\n\n".join(docs), add_special_tokens=False)["input_ids"])
    if max_tokens is not None:
        ids = ids[:max_tokens]
    prefix = prefix_token(lm.tokenizer)
    if prefix is not None:  # every window starts with it; the text's first token is scored
        ids = np.concatenate([np.asarray([prefix], ids.dtype), ids])
    windows = sliding_windows(len(ids), seq_len, stride)
    width = min(seq_len, len(ids))
    padded = -(-len(windows) // batch_size) * batch_size
    inputs = np.zeros((padded, width), np.int32)
    targets = np.zeros((padded, width), np.int32)
    weights = np.zeros((padded, width), np.float32)
    for w, (begin, end, first) in enumerate(windows):
        inputs[w, : end - begin] = ids[begin:end]
        if prefix is not None:
            inputs[w, 0] = prefix
        targets[w, : end - begin - 1] = ids[begin + 1 : end]
        # Position i predicts token begin + i + 1; score it when that lies in [first, end).
        weights[w, max(first - begin - 1, 0) : end - begin - 1] = 1.0
    check_tokens(inputs, lm.config)
    # Stacked once, so that every window's forward scans the layers without copying them.
    params = stack_layers(lm.params if params is None else params, config=lm.config,
                          recipe=recipe)
    total = 0.0
    for start in tqdm(range(0, padded, batch_size), desc=f"perplexity ({corpus_name})",
                      disable=not progress, unit="batch"):
        sl = slice(start, start + batch_size)
        sums = _window_nll(params, inputs[sl], targets[sl], weights[sl], lm.config, dtype, recipe)
        total += float(np.sum(np.asarray(sums, np.float64)))
    count = int(weights.sum())
    nll = total / count
    scored = ids[len(ids) - count:]  # the text's tokens after the first, or all with a prefix
    num_bytes = (len(lm.tokenizer.decode(scored.tolist()).encode("utf-8"))
                 if hasattr(lm.tokenizer, "decode") else None)
    return PerplexityResult(perplexity=math.exp(nll), nll=nll, num_tokens=count,
                            num_windows=len(windows), seq_len=seq_len, stride=stride,
                            corpus=corpus_name, num_bytes=num_bytes)

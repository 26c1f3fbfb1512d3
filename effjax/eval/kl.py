"""Mean token-level KL divergence of a model's next-token distribution from a reference's:
a more sensitive measure of quantization damage than perplexity."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int
from tqdm.auto import tqdm

from effjax.models.config import LMConfig
from effjax.models.decoder import Params, forward
from effjax.models.records import LM, check_tokens, token_windows
from effjax.quant.recipe import Recipe


class Comparison(NamedTuple):
    """What `kl_and_perplexity` measures.

    Attributes:
      kl: mean over every position of KL(p_ref || p_lm) of the next-token distributions,
        in nats.
      perplexity: `lm`'s perplexity on the same windows (each window's tokens after its
        first, predicted from the window alone).
      tokens: positions the KL averages over.
    """

    kl: float
    perplexity: float
    tokens: int


@functools.partial(jax.jit, static_argnames=("ref_config", "config", "recipe"))
def _sums(ref_params: Params, params: Params, tokens: Int[Array, "b t"],
          ref_config: LMConfig, config: LMConfig,
          recipe: Recipe | None) -> tuple[Float[Array, ""], Float[Array, ""]]:
    ref = jax.nn.log_softmax(forward(ref_params, tokens, config=ref_config)[0], axis=-1)
    got = jax.nn.log_softmax(forward(params, tokens, config=config, recipe=recipe)[0], axis=-1)
    nll = -jnp.take_along_axis(got[:, :-1], tokens[:, 1:, None], axis=-1)
    return jnp.sum(jnp.exp(ref) * (ref - got)), jnp.sum(nll)


def kl_and_perplexity(ref: LM, lm: LM, texts: str | Sequence[str], *,
                      recipe: Recipe | None = None, seq_len: int = 512, max_tokens: int = 4096,
                      batch_size: int = 2, progress: bool = True) -> Comparison:
    """The mean token KL of `lm` from `ref` and `lm`'s perplexity, from one pass.

    Args:
      ref: the reference (float) model; its tokenizer splits the text.
      lm: the model compared (its own config: e.g. an untied head after QuaRot).
      texts: a string or documents (joined with blank lines).
      recipe: activation / KV-cache formats `lm` runs with.
      seq_len: tokens per window (windows do not overlap).
      max_tokens: tokens used (whole windows of the first max_tokens).
      batch_size: windows per forward.
      progress: show a progress bar.

    Returns:
      A `Comparison`.
    """
    if ref.tokenizer is None:
        raise ValueError("kl_and_perplexity needs ref.tokenizer; the reference was loaded "
                         "without one")
    if max_tokens < seq_len:
        raise ValueError(f"max_tokens={max_tokens} is less than one window of {seq_len=}")
    windows = token_windows(ref, texts, window=seq_len, max_windows=max_tokens // seq_len)
    n = len(windows)
    check_tokens(windows, lm.config)
    kl = nll = 0.0
    for s in tqdm(range(0, n, batch_size), desc="token KL", disable=not progress):
        kl_sum, nll_sum = _sums(ref.params, lm.params, jnp.asarray(windows[s:s + batch_size]),
                                ref.config, lm.config, recipe)
        kl, nll = kl + float(kl_sum), nll + float(nll_sum)
    return Comparison(kl=kl / windows.size, perplexity=math.exp(nll / (n * (seq_len - 1))),
                      tokens=int(windows.size))


def token_kl(ref: LM, lm: LM, texts: str | Sequence[str], *, recipe: Recipe | None = None,
             seq_len: int = 512, max_tokens: int = 4096, batch_size: int = 2,
             progress: bool = True) -> float:
    """Mean over tokens of KL(p_ref || p_lm) of the next-token distributions, in nats
    (`kl_and_perplexity(...).kl`; the same arguments)."""
    return kl_and_perplexity(ref, lm, texts, recipe=recipe, seq_len=seq_len,
                             max_tokens=max_tokens, batch_size=batch_size,
                             progress=progress).kl

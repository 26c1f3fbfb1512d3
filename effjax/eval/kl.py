"""Mean token-level KL divergence of a model's next-token distribution from a reference's:
a more sensitive measure of quantization damage than perplexity."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int
from tqdm.auto import tqdm

from effjax.models.api import LM, check_tokens
from effjax.models.config import LMConfig
from effjax.models.decoder import Params, forward
from effjax.quant.recipe import Recipe


@functools.partial(jax.jit, static_argnames=("ref_config", "config", "recipe"))
def _kl_sum(ref_params: Params, params: Params, tokens: Int[Array, "b t"],
            ref_config: LMConfig, config: LMConfig,
            recipe: Recipe | None) -> Float[Array, ""]:
    ref = jax.nn.log_softmax(forward(ref_params, tokens, config=ref_config)[0], axis=-1)
    got = jax.nn.log_softmax(forward(params, tokens, config=config, recipe=recipe)[0], axis=-1)
    return jnp.sum(jnp.exp(ref) * (ref - got))


def token_kl(ref: LM, lm: LM, texts: str | Sequence[str], *, recipe: Recipe | None = None,
             seq_len: int = 512, max_tokens: int = 4096, batch_size: int = 2,
             progress: bool = True) -> float:
    """Mean over tokens of KL(p_ref || p_lm) of the next-token distributions, in nats.

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
      The mean KL over every position of every window.
    """
    if ref.tokenizer is None:
        raise ValueError("token_kl needs ref.tokenizer; the reference was loaded without one")
    docs = [texts] if isinstance(texts, str) else list(texts)
    ids = np.asarray(ref.tokenizer("\n\n".join(docs), add_special_tokens=False)["input_ids"])
    n = min(len(ids), max_tokens) // seq_len
    if n < 1:
        raise ValueError(f"the text has {len(ids)} tokens (max_tokens={max_tokens}), fewer "
                         f"than one window of {seq_len}")
    windows = ids[:n * seq_len].reshape(n, seq_len).astype(np.int32)
    check_tokens(windows, lm.config)
    total = 0.0
    for s in tqdm(range(0, n, batch_size), desc="token KL", disable=not progress):
        total += float(_kl_sum(ref.params, lm.params, jnp.asarray(windows[s:s + batch_size]),
                               ref.config, lm.config, recipe))
    return total / windows.size

"""The records every loader returns: `LM`, `VLM` and `DiffusionLM`.

Each holds a model's parameters, config, tokenizer (or None), where it came from and any
extras the loader found (a training run's info, ...): one shape for every loader, so a
caller never unpacks a tuple in the loader's private order.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from effjax.models.config import LMConfig
from effjax.models.decoder import Params, check_token_ids, forward
from effjax.quant.recipe import Recipe

if TYPE_CHECKING:
    from effjax.models.vlm import VLMConfig


def check_tokens(tokens: Any, config: LMConfig) -> np.ndarray | jax.Array:
    """Validates token ids against the model: 2-D integers inside the vocabulary and context.

    Args:
      tokens: (batch, seq) token ids; traced arrays are only checked for shape and dtype.
      config: the model's config.

    Returns:
      The tokens as int32.

    Raises:
      ValueError: tokens not 2-D integers, longer than the context, or (when concrete) ids
        outside [0, vocab) (`effjax.models.decoder.check_token_ids`).
    """
    if not isinstance(tokens, jax.core.Tracer):
        tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be 2-D (batch, seq), got shape {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be integers, got dtype {tokens.dtype}")
    if tokens.shape[1] > config.max_position_embeddings:
        raise ValueError(f"sequence length {tokens.shape[1]} is past the context length "
                         f"{config.max_position_embeddings=}")
    check_token_ids(tokens, config.vocab_size)
    return tokens.astype(jnp.int32)


def prefix_token(tokenizer: Any) -> int | None:
    """The token a tokenizer puts before every text by default (Gemma's `<bos>`), or None.

    Models trained with such a prefix are far off their distribution without it (Gemma 3
    270M: WikiText-2 perplexity 144 without, 57 with), so the evaluators and calibration
    start every window with it.

    Args:
      tokenizer: a `transformers` tokenizer.

    Returns:
      The prefix id, or None when encoding adds nothing before the text (SmolLM2).
    """
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    extra = len(full) - len(plain)
    if extra == 1 and full[1:] == plain:
        return int(full[0])
    return None


def token_windows(lm: LM, texts: str | Sequence[str], *, window: int,
                  max_windows: int) -> Int[np.ndarray, "n window"]:
    """Non-overlapping windows of the joined texts' tokens, each led by `prefix_token`.

    Args:
      lm: the model whose tokenizer splits the text.
      texts: a string or documents (joined with blank lines).
      window: tokens per window, the prefix included (>= 2).
      max_windows: keep at most this many windows (>= 1).

    Returns:
      int32 (n, window) with 1 <= n <= max_windows: the text's first tokens in order.

    Raises:
      ValueError: no tokenizer, bad sizes, or fewer tokens than one window.
    """
    if lm.tokenizer is None:
        raise ValueError("lm.tokenizer is None: this model was loaded without a tokenizer")
    if window < 2 or max_windows < 1:
        raise ValueError(f"need window >= 2 and max_windows >= 1, got {window=}, "
                         f"{max_windows=}")
    docs = [texts] if isinstance(texts, str) else list(texts)
    ids = np.asarray(lm.tokenizer("\n\n".join(docs), add_special_tokens=False)["input_ids"],
                     np.int32)
    prefix = prefix_token(lm.tokenizer)
    body = window - (prefix is not None)
    n = min(max_windows, len(ids) // body)
    if n < 1:
        raise ValueError(f"the text has {len(ids)} tokens, fewer than one window of {body}"
                         + (" after the prefix token" if prefix is not None else ""))
    rows = ids[:n * body].reshape(n, body)
    if prefix is not None:
        rows = np.concatenate([np.full((n, 1), prefix, np.int32), rows], axis=1)
    return rows


@functools.partial(jax.jit, static_argnames=("config", "dtype", "recipe"))
def _logits(params, tokens, config, dtype, recipe):
    return forward(params, tokens, config=config, dtype=dtype, recipe=recipe)[0]


@dataclasses.dataclass(frozen=True)
class LM:
    """A loaded decoder language model.

    Attributes:
      config: the `LMConfig`.
      params: the float parameter pytree (replace it with a quantized one to evaluate that).
      tokenizer: a `transformers` tokenizer, or None when the checkpoint has none.
      source: where the model was loaded from.
      extras: what else the loader read (e.g. {"info": the training run's info.json}).
    """

    config: LMConfig
    params: Params
    tokenizer: Any
    source: str
    extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def apply(
        self, params: Params, tokens: Int[Array, "b t"], *, dtype=jnp.float32,
        recipe: Recipe | None = None,
    ) -> Float[Array, "b t v"]:
        """Logits of `tokens` under `params` (jitted, inputs checked).

        Args:
          params: a parameter pytree for this model (e.g. `self.params`).
          tokens: int (batch, seq) token ids.
          dtype: compute dtype, float32 or bfloat16.
          recipe: activation / KV-cache formats (`effjax.quant.Recipe`) for quantized params.

        Returns:
          float32 logits (batch, seq, vocab).
        """
        return _logits(params, check_tokens(tokens, self.config), self.config, dtype, recipe)




@dataclasses.dataclass(frozen=True)
class DiffusionLM(LM):
    """A loaded masked-diffusion LM: an `LM` (the same decoder, run bidirectionally by
    `effjax.models.bidirectional_forward`) and its mask token.

    Attributes:
      mask_id: the [MASK] token id noised positions hold.
    """

    mask_id: int = dataclasses.field(kw_only=True)

    def __post_init__(self):
        if not 0 <= self.mask_id < self.config.vocab_size:
            raise ValueError(f"mask_id must be a token id in [0, {self.config.vocab_size}), "
                             f"got {self.mask_id}")


@dataclasses.dataclass(frozen=True)
class VLM:
    """A loaded vision-language model.

    Attributes:
      config: the `VLMConfig`.
      params: {"vision": ..., "lm": ...}.
      tokenizer: a tokenizer, or None.
      source: where the model was loaded from.
      extras: what else the loader read.
    """

    config: VLMConfig
    params: Params
    tokenizer: Any
    source: str
    extras: Mapping[str, Any] = dataclasses.field(default_factory=dict)

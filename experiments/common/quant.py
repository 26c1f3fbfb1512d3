"""The studies' quantization plumbing: recipes from format specs, a PTQ run from a config
row, perplexity and KL from one pass."""

from __future__ import annotations

from collections.abc import Sequence

import effjax
from effjax.formats import parse_format_spec
from effjax.models import LM
from effjax.ptq import PTQResult
from effjax.quant import Recipe


def projection_recipe(weight: str | None = None, activation: str | None = None,
                      kv_cache: str | None = None) -> Recipe:
    """One rule over every attention / MLP projection (`_proj$`: not the embedding or an
    output head), formats given as specs (`effjax.formats.parse_format_spec`).

    Args:
      weight, activation, kv_cache: format specs ("int4:128", "mxfp4@rceil", ...) or None
        (not quantized).

    Returns:
      The `Recipe`.
    """
    return effjax.quant.recipe(parse_format_spec(weight), parse_format_spec(activation),
                               parse_format_spec(kv_cache), pattern=r"_proj$")


def run_ptq(lm: LM, method: str, recipe: Recipe, calib_texts: Sequence[str], options: dict,
            **kwargs) -> PTQResult:
    """`effjax.ptq.run` of a config row, without progress bars.

    Args:
      lm, method, recipe, calib_texts: as `effjax.ptq.run` takes them.
      options: the row's options: SpinQuant's go to its rotation training
        (`transform_options`), every other method's to its quantizer.
      **kwargs: further `effjax.ptq.run` arguments (num_windows, window, calib_cache, ...).

    Returns:
      The `PTQResult`.
    """
    spin = method.startswith("spinquant")
    return effjax.ptq.run(lm, method, recipe, calib_texts, progress=False,
                          transform_options=dict(options) if spin else None,
                          **({} if spin else dict(options)), **kwargs)


def ppl_and_kl(ref: LM, lm: LM, texts: Sequence[str], *, recipe: Recipe | None, seq_len: int,
               max_tokens: int) -> dict[str, float]:
    """`lm`'s perplexity and mean token KL(ref || lm) from one pass
    (`effjax.eval.kl_and_perplexity`).

    Args:
      ref: the float model.
      lm: the model measured (`ref` itself for the float cell).
      texts: the evaluation documents.
      recipe: activation / KV-cache formats `lm` runs with (None: float).
      seq_len: tokens per window.
      max_tokens: tokens used.

    Returns:
      {"ppl", "kl"}.
    """
    got = effjax.eval.kl_and_perplexity(ref, lm, texts, recipe=recipe, seq_len=seq_len,
                                        max_tokens=max_tokens, progress=False)
    return {"ppl": got.perplexity, "kl": got.kl}

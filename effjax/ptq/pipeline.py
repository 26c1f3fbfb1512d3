"""One entry point for post-training quantization: calibration text in, quantized model out.

`run(lm, method, recipe, calib_texts)` tokenizes the text into windows, calibrates, applies
the method's transforms (recalibrating on the transformed float model, so statistics always
describe what the quantized layers will see) and quantizes the weights. Activation and
KV-cache formats stay in the recipe and apply when the returned model runs with it.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import resource
import sys
import time
from collections.abc import Sequence

import jax
import numpy as np

from effjax.models.config import LMConfig
from effjax.models.records import LM, token_windows
from effjax.ptq.batquant import batquant
from effjax.ptq.calibrate import calibrate, calibrate_sequential
from effjax.ptq.flatquant import flatquant
from effjax.ptq.methods import _targets, gptq, mr_gptq, rtn, scale_opt
from effjax.ptq.smoothing import awq, smoothquant
from effjax.ptq.spinquant import spinquant_rotations
from effjax.quant.recipe import Recipe
from effjax.transforms import (
    add_input_transform,
    fuse_norms,
    hadamard_pair,
    random_hadamard,
    rotate_residual,
    rotate_values,
)

# method -> (transform before quantizing, quantizer)
METHODS = {
    "rtn": (None, "rtn"),
    "gptq": (None, "gptq"),
    "scale_opt": (None, "scale_opt"),
    "gptq_scale_opt": (None, "gptq_scale_opt"),
    "mr_gptq": (None, "mr_gptq"),
    "awq": (None, "awq"),
    "smoothquant": (None, "smoothquant"),
    "quarot": ("quarot", "rtn"),
    "quarot_gptq": ("quarot", "gptq"),
    "flatquant": (None, "flatquant"),
    "batquant": (None, "batquant"),
    "spinquant": ("spinquant", "rtn"),
    "spinquant_gptq": ("spinquant", "gptq"),
}
# quantizers trained layer by layer on the calibration windows (not on statistics)
LEARNED = {"flatquant": flatquant, "batquant": batquant}


def quarot(params, *, config: LMConfig, key: jax.Array, kv: bool = True,
           online_down: bool = True, residual: jax.Array | None = None
           ) -> tuple[dict, LMConfig]:
    """QuaRot's rotations, all function-preserving: norms fused, the residual stream times a
    random Hadamard matrix, values (and, online, queries/keys: the KV cache) times a random
    Hadamard matrix of head_dim, and an online Hadamard transform before every down_proj.

    Args:
      params: float decoder parameters.
      config: their config.
      key: PRNG key of the random signs.
      kv: rotate values and the cached keys/values.
      online_down: add the online Hadamard before down_proj.
      residual: the residual stream's rotation (hidden, hidden) orthogonal; default a random
        Hadamard matrix from `key`. (Inputs given as embeddings, such as a VLM's image
        features, must be multiplied by it.)

    Returns:
      (rotated params, config with an untied head).
    """
    k1, k2 = jax.random.split(key)
    params, config = fuse_norms(params, config=config)
    params = rotate_residual(params, random_hadamard(config.hidden_size, k1)
                             if residual is None else residual)
    if kv:
        params = rotate_values(params, random_hadamard(config.head_dim, k2), config=config)
    if online_down:
        params = add_input_transform(params, r"mlp/down_proj$",
                                     *hadamard_pair(config.intermediate_size))
    return params, config


def calibration_windows(lm: LM, texts: str | Sequence[str], *, num_windows: int,
                        window: int) -> np.ndarray:
    """The text's first tokens as (num_windows, window), each window led by the tokenizer's
    prefix token where it has one (`effjax.models.token_windows`).

    Raises:
      ValueError: if the text has fewer tokens than one window, or the model no tokenizer.
    """
    if lm.tokenizer is None:
        raise ValueError("calibration needs lm.tokenizer; this model was loaded without one")
    return token_windows(lm, texts, window=window, max_windows=num_windows)


@dataclasses.dataclass(frozen=True)
class PTQResult:
    """What `run` returns.

    Attributes:
      lm: the quantized model (its params hold QArray kernels and any online transforms;
        its config may differ from the input's: QuaRot unties the head).
      recipe: the recipe to run it with (activation and KV-cache formats).
      seconds: wall time per stage ("calibration", "transform", "quantization").
      peak_rss_mb: the process's peak resident memory after the run, in MB.
      windows: the calibration windows' shape.
    """

    lm: LM
    recipe: Recipe
    seconds: dict[str, float]
    peak_rss_mb: float
    windows: tuple[int, int]


def run(lm: LM, method: str, recipe: Recipe, calib_texts: str | Sequence[str], *,
        num_windows: int = 32, window: int = 512, key: jax.Array | None = None,
        calib_cache: dict | None = None, sequential: bool = False,
        transform_options: dict | None = None, progress: bool = True, **options) -> PTQResult:
    """Quantizes `lm` with one PTQ method.

    Args:
      lm: a float model (with its tokenizer).
      method: one of `METHODS`.
      recipe: weight formats per layer (and the activation / KV-cache formats the model
        will run with).
      calib_texts: calibration text (a string or documents).
      num_windows, window: calibration windows (fewer if the text is short; at least one).
      key: PRNG key for randomized transforms (default PRNGKey(0)).
      calib_cache: a dict that keeps calibration statistics between calls, keyed by the
        transform and its options (and, for SpinQuant, whose rotations are learned for the
        recipe, the recipe): statistics depend on the transformed model and the windows,
        not on the formats. The caller must not reuse it across models, texts or keys.
      sequential: calibrate layer by layer, each layer's statistics from the inputs the
        already-quantized layers before it produce (`calibrate_sequential`; no cache).
      transform_options: passed to the transform (`quarot`, or `spinquant_rotations`, which
        learns on the calibration windows with the recipe's formats: steps, learning_rate,
        ...).
      progress: show progress bars.
      **options: passed to the quantizer (e.g. `alpha` for smoothquant, `block_size`).

    Returns:
      A `PTQResult`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    transform, quantizer = METHODS[method]
    tokens = calibration_windows(lm, calib_texts, num_windows=num_windows, window=window)
    seconds = {}
    params, config = lm.params, lm.config
    t0 = time.perf_counter()
    key = jax.random.PRNGKey(0) if key is None else key
    if transform == "quarot":
        params, config = quarot(params, key=key, **(transform_options or {}), config=config)
    elif transform == "spinquant":
        params, config, _ = spinquant_rotations(params, tokens, recipe, key=key,
                                                progress=progress,
                                                **(transform_options or {}), config=config)
    seconds["transform"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    quantize = functools.partial(_quantize, quantizer, progress=progress and not sequential,
                                 **options)
    if quantizer in LEARNED:  # learn and quantize layer by layer (always sequential)
        seconds["calibration"] = 0.0
        params = jax.block_until_ready(LEARNED[quantizer](
            params, tokens, recipe, config=config, progress=progress, **options)[0])
        seconds["quantization"] = time.perf_counter() - t0
    elif sequential and quantizer != "rtn":
        def layer(p, stats, index):
            pattern = "lm_head" if index is None else f"layers/{index}/"
            r = _restricted(recipe, p, pattern)
            return p if r is None else quantize(p, stats, r)

        seconds["calibration"] = 0.0  # interleaved with quantization
        params = jax.block_until_ready(calibrate_sequential(
            params, tokens, layer, recipe=recipe, progress=progress, config=config))
        seconds["quantization"] = time.perf_counter() - t0
    else:
        calib = None
        if quantizer != "rtn":
            cache = {} if calib_cache is None else calib_cache
            ckey = (transform, recipe if transform == "spinquant" else None,
                    tuple(sorted((transform_options or {}).items())))
            if ckey not in cache:
                cache[ckey] = calibrate(params, tokens, progress=progress, config=config)
            calib = cache[ckey]
        seconds["calibration"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        params = jax.block_until_ready(quantize(params, calib, recipe))
        seconds["quantization"] = time.perf_counter() - t0
    return PTQResult(lm=dataclasses.replace(lm, params=params, config=config), recipe=recipe,
                     seconds=seconds, peak_rss_mb=peak_rss_mb(), windows=tokens.shape)


def _quantize(quantizer: str, params, calib, recipe: Recipe, *, progress: bool, **options):
    """Runs one quantizer of METHODS."""
    if quantizer == "rtn":
        return rtn(params, calib, recipe)
    if quantizer == "smoothquant":
        return smoothquant(params, calib, recipe, **options)
    if quantizer == "gptq_scale_opt":
        return gptq(params, calib, recipe, scale_search=True, progress=progress, **options)
    fn = {"gptq": gptq, "scale_opt": scale_opt, "mr_gptq": mr_gptq, "awq": awq}[quantizer]
    return fn(params, calib, recipe, progress=progress, **options)


def _restricted(recipe: Recipe, params, prefix: str) -> Recipe | None:
    """The recipe's rules limited to layer paths starting with prefix (None if it then
    matches no kernel of params)."""
    rules = tuple(dataclasses.replace(r, pattern=f"^(?={re.escape(prefix)})(?:.*?(?:{r.pattern}))")
                  for r in recipe.rules)
    out = dataclasses.replace(recipe, rules=rules)
    try:
        _targets(params, out)
    except ValueError:
        return None
    return out


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10

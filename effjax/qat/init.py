"""PTQ initialization of a QAT student: a PTQ method's weights, back in float."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Int

from effjax.formats import QArray, dequantize
from effjax.models.config import LMConfig
from effjax.models.decoder import Params
from effjax.ptq.calibrate import calibrate
from effjax.ptq.methods import gptq, rtn, scale_opt
from effjax.ptq.smoothing import awq, smoothquant
from effjax.quant.recipe import Recipe

# Methods whose output keeps the float model's structure (no online transforms to train).
PTQ_INIT_METHODS = {"rtn": rtn, "gptq": gptq, "scale_opt": scale_opt, "awq": awq,
                    "smoothquant": smoothquant}


def ptq_quantize(params: Params, method: str, recipe: Recipe,
                 calib_tokens: Int[Array, "n t"] | None = None, *, config: LMConfig,
                 progress: bool = False, **options) -> Params:
    """`method`'s quantized model: params with QArray kernels.

    Args:
      params: the float (teacher) parameters.
      config: their config.
      method: one of `PTQ_INIT_METHODS` ("rtn", "gptq", ...).
      recipe: the weight formats (the QAT recipe).
      calib_tokens: (n, t) calibration windows from the chosen domain (unused by "rtn").
      progress: progress bars.
      **options: passed to the method (e.g. damp, act_order for GPTQ).

    Returns:
      The quantized params (norms may be rescaled by AWQ / SmoothQuant).
    """
    if method not in PTQ_INIT_METHODS:
        raise ValueError(f"method must be one of {sorted(PTQ_INIT_METHODS)}, got {method!r}")
    calib = None
    if method != "rtn":
        if calib_tokens is None:
            raise ValueError(f"ptq_init with {method!r} needs calib_tokens (n, t) windows")
        calib = calibrate(params, jnp.asarray(calib_tokens, jnp.int32),
                          progress=progress, config=config)
    kwargs = dict(options)
    if method in ("gptq", "scale_opt", "awq"):
        kwargs["progress"] = progress
    return PTQ_INIT_METHODS[method](params, calib, recipe, **kwargs)


def dequantize_params(params: Params) -> Params:
    """Every QArray leaf dequantized, every array as float32."""
    return jax.tree.map(lambda a: dequantize(a, jnp.float32) if isinstance(a, QArray)
                        else jnp.asarray(a, jnp.float32), params,
                        is_leaf=lambda x: isinstance(x, QArray))


def ptq_init(params: Params, method: str, recipe: Recipe,
             calib_tokens: Int[Array, "n t"] | None = None, *, config: LMConfig,
             progress: bool = False, **options) -> Params:
    """The student's starting weights: `ptq_quantize`'s weights, dequantized to float32.

    The straight-through quantizer recomputes each group's scale from these weights: for
    RTN that is the RTN model again; for GPTQ mostly (its error compensation can leave a
    group's extreme weights off the end codes: 95% of weights keep their value at INT2 g32
    with zero points, in the test), so QAT starts next to the PTQ model.

    Args:
      params, config, method, recipe, calib_tokens, progress, **options: as in
        `ptq_quantize`.

    Returns:
      Float32 params of the same structure.
    """
    return dequantize_params(ptq_quantize(params, method, recipe, calib_tokens,
                                          progress=progress, **options, config=config))

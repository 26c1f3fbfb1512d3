"""Post-training quantization: calibration statistics and methods over parameter pytrees."""

from effjax.ptq.batquant import batquant, batquant_parameter_count, cayley, gpk_split
from effjax.ptq.calibrate import LayerStats, calibrate, calibrate_sequential
from effjax.ptq.flatquant import flatquant, kron_split
from effjax.ptq.freeact import complement_basis, freeact, type_grams, type_transforms
from effjax.ptq.gptq import gptq_quantize
from effjax.ptq.layerwise import LayerContext
from effjax.ptq.methods import gptq, mr_gptq, rtn, scale_opt
from effjax.ptq.pipeline import METHODS, PTQResult, calibration_windows, peak_rss_mb, quarot, run
from effjax.ptq.scales import quantize_searched, search_scales
from effjax.ptq.smoothing import awq, awq_scales, smoothquant, smoothquant_scales
from effjax.ptq.spinquant import cayley_sgd, orthogonality_error, spinquant_rotations

__all__ = [
    "METHODS",
    "LayerContext",
    "LayerStats",
    "PTQResult",
    "awq",
    "awq_scales",
    "batquant",
    "batquant_parameter_count",
    "calibrate",
    "cayley",
    "cayley_sgd",
    "complement_basis",
    "calibrate_sequential",
    "calibration_windows",
    "flatquant",
    "freeact",
    "gptq",
    "gptq_quantize",
    "gpk_split",
    "kron_split",
    "mr_gptq",
    "orthogonality_error",
    "peak_rss_mb",
    "quantize_searched",
    "quarot",
    "rtn",
    "run",
    "scale_opt",
    "search_scales",
    "smoothquant",
    "smoothquant_scales",
    "spinquant_rotations",
    "type_grams",
    "type_transforms",
]

"""Post-training quantization: calibration statistics and methods over parameter pytrees."""

from effjax.ptq.calibrate import LayerStats, calibrate
from effjax.ptq.gptq import gptq_quantize
from effjax.ptq.methods import gptq, mr_gptq, rtn, scale_opt
from effjax.ptq.scales import quantize_searched, search_scales
from effjax.ptq.smoothing import awq, awq_scales, smoothquant, smoothquant_scales

__all__ = [
    "LayerStats",
    "awq",
    "awq_scales",
    "calibrate",
    "gptq",
    "gptq_quantize",
    "mr_gptq",
    "quantize_searched",
    "rtn",
    "scale_opt",
    "search_scales",
    "smoothquant",
    "smoothquant_scales",
]

"""Post-training quantization: calibration statistics and methods over parameter pytrees."""

from effjax.ptq.calibrate import LayerStats, calibrate
from effjax.ptq.gptq import gptq_quantize
from effjax.ptq.methods import gptq, rtn

__all__ = ["LayerStats", "calibrate", "gptq", "gptq_quantize", "rtn"]

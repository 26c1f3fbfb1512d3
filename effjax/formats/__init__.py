"""Number formats: INT, FP8, MXFP8/6/4, MXINT8, NVFP4, HiF8, HiF4, bf16/fp16; QArray."""

from effjax.formats.codes import CODE_FORMATS, decode, encode
from effjax.formats.core import dequantize, mx_scale_exponent, quantize
from effjax.formats.elements import ELEMENTS, ElementFormat, element_format, round_to_element
from effjax.formats.fake_quant import (
    STE_MODES,
    fake_quant,
    fake_quant_learnable_clip,
    group_amax,
    representable_range,
)
from effjax.formats.matmul import SCALED_DOT_FORMATS, scaled_matmul
from effjax.formats.qarray import QArray
from effjax.formats.registry import MX_SCALE_MODES, Format, get_format, names

__all__ = [
    "CODE_FORMATS",
    "ELEMENTS",
    "MX_SCALE_MODES",
    "SCALED_DOT_FORMATS",
    "STE_MODES",
    "ElementFormat",
    "Format",
    "QArray",
    "decode",
    "dequantize",
    "element_format",
    "encode",
    "fake_quant",
    "fake_quant_learnable_clip",
    "get_format",
    "group_amax",
    "mx_scale_exponent",
    "names",
    "quantize",
    "representable_range",
    "round_to_element",
    "scaled_matmul",
]

"""Number formats: INT, FP8, MXFP8/6/4, MXINT8, NVFP4, HiF8, HiF4, bf16/fp16; QArray.

Non-finite inputs. `dequantize(quantize(x))` and `fake_quant(x)` agree, and a NaN or
+-Inf never turns into a finite value, except in HiF8's saturating mode (below):

- Block formats (MXFP8/6/4, MXINT8, NVFP4, HiF4) follow the MX v1.0 rule: a NaN or +-Inf
  anywhere in a block (32 values for MX, 16 for NVFP4, a 64-value unit for HiF4) makes
  that block's scale NaN (E8M0 0xFF, E4M3 NaN, E6M2 0xFF), so the whole block
  dequantizes to NaN. Other blocks are as they would be with the non-finite value
  replaced by 0: NVFP4's per-tensor scale is taken from the finite values.
- Scaled formats (symmetric INT, FP8; per tensor, channel or group) take each scale from
  the finite values alone, so a non-finite value leaves its neighbours as they would be
  without it. A NaN stays NaN at its position. +-Inf stays +-Inf where the element format
  has Inf (FP8 E5M2) and becomes NaN where it has none (INT, FP8 E4M3). Symmetric INT
  stores NaN as the code -2^(bits-1) (int8 -128, int4 0x8), which its clamp to
  +-(2^(bits-1) - 1) leaves unused.
- Asymmetric INT uses every code of its width, so it cannot store a NaN element: a group
  (or channel, or tensor: whatever one scale covers) holding a NaN or +-Inf gets a NaN
  scale and dequantizes to NaN as a whole, as a block does.
- Element formats without a scale: bf16 and fp16 keep NaN and +-Inf (IEEE). HiF8 keeps
  NaN; +-Inf becomes +-32768 in the saturating mode (the default, FORMATS.md's quantizer
  setting, which saturates every |x| >= 40960) and stays +-Inf with saturate=False.

Empty arrays (a zero-length axis anywhere) quantize, dequantize and fake-quantize to empty
results of the right shapes.

Contents: `names()`, `parse_format_spec` (a config string such as "int4:128", "fp8_e4m3:channel",
"mxfp4@rceil" or "int2:32@asym" -> `Format`), `quantize(x, fmt, axis)` -> `QArray`, `dequantize`,
`fake_quant` (straight-through: identity or clipped; `fake_quant_learnable_clip` whose gradient
reaches the clip ratio), `encode` / `decode` of element codes, `scaled_matmul`. Formats:
`int8/4/3/2` (symmetric or asymmetric; per tensor, channel or group of 16/32/64/128), `fp8_e4m3`,
`fp8_e5m2`, `mxfp8_e4m3`, `mxfp8_e5m2`, `mxfp6_e2m3`, `mxfp6_e3m2`, `mxfp4`, `mxint8` (MX scale
modes `floor`, `ceil`, `even`, `rceil`), `nvfp4` (one or two levels), `hif8` (saturating or Inf),
`hif4`, `bf16`, `fp16`. Storage is real: FP8 in XLA's float8 types, 4-bit codes packed two per
byte, 6-bit codes four per three bytes, E8M0 / E4M3 / E6M2 scale bytes (bits per element: MXFP4
4.25, NVFP4 4.5 + one float32, HiF4 4.5, MXFP6 6.25, MXFP8 8.25, HiF8 8; INT3 and INT2 take a byte
per code). FP6 and HiFloat arithmetic is emulated in float32.
"""

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
from effjax.formats.spec import parse_format_spec

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
    "parse_format_spec",
    "quantize",
    "representable_range",
    "round_to_element",
    "scaled_matmul",
]

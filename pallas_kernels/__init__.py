"""Pallas kernels for block-scaled formats, each beside its pure-jnp reference.

Off TPU and GPU every kernel runs in interpret mode; `backend="tpu"` / `"gpu"` lowers for
that target (e.g. to export). The references are `effjax.formats`' own functions, or the
same arithmetic tiled the kernel's way for the matmuls.

Contents: one Pallas kernel per file, each beside its pure-jnp reference: `block_quantize`
(`mx_quantize`, `nvfp4_quantize`, `hif4_quantize`) -> the `QArray` of `effjax.formats.quantize`;
`block_dequantize` (and the three families); `dequant_matmul` (W4A16 / W8A16: MXFP4/6/8, MXINT8,
NVFP4, HiF4, INT4/INT8 per group, dequantized tile by tile in the K loop, float32 accumulation);
`scaled_matmul` (both operands MXFP8 / MXFP4 / NVFP4); `fused_fake_quant` (one pass, custom_vjp
with identity or clipped straight-through). Interpret mode off TPU and GPU; `backend="tpu"` /
`"gpu"` (Triton) lowers for a target. `effjax.quant` uses them when `recipe(...,
impl="pallas")`, or with `impl="auto"` on TPU (on GPUs `auto` runs XLA, which was faster on an
H200).
"""

from pallas_kernels.common import BLOCK_FORMATS, MATMUL_WEIGHT_FORMATS
from pallas_kernels.dequant_matmul import dequant_matmul, dequant_matmul_reference
from pallas_kernels.dequantize import (
    block_dequantize,
    dequantize_reference,
    hif4_dequantize,
    mx_dequantize,
    nvfp4_dequantize,
)
from pallas_kernels.fused_fake_quant import fused_fake_quant, fused_fake_quant_reference
from pallas_kernels.quantize import (
    block_quantize,
    hif4_quantize,
    mx_quantize,
    nvfp4_quantize,
    quantize_reference,
)
from pallas_kernels.scaled_matmul import scaled_matmul, scaled_matmul_reference

__all__ = [
    "BLOCK_FORMATS",
    "MATMUL_WEIGHT_FORMATS",
    "block_dequantize",
    "block_quantize",
    "dequant_matmul",
    "dequant_matmul_reference",
    "dequantize_reference",
    "fused_fake_quant",
    "fused_fake_quant_reference",
    "hif4_dequantize",
    "hif4_quantize",
    "mx_dequantize",
    "mx_quantize",
    "nvfp4_dequantize",
    "nvfp4_quantize",
    "quantize_reference",
    "scaled_matmul",
    "scaled_matmul_reference",
]

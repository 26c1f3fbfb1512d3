"""Pallas kernels for block-scaled formats, each beside its pure-jnp reference.

Off TPU and GPU every kernel runs in interpret mode; `backend="tpu"` / `"gpu"` lowers for
that target (e.g. to export). The references are `effjax.formats`' own functions, or the
same arithmetic tiled the kernel's way for the matmuls.
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

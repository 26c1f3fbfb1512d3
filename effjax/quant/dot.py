"""Quantized execution of the one linear map: QArray weights, quantized activations."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from effjax.formats import QArray, dequantize, fake_quant
from effjax.formats.core import block_values
from effjax.formats.matmul import SCALED_DOT_FORMATS, block_dot, block_values_bf16
from effjax.formats.registry import Format
from effjax.quant.recipe import IMPLS


def _block_scaled_pair(act: Format | None, w: QArray) -> bool:
    return (act is not None and act.name in SCALED_DOT_FORMATS
            and w.fmt.name in SCALED_DOT_FORMATS and act.group_size == w.fmt.group_size
            and w.ndim == 2 and w.axis == 0)


def _kernel_weight(w: QArray) -> bool:
    """Whether `pallas_kernels.dequant_matmul` takes this weight."""
    from pallas_kernels import MATMUL_WEIGHT_FORMATS

    return (w.fmt.name in MATMUL_WEIGHT_FORMATS and w.fmt.granularity == "group"
            and w.fmt.symmetric and w.ndim == 2 and w.axis == 0
            and w.shape[0] % w.fmt.group_size == 0)


def _use_pallas(impl: str) -> bool:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":  # on GPUs the Triton kernels lose to XLA (experiments/results/)
        return jax.default_backend() == "tpu"
    return impl == "pallas"


def qdot(
    x: Float[Array, "... k"], w: QArray | jax.Array, act: Format | None = None, *,
    impl: str = "auto",
) -> Float[Array, "... n"]:
    """x @ w with float32 accumulation, for float or quantized weights and activations.

    - Both operands block-scaled (MXFP8 / MXFP4 / NVFP4 with equal block sizes): x is
      quantized along its features and both operands' block values (exact in bfloat16)
      meet in a bfloat16 dot accumulating in float32, global scales applied after: the
      arithmetic of `formats.scaled_matmul` / `jax.lax.scaled_dot` (equal bit for bit on
      the XLA path); the Pallas path quantizes x with `pallas_kernels.block_quantize` and
      runs `pallas_kernels.scaled_matmul`.
    - A QArray weight without activation format: XLA dequantizes it and runs a dot; the
      Pallas path runs `pallas_kernels.dequant_matmul` (dequantizing tile by tile) for the
      block formats and symmetric per-group INT8/INT4.
    - Otherwise x goes through the straight-through fake quantizer of `act` (if any) and
      meets the dequantized weight in a float32-accumulating dot.

    Args:
      x: activations; the last axis is contracted.
      w: (k, n) weights, a float array or a QArray quantized along axis 0.
      act: the activation format, or None.
      impl: "auto" (Pallas on TPU, XLA elsewhere), "pallas" (interpret mode off
        TPU and GPU) or "xla". The Pallas paths are forward-only (inference).

    Returns:
      (..., n) in x's dtype.
    """
    pallas = _use_pallas(impl)
    k = x.shape[-1]
    if isinstance(w, QArray) and _block_scaled_pair(act, w):
        if pallas:
            import pallas_kernels

            xq = pallas_kernels.block_quantize(x.reshape(-1, k), act)
            y = pallas_kernels.scaled_matmul(xq, w)
        else:
            xv, x_global = block_values(x.reshape(-1, k), act, axis=1)
            y = block_dot(xv.astype(jnp.bfloat16), x_global, block_values_bf16(w),
                          w.global_scale)
        return y.reshape(*x.shape[:-1], w.shape[1]).astype(x.dtype)
    if pallas and act is None and isinstance(w, QArray) and _kernel_weight(w):
        import pallas_kernels

        y = pallas_kernels.dequant_matmul(x.reshape(-1, k), w)
        return y.reshape(*x.shape[:-1], w.shape[1])
    if act is not None:
        x = fake_quant(x, act, axis=-1)
    kernel = dequantize(w, x.dtype) if isinstance(w, QArray) else w.astype(x.dtype)
    return jnp.einsum("...i,io->...o", x, kernel,
                      preferred_element_type=jnp.float32).astype(x.dtype)

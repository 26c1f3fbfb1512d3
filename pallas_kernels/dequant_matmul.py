"""Low-bit weights times float activations: the weight is dequantized tile by tile inside the
K loop and meets the activations in a float32-accumulating dot (W4A16, W8A16)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jaxtyping import Array, Float

from effjax.formats import QArray, core
from effjax.formats.registry import Format
from pallas_kernels import common


def dequant_matmul_kernel(*refs, fmt: Format, names: tuple[str, ...], block_k: int):
    """One (bm, bn) output tile: refs = (x (bm, k), codes (bn, packed k), *stored, out)."""
    x_ref, *w_refs, out_ref = refs
    w = dict(zip(("codes", *names), w_refs, strict=True))
    k = x_ref.shape[1]

    def step(t, acc):
        start = pl.multiple_of(t * block_k, block_k)
        x = x_ref[:, pl.ds(start, block_k)]
        wt = common.dequantized_tile(w, fmt, start, block_k, x.dtype)
        return acc + jax.lax.dot_general(x, wt, (((1,), (1,)), ((), ())),
                                         preferred_element_type=jnp.float32)

    acc = jnp.zeros(out_ref.shape, jnp.float32)
    out_ref[...] = jax.lax.fori_loop(0, k // block_k, step, acc)


@functools.partial(jax.jit, static_argnames=("block_m", "block_n", "block_k", "interpret",
                                             "backend"))
def _dequant_matmul(x, w: QArray, block_m: int, block_n: int, block_k: int, interpret: bool,
                    backend: str | None):
    m, k = x.shape
    n = w.shape[1]
    fmt = w.fmt
    stored = common.stored_arrays(w)
    specs = [pl.BlockSpec((block_m, k), lambda i, j: (i, 0)),
             *common.row_specs([w.codes, *stored.values()], block_n, 1)]
    out = pl.pallas_call(
        functools.partial(dequant_matmul_kernel, fmt=fmt, names=tuple(stored), block_k=block_k),
        out_shape=jax.ShapeDtypeStruct((m, n), jnp.float32),
        grid=(pl.cdiv(m, block_m), n // block_n), in_specs=specs,
        out_specs=pl.BlockSpec((block_m, block_n), lambda i, j: (i, j)),
        interpret=interpret, compiler_params=common.compiler_params(backend),
        name=f"dequant_matmul_{fmt.name}")(x, w.codes, *stored.values())
    if w.global_scale is not None:
        out = out * w.global_scale
    return out.astype(x.dtype)


def _check(x: jax.Array, w: QArray) -> jax.Array:
    x = common.float_input("x", x)
    common.check_qarray("w", w, 0, common.MATMUL_WEIGHT_FORMATS)
    if w.zero_point is not None:
        raise ValueError("w must be symmetric (no zero points)")
    if x.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"x must be (m, k) with k={w.shape[0]} (w's rows), got {x.shape}")
    return x


def dequant_matmul(x: Float[Array, "m k"], w: QArray, *, block_m: int | None = None,
                   block_n: int | None = None, block_k: int | None = None,
                   interpret: bool | None = None,
                   backend: str | None = None) -> Float[Array, "m n"]:
    """x @ w for a low-bit weight, dequantized tile by tile inside the kernel's K loop.

    Args:
      x: (m, k) float32 / bfloat16 / float16 activations (rows may leave a ragged tile).
      w: (k, n) QArray quantized along axis 0 (k a multiple of its group) in MXFP8/6/4,
        MXINT8, NVFP4, HiF4 or symmetric per-group INT8/INT4.
      block_m, block_n, block_k: the tiles (default per backend: `matmul_setup`; block_n
        must divide n, block_k divide k and be a multiple of w's group).
      interpret: run in interpret mode (default: when there is no TPU or GPU).
      backend: lower for "tpu" or "gpu" (default: the default backend's).

    Returns:
      (m, n) in x's dtype: float32 accumulation, NVFP4's global scale applied after.
    """
    x = _check(x, w)
    (m, k), n = x.shape, w.shape[1]
    return _dequant_matmul(x, w, *common.matmul_setup(m, n, k, w.fmt.group_size, block_m,
                                                      block_n, block_k, interpret, backend))


def dequant_matmul_reference(x: Float[Array, "m k"], w: QArray, *,
                             block_k: int | None = None) -> Float[Array, "m n"]:
    """The pure-jnp reference, computed the kernel's way: the weight dequantized (no global
    scale) to x's dtype, float32 dots over the same K tiles summed in order, then the
    global scale."""
    x = _check(x, w)
    k = x.shape[1]
    block_k = block_k or common.default_block(k, w.fmt.group_size, 256)
    values = core.codes_to_values(w.codes, common.stored_arrays(w), w.fmt, k)
    wv = values.reshape(values.shape[0], k).astype(x.dtype)
    acc = jnp.zeros((x.shape[0], wv.shape[0]), jnp.float32)
    for s in range(0, k, block_k):
        acc = acc + jax.lax.dot_general(x[:, s:s + block_k], wv[:, s:s + block_k],
                                        (((1,), (1,)), ((), ())),
                                        preferred_element_type=jnp.float32)
    if w.global_scale is not None:
        acc = acc * w.global_scale
    return acc.astype(x.dtype)

"""Fake quantization in one pass for QAT: a kernel writes dequantize(quantize(x)) and, for the
clipped straight-through estimator, the mask of elements inside their group's range; the
custom_vjp backward applies the mask (or passes the gradient unchanged)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from effjax.formats import STE_MODES, core, fake_quant
from effjax.formats.registry import Format
from pallas_kernels import common


def fused_fake_quant_kernel(*refs, fmt: Format, top: float, with_mask: bool,
                            interpret: bool):
    """One tile: refs = ([global scale (1, 1)], x (bm, bk), y, [mask])."""
    two_level = fmt.kind == "nvfp4" and fmt.two_level
    g = refs[0][0, 0] if two_level else None
    x_ref, y_ref, *mask_ref = refs[1:] if two_level else refs
    x = x_ref[...].astype(jnp.float32)
    rows, k = x.shape
    xb = x.reshape(rows, k // fmt.group_size, fmt.group_size)
    # Compiled kernels drop the optimization barriers, which kernel lowerings lack.
    elements, stored = core.grid_values(xb, fmt, global_scale=g, barriers=interpret)
    y_ref[...] = core.apply_scale(elements, stored, fmt).reshape(rows, k).astype(y_ref.dtype)
    if with_mask:  # inside [-hi, hi], hi = the group's largest representable value
        hi = core.apply_scale(jnp.full(elements.shape, top, jnp.float32), stored, fmt)
        mask_ref[0][...] = (jnp.abs(x) <= hi.reshape(rows, k)).astype(jnp.int8)


@functools.partial(jax.jit, static_argnames=("fmt", "with_mask", "block_m", "block_k",
                                             "interpret", "backend"))
def _call(x, fmt: Format, with_mask: bool, block_m: int, block_k: int, interpret: bool,
          backend: str | None):
    m, k = x.shape
    top = common.block_top(fmt)
    tile = pl.BlockSpec((block_m, block_k), lambda i, j: (i, j))
    in_specs, args = [tile], [x]
    if fmt.kind == "nvfp4" and fmt.two_level:
        amax = jnp.max(jnp.abs(core.finite_or_zero(x.astype(jnp.float32))))
        g = core.nvfp4_global_scale(amax)  # from the finite values
        in_specs.insert(0, pl.BlockSpec((1, 1), lambda i, j: (0, 0)))
        args.insert(0, g.reshape(1, 1))
    out_shape = [jax.ShapeDtypeStruct(x.shape, x.dtype)]
    if with_mask:
        out_shape.append(jax.ShapeDtypeStruct(x.shape, jnp.int8))
    outs = pl.pallas_call(
        functools.partial(fused_fake_quant_kernel, fmt=fmt, top=top, with_mask=with_mask,
                          interpret=interpret),
        out_shape=out_shape, grid=(pl.cdiv(m, block_m), k // block_k), in_specs=in_specs,
        out_specs=[tile] * len(out_shape), interpret=interpret,
        compiler_params=common.compiler_params(backend),
        name=f"fused_fake_quant_{fmt.name}")(*args)
    return outs[0], (outs[1] if with_mask else None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4, 5, 6))
def _fused(x, fmt, ste, block_m, block_k, interpret, backend):
    return _call(x, fmt, False, block_m, block_k, interpret, backend)[0]


def _fused_fwd(x, fmt, ste, block_m, block_k, interpret, backend):
    return _call(x, fmt, ste == "clipped", block_m, block_k, interpret, backend)


def _fused_bwd(fmt, ste, block_m, block_k, interpret, backend, mask, g):
    if ste == "identity":
        return (g,)
    return (jnp.where(mask == 1, g, jnp.zeros_like(g)),)


_fused.defvjp(_fused_fwd, _fused_bwd)


def fused_fake_quant(x: jax.Array, fmt, *, ste: str = "identity", block_m: int | None = None,
                     block_k: int | None = None, interpret: bool | None = None,
                     backend: str | None = None) -> jax.Array:
    """dequantize(quantize(x)) along the last axis in one kernel pass, straight-through.

    Args:
      x: (m, k) float32 / bfloat16 / float16 (rows may leave a ragged tile).
      fmt: one of `BLOCK_FORMATS` or a symmetric per-group INT8 / INT4 (name or `Format`).
      ste: "identity" or "clipped" (the gradient is zero where x was outside its group's
        representable range), as in `effjax.formats.fake_quant`.
      block_m, block_k: the tile (block_k must divide k and be a multiple of the group).
      interpret: run in interpret mode (default: when there is no TPU or GPU).
      backend: lower for "tpu" or "gpu" (default: the default backend's).

    Returns:
      An array like x, equal bit for bit to `effjax.formats.fake_quant(x, fmt, axis=-1)`,
      with the same gradient.
    """
    fmt = common.block_format(fmt, common.MATMUL_WEIGHT_FORMATS)
    if not fmt.symmetric:
        raise ValueError(f"fmt must be symmetric, got {fmt.name} with symmetric=False")
    if ste not in STE_MODES:
        raise ValueError(f"ste must be one of {STE_MODES}, got {ste!r}")
    x = common.float_input("x", x)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (m, k), got shape {x.shape}")
    m, k = x.shape
    return _fused(x, fmt, ste, *common.tile_setup(m, k, fmt.group_size, block_m, block_k,
                                                  interpret, backend))


def fused_fake_quant_reference(x: jax.Array, fmt, *, ste: str = "identity") -> jax.Array:
    """The pure-jnp reference: `effjax.formats.fake_quant` along the last axis."""
    return fake_quant(x, fmt, axis=-1, ste=ste)

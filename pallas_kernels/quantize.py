"""Block quantization kernel: MX (FP8/FP6/FP4/INT8), NVFP4 and HiF4 tiles -> codes and scales.

Each grid step reads a (block_m, block_k) tile, computes its block scales and element codes
with the arithmetic of `effjax.formats` (the reference) and writes packed codes and scales;
two-level NVFP4 gets its per-tensor scale from one XLA reduction before the kernel.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from effjax.formats import QArray, core, quantize
from effjax.formats.registry import Format
from pallas_kernels import common


def quantize_kernel(*refs, fmt: Format, outputs: tuple[str, ...], interpret: bool):
    """One tile: refs = ([global scale (1, 1)], x (bm, bk), codes, *stored outputs)."""
    two_level = fmt.kind == "nvfp4" and fmt.two_level
    g = refs[0][0, 0] if two_level else None
    x_ref, codes_ref, *out_refs = refs[1:] if two_level else refs
    group = fmt.group_size
    for start, n in common.chunks(x_ref.shape[1]):  # chunks through the refs, not values
        x = x_ref[:, start:start + n].astype(jnp.float32)
        # Compiled kernels drop the optimization barriers, which kernel lowerings lack.
        elements, stored = core.grid_values(x.reshape(x.shape[0], n // group, group), fmt,
                                            global_scale=g, barriers=interpret)
        codes = common.pack_tile(core.encode_elements(elements, fmt).reshape(x.shape), fmt.bits)
        width = common.packed_width(fmt, n)
        codes_ref[:, start * width // n:(start + n) * width // n] = codes
        for name, ref in zip(outputs, out_refs, strict=True):
            ref[:, start // group:(start + n) // group] = stored[name]


@functools.partial(jax.jit, static_argnames=("fmt", "block_m", "block_k", "interpret", "backend"))
def _quantize(x, fmt: Format, block_m: int, block_k: int, interpret: bool,
              backend: str | None) -> QArray:
    m, k = x.shape
    ref = jax.eval_shape(lambda a: quantize(a, fmt, axis=1), x)  # the layout to produce
    outputs = tuple(n for n in ("scale", "levels") if getattr(ref, n) is not None)
    group = fmt.group_size
    grid = (pl.cdiv(m, block_m), k // block_k)
    out_specs = [pl.BlockSpec((block_m, common.packed_width(fmt, block_k)), lambda i, j: (i, j)),
                 pl.BlockSpec((block_m, block_k // group), lambda i, j: (i, j))]
    if "levels" in outputs:
        out_specs.append(pl.BlockSpec((block_m, block_k // group, 3), lambda i, j: (i, j, 0)))
    in_specs = [pl.BlockSpec((block_m, block_k), lambda i, j: (i, j))]
    args = [x]
    global_scale = None
    if ref.global_scale is not None:
        amax = jnp.max(jnp.abs(core.finite_or_zero(x.astype(jnp.float32))))
        global_scale = core.nvfp4_global_scale(amax)  # from the finite values
        in_specs.insert(0, pl.BlockSpec((1, 1), lambda i, j: (0, 0)))
        args.insert(0, global_scale.reshape(1, 1))
    out_shape = [jax.ShapeDtypeStruct(ref.codes.shape, ref.codes.dtype)] + [
        jax.ShapeDtypeStruct(getattr(ref, n).shape, getattr(ref, n).dtype) for n in outputs]
    codes, *stored = pl.pallas_call(
        functools.partial(quantize_kernel, fmt=fmt, outputs=outputs, interpret=interpret),
        out_shape=out_shape, grid=grid, in_specs=in_specs, out_specs=out_specs,
        interpret=interpret, compiler_params=common.compiler_params(backend),
        name=f"quantize_{fmt.name}")(*args)
    named = dict(zip(outputs, stored, strict=True))
    return QArray(codes=codes, scale=named["scale"], global_scale=global_scale, zero_point=None,
                  levels=named.get("levels"), fmt=fmt, axis=1, shape=(m, k),
                  dtype=jnp.dtype(x.dtype).name)


def block_quantize(x: jax.Array, fmt: str | Format, *, block_m: int | None = None,
                   block_k: int | None = None, interpret: bool | None = None,
                   backend: str | None = None) -> QArray:
    """Quantizes a matrix along its last axis with the Pallas kernel.

    Args:
      x: (m, k) float32 / bfloat16 / float16; k a multiple of the format's block. Rows may
        leave a ragged last tile.
      fmt: one of `BLOCK_FORMATS` (name or `Format`).
      block_m, block_k: the tile (block_k must divide k and be a multiple of the block).
      interpret: run in interpret mode (default: when there is no TPU or GPU).
      backend: lower for "tpu" or "gpu" (default: the default backend's), e.g. to export.

    Returns:
      The `QArray` that `effjax.formats.quantize(x, fmt, axis=1)` returns, bit for bit.
    """
    fmt = common.block_format(fmt)
    x = common.float_input("x", x)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (m, k), got shape {x.shape}")
    m, k = x.shape
    if k % fmt.group_size:
        raise ValueError(f"expected k={k} to be a multiple of {fmt.name}'s block "
                         f"{fmt.group_size}")
    return _quantize(x, fmt, *common.tile_setup(m, k, fmt.group_size, block_m, block_k,
                                                 interpret, backend))


def quantize_reference(x: jax.Array, fmt: str | Format) -> QArray:
    """The pure-jnp reference: `effjax.formats.quantize` along the last axis."""
    return quantize(x, fmt, axis=1)


def _x_fmt(x, fmt, *args, **kwargs):
    return common.block_format(fmt)


mx_quantize = common.family(
    block_quantize, ("mx",), "MX quantization (MXFP8 E4M3/E5M2, MXFP6, MXFP4, MXINT8) in Pallas.",
    _x_fmt)
nvfp4_quantize = common.family(block_quantize, ("nvfp4",),
                               "NVFP4 quantization (two-level unless asked) in Pallas.", _x_fmt)
hif4_quantize = common.family(block_quantize, ("hif4",),
                              "HiF4 quantization (64-element units) in Pallas.", _x_fmt)

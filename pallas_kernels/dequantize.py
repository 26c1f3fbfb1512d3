"""Block dequantization kernel: packed codes and scales of MX / NVFP4 / HiF4 tiles -> values."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from effjax.formats import QArray, core, dequantize
from effjax.formats.registry import Format
from pallas_kernels import common


def dequantize_kernel(*refs, fmt: Format, names: tuple[str, ...]):
    """One tile: refs = (codes, *stored inputs named by `names`, out (bm, bk))."""
    codes_ref, *stored_refs, out_ref = refs
    named = dict(zip(names, stored_refs, strict=True))
    global_ref = named.pop("global_scale", None)
    group = fmt.group_size
    for start, n in common.chunks(out_ref.shape[1]):  # chunks through the refs, not values
        width = common.packed_width(fmt, n)
        stored = {name: r[:, start // group:(start + n) // group] for name, r in named.items()}
        if global_ref is not None:
            stored["global_scale"] = global_ref[0, 0]
        values = core.codes_to_values(
            codes_ref[:, start * width // n:(start + n) * width // n], stored, fmt, n,
            unpack=common.unpack_tile)
        out_ref[:, start:start + n] = values.reshape(values.shape[0], n).astype(out_ref.dtype)


@functools.partial(jax.jit, static_argnames=("dtype", "block_m", "block_k", "interpret",
                                             "backend"))
def _dequantize(q: QArray, dtype, block_m: int, block_k: int, interpret: bool,
                backend: str | None) -> jax.Array:
    fmt, (m, k) = q.fmt, q.shape
    group = fmt.group_size
    stored = common.stored_arrays(q)
    names = tuple(stored)
    in_specs = [pl.BlockSpec((block_m, common.packed_width(fmt, block_k)), lambda i, j: (i, j))]
    for n in names:
        if n == "levels":
            in_specs.append(pl.BlockSpec((block_m, block_k // group, 3), lambda i, j: (i, j, 0)))
        else:
            in_specs.append(pl.BlockSpec((block_m, block_k // group), lambda i, j: (i, j)))
    args = [q.codes, *stored.values()]
    if q.global_scale is not None:
        names += ("global_scale",)
        in_specs.append(pl.BlockSpec((1, 1), lambda i, j: (0, 0)))
        args.append(q.global_scale.reshape(1, 1))
    return pl.pallas_call(
        functools.partial(dequantize_kernel, fmt=fmt, names=names),
        out_shape=jax.ShapeDtypeStruct((m, k), dtype),
        grid=(pl.cdiv(m, block_m), k // block_k), in_specs=in_specs,
        out_specs=pl.BlockSpec((block_m, block_k), lambda i, j: (i, j)),
        interpret=interpret, compiler_params=common.compiler_params(backend),
        name=f"dequantize_{fmt.name}")(*args)


def block_dequantize(q: QArray, dtype=None, *, block_m: int | None = None,
                     block_k: int | None = None, interpret: bool | None = None,
                     backend: str | None = None) -> jax.Array:
    """Dequantizes a 2-D QArray quantized along its last axis with the Pallas kernel.

    Args:
      q: (m, k) QArray in one of `BLOCK_FORMATS`, quantized along axis 1.
      dtype: output dtype (default: the dtype that was quantized).
      block_m, block_k: the tile (block_k must divide k and be a multiple of the block).
      interpret: run in interpret mode (default: when there is no TPU or GPU).
      backend: lower for "tpu" or "gpu" (default: the default backend's).

    Returns:
      (m, k) values, equal bit for bit to `effjax.formats.dequantize(q, dtype)`.
    """
    common.check_qarray("q", q, 1, common.BLOCK_FORMATS)
    m, k = q.shape
    return _dequantize(q, jnp.dtype(dtype or q.dtype),
                       *common.tile_setup(m, k, q.fmt.group_size, block_m, block_k, interpret,
                                          backend))


def dequantize_reference(q: QArray, dtype=None) -> jax.Array:
    """The pure-jnp reference: `effjax.formats.dequantize`."""
    return dequantize(q, dtype)


def _q_fmt(q, *args, **kwargs):
    return q.fmt


mx_dequantize = common.family(block_dequantize, ("mx",), "MX dequantization in Pallas.", _q_fmt)
nvfp4_dequantize = common.family(block_dequantize, ("nvfp4",),
                                 "NVFP4 dequantization (block and global scales) in Pallas.",
                                 _q_fmt)
hif4_dequantize = common.family(block_dequantize, ("hif4",),
                                "HiF4 dequantization (unit scale and levels) in Pallas.", _q_fmt)

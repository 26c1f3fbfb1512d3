"""Both operands block-scaled (MXFP8, MXFP4, NVFP4; W8A8 and W4A4): block values decoded
tile by tile inside the K loop, exact in bfloat16, meeting in a float32-accumulating dot."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jaxtyping import Array, Float

from effjax.formats import SCALED_DOT_FORMATS, QArray, core
from effjax.formats.registry import Format
from pallas_kernels import common


def scaled_matmul_kernel(*refs, a_fmt: Format, b_fmt: Format, a_names: tuple[str, ...],
                         b_names: tuple[str, ...], block_k: int):
    """One (bm, bn) output tile: refs = (a codes, *a stored, b codes, *b stored, out)."""
    na = 1 + len(a_names)
    a = dict(zip(("codes", *a_names), refs[:na], strict=True))
    b = dict(zip(("codes", *b_names), refs[na:-1], strict=True))
    out_ref = refs[-1]
    k = a["scale"].shape[1] * a_fmt.group_size

    def step(t, acc):
        start = pl.multiple_of(t * block_k, block_k)
        at = common.dequantized_tile(a, a_fmt, start, block_k, jnp.bfloat16)
        bt = common.dequantized_tile(b, b_fmt, start, block_k, jnp.bfloat16)
        return acc + jax.lax.dot_general(at, bt, (((1,), (1,)), ((), ())),
                                         preferred_element_type=jnp.float32)

    acc = jnp.zeros(out_ref.shape, jnp.float32)
    out_ref[...] = jax.lax.fori_loop(0, k // block_k, step, acc)


def _globals(out: jax.Array, a: QArray, b: QArray) -> jax.Array:
    for g in (a.global_scale, b.global_scale):
        if g is not None:
            out = out * g
    return out


@functools.partial(jax.jit, static_argnames=("block_m", "block_n", "block_k", "interpret",
                                             "backend"))
def _scaled_matmul(a: QArray, b: QArray, block_m: int, block_n: int, block_k: int,
                   interpret: bool, backend: str | None):
    (m, _), n = a.shape, b.shape[1]
    sa, sb = common.stored_arrays(a), common.stored_arrays(b)
    out = pl.pallas_call(
        functools.partial(scaled_matmul_kernel, a_fmt=a.fmt, b_fmt=b.fmt, a_names=tuple(sa),
                          b_names=tuple(sb), block_k=block_k),
        out_shape=jax.ShapeDtypeStruct((m, n), jnp.float32),
        grid=(pl.cdiv(m, block_m), n // block_n),
        in_specs=[*common.row_specs([a.codes, *sa.values()], block_m, 0),
                  *common.row_specs([b.codes, *sb.values()], block_n, 1)],
        out_specs=pl.BlockSpec((block_m, block_n), lambda i, j: (i, j)),
        interpret=interpret, compiler_params=common.compiler_params(backend),
        name=f"scaled_matmul_{a.fmt.name}_{b.fmt.name}",
    )(a.codes, *sa.values(), b.codes, *sb.values())
    return _globals(out, a, b)


def _check(a: QArray, b: QArray) -> None:
    common.check_qarray("a", a, 1, SCALED_DOT_FORMATS)
    common.check_qarray("b", b, 0, SCALED_DOT_FORMATS)
    if a.shape[1] != b.shape[0] or a.fmt.group_size != b.fmt.group_size:
        raise ValueError(f"contraction mismatch: a {a.shape} ({a.fmt.name}), b {b.shape} "
                         f"({b.fmt.name})")


def scaled_matmul(a: QArray, b: QArray, *, block_m: int | None = None,
                  block_n: int | None = None, block_k: int | None = None,
                  interpret: bool | None = None,
                  backend: str | None = None) -> Float[Array, "m n"]:
    """a @ b for block-scaled operands, both dequantized tile by tile inside the K loop.

    Args:
      a: (m, k) QArray along axis 1 (activations), in MXFP8 E4M3/E5M2, MXFP4 or NVFP4.
      b: (k, n) QArray along axis 0 (weights), same block size as a.
      block_m, block_n, block_k: the tiles (default per backend: `matmul_setup`; block_n
        must divide n, block_k divide k and be a multiple of the block).
      interpret: run in interpret mode (default: when there is no TPU or GPU).
      backend: lower for "tpu" or "gpu" (default: the default backend's).

    Returns:
      float32 (m, n); NVFP4 per-tensor scales are applied to the product (as in
      `effjax.formats.scaled_matmul`).
    """
    _check(a, b)
    (m, k), n = a.shape, b.shape[1]
    return _scaled_matmul(a, b, *common.matmul_setup(m, n, k, a.fmt.group_size, block_m,
                                                     block_n, block_k, interpret, backend))


def scaled_matmul_reference(a: QArray, b: QArray, *,
                            block_k: int | None = None) -> Float[Array, "m n"]:
    """The pure-jnp reference, computed the kernel's way: exact bfloat16 block values,
    float32 dots over the same K tiles summed in order, then the global scales."""
    _check(a, b)
    k = a.shape[1]
    block_k = block_k or common.default_block(k, a.fmt.group_size, 256)

    def values(q):
        v = core.codes_to_values(q.codes, common.stored_arrays(q), q.fmt, k)
        return v.reshape(v.shape[0], k).astype(jnp.bfloat16)

    av, bv = values(a), values(b)
    acc = jnp.zeros((av.shape[0], bv.shape[0]), jnp.float32)
    for s in range(0, k, block_k):
        acc = acc + jax.lax.dot_general(av[:, s:s + block_k], bv[:, s:s + block_k],
                                        (((1,), (1,)), ((), ())),
                                        preferred_element_type=jnp.float32)
    return _globals(acc, a, b)

"""Matrix products of block-scaled QArrays through `jax.lax.scaled_dot`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from effjax.formats import elements as el
from effjax.formats.core import padded_length, unpack_nibbles
from effjax.formats.qarray import QArray

SCALED_DOT_FORMATS = ("mxfp8_e4m3", "mxfp8_e5m2", "mxfp4", "nvfp4")


def _operand(q: QArray) -> tuple[jax.Array, jax.Array]:
    """(elements in their XLA low-precision dtype, scales) with the contraction axis last."""
    fmt = q.fmt
    if fmt.element == "e2m1":
        codes = unpack_nibbles(q.codes, padded_length(q))
        elements = el.decode_element(codes, el.ELEMENTS["e2m1"]).astype(jnp.float4_e2m1fn)
    else:
        elements = q.codes
    if fmt.kind == "mx":
        scale = jax.lax.bitcast_convert_type(q.scale, jnp.float8_e8m0fnu)
    else:
        scale = q.scale
    return elements, scale


def block_values_bf16(q: QArray) -> jax.Array:
    """Dequantized block values (before any global scale) in bfloat16, (rows, k), exactly.

    For the formats of `SCALED_DOT_FORMATS` an element times its block scale has at most
    six significant bits and a float32 exponent, so bfloat16 holds it exactly.
    """
    elements, scale = _operand(q)
    rows, k = elements.shape
    blocks = elements.astype(jnp.float32).reshape(rows, -1, q.fmt.group_size)
    values = blocks * scale.astype(jnp.float32)[..., None]
    return values.reshape(rows, k).astype(jnp.bfloat16)


def block_dot(a_values: jax.Array, a_global: jax.Array | None, b_values: jax.Array,
              b_global: jax.Array | None) -> Float[Array, "m n"]:
    """(m, k) x (n, k) bfloat16 block values -> float32 (m, n), then the global scales.

    The arithmetic of `jax.lax.scaled_dot` on CPU: exact block values in bfloat16, a dot
    accumulating in float32, per-tensor (NVFP4) scales applied to the product.
    """
    out = jax.lax.dot_general(a_values, b_values, (((1,), (1,)), ((), ())),
                              preferred_element_type=jnp.float32)
    return _apply_globals(out, a_global, b_global)


def _apply_globals(out: jax.Array, *scales: jax.Array | None) -> jax.Array:
    for g in scales:
        if g is not None:
            out = out * g
    return out


def scaled_matmul(a: QArray, b: QArray, *, impl: str = "scaled_dot") -> Float[Array, "m n"]:
    """a @ b for block-scaled operands with float32 accumulation.

    Args:
      a: (m, k) quantized along axis 1.
      b: (k, n) quantized along axis 0, with the same block size.
      impl: "scaled_dot" (`jax.lax.scaled_dot` on the low-precision elements and scales)
        or "xla" (exact bfloat16 dequantization, then a bfloat16 dot accumulating in
        float32: on CPU the same arithmetic, so the two agree bit for bit).

    Returns:
      float32 (m, n); NVFP4 per-tensor scales are applied to the product.
    """
    for name, q, axis in (("a", a, 1), ("b", b, 0)):
        if q.fmt.name not in SCALED_DOT_FORMATS:
            raise ValueError(f"{name} must be one of {SCALED_DOT_FORMATS}, got {q.fmt.name}")
        if q.ndim != 2 or q.axis != axis:
            raise ValueError(f"{name} must be 2-D and quantized along axis {axis}, got shape "
                             f"{q.shape} and axis {q.axis}")
    if a.shape[1] != b.shape[0] or a.fmt.group_size != b.fmt.group_size:
        raise ValueError(f"contraction mismatch: a {a.shape} ({a.fmt.name}), "
                         f"b {b.shape} ({b.fmt.name})")
    if impl == "xla":
        return block_dot(block_values_bf16(a), a.global_scale, block_values_bf16(b),
                         b.global_scale)
    if impl != "scaled_dot":
        raise ValueError(f"impl must be 'scaled_dot' or 'xla', got {impl!r}")
    (ea, sa), (eb, sb) = _operand(a), _operand(b)
    out = jax.lax.scaled_dot(ea, eb, lhs_scale=sa, rhs_scale=sb,
                             dimension_numbers=(((1,), (1,)), ((), ())),
                             preferred_element_type=jnp.float32)
    return _apply_globals(out, a.global_scale, b.global_scale)

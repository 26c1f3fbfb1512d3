"""Fake quantization (dequantize(quantize(x))) as custom_vjp ops with straight-through gradients."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from effjax.formats.core import (
    check_input,
    dequantize,
    filled_codes,
    finite_or_zero,
    from_blocks,
    group_size,
    max_code,
    quantize,
    quantize_dequantize,
    to_blocks,
)
from effjax.formats.qarray import QArray
from effjax.formats.registry import Format, get_format

STE_MODES = ("identity", "clipped")


def fake_quant(x: jax.Array, fmt: str | Format, axis: int = -1, *, ste: str = "identity",
               **options) -> jax.Array:
    """dequantize(quantize(x)) with a straight-through gradient.

    Args:
      x: a real floating-point array.
      fmt: format name or `Format`.
      axis: the contraction axis.
      ste: "identity" (the gradient passes unchanged) or "clipped" (zero where the
        quantizer clipped x: outside the range its group's scale can represent).
      **options: `Format` options.

    Returns:
      An array like x, on the format's grid.
    """
    if ste not in STE_MODES:
        raise ValueError(f"ste must be one of {STE_MODES}, got {ste!r}")
    return _fake_quant(x, get_format(fmt, **options), check_input(x, axis), ste)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _fake_quant(x, fmt, axis, ste):
    return quantize_dequantize(x, fmt, axis)


def _fake_quant_fwd(x, fmt, axis, ste):
    y = quantize_dequantize(x, fmt, axis)
    if ste == "identity":
        return y, None
    lo, hi = representable_range(quantize(x, fmt, axis))
    return y, (x >= lo) & (x <= hi)


def _fake_quant_bwd(fmt, axis, ste, inside, g):
    if ste == "identity":
        return (g,)
    return (jnp.where(inside, g, jnp.zeros_like(g)),)


_fake_quant.defvjp(_fake_quant_fwd, _fake_quant_bwd)


def representable_range(q: QArray) -> tuple[jax.Array, jax.Array]:
    """Per-element (lowest, highest) values each element's group can represent.

    Args:
      q: a QArray.

    Returns:
      Two float32 arrays of shape `q.shape` (+-inf for formats that do not clip).
    """
    top = max_code(q.fmt)
    if top is None:
        inf = jnp.full(q.shape, jnp.inf, jnp.float32)
        return -inf, inf
    hi = dequantize(dataclasses.replace(q, codes=filled_codes(q, top)), jnp.float32)
    if q.zero_point is not None:
        lo = dequantize(dataclasses.replace(q, codes=filled_codes(q, 0)), jnp.float32)
        return lo, hi
    return -hi, hi


def group_amax(x: jax.Array, fmt: str | Format, axis: int = -1) -> jax.Array:
    """The maximum of |x| over the finite values of each quantization group, broadcast back
    to x's shape (0 for a group without finite values)."""
    fmt = get_format(fmt)
    axis = check_input(x, axis)
    xb = to_blocks(x, axis, group_size(fmt, x.shape[axis]))
    amax = jnp.max(jnp.abs(finite_or_zero(xb)), axis=-1, keepdims=True)
    if fmt.granularity == "tensor":
        amax = jnp.max(amax, keepdims=True, initial=0.0)
    return from_blocks(jnp.broadcast_to(amax, xb.shape), axis, x.shape).astype(x.dtype)


def fake_quant_learnable_clip(x: jax.Array, ratio: jax.Array, fmt: str | Format,
                              axis: int = -1, **options) -> jax.Array:
    """Fake quantization after clipping each group at `ratio` times its absolute max.

    The clip is differentiable (PACT-style): the gradient reaches `ratio` through the
    elements that were clipped, and x through the others (straight-through for the rest).
    NaN and +-Inf are not clipped: they reach the quantizer, which treats them as
    `fake_quant` does (see the `effjax.formats` docstring).

    Args:
      x: a real floating-point array.
      ratio: clipping ratios in (0, 1], broadcastable to x (a scalar, or one per row...).
      fmt: format name or `Format`.
      axis: the contraction axis.
      **options: `Format` options.

    Returns:
      An array like x.
    """
    fmt = get_format(fmt, **options)
    c = ratio * jax.lax.stop_gradient(group_amax(x, fmt, axis))
    return fake_quant(jnp.where(jnp.isfinite(x), jnp.clip(x, -c, c), x), fmt, axis)

"""quantize / dequantize for every format, over a chosen contraction axis."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from effjax.formats import elements as el
from effjax.formats.qarray import QArray
from effjax.formats.registry import Format, get_format

# NVFP4 constants (FORMATS.md): E2M1 max and E4M3 max.
_FP4_MAX, _E4M3_MAX, _E4M3_MIN_SUB = 6.0, 448.0, 2.0**-9
# MXINT8: int8 elements with an implicit 2^-6 scale, clamped to +-127/64.
_MXINT8_MAX = 127 / 64


def exact_div(x: jax.Array, d: jax.Array) -> jax.Array:
    """x / d correctly rounded (IEEE), with d broadcast to x's shape.

    XLA rewrites a division by a broadcast into a multiplication by a reciprocal, which
    rounds differently (about 18% of float32 quotients on CPU); the optimization barrier
    keeps the true division that the format definitions ask for.
    """
    return x / jax.lax.optimization_barrier(jnp.broadcast_to(d, x.shape))


def check_input(x: jax.Array, axis: int) -> int:
    """Validates a float input and an axis; returns the axis made non-negative."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"quantize expects a real floating-point array, got dtype {x.dtype}")
    if x.ndim == 0:
        raise ValueError("quantize expects an array with at least one axis, got a scalar")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} is out of range for an array of shape {x.shape}")
    return axis % x.ndim


def group_size(fmt: Format, k: int) -> int:
    """Elements per scale along a contraction axis of length k."""
    return fmt.group_size if fmt.granularity == "group" else k


def to_blocks(x: jax.Array, axis: int, group: int) -> Float[Array, "*rest nb g"]:
    """Moves `axis` last, zero-pads it to a multiple of `group` and splits it into groups."""
    xm = jnp.moveaxis(x.astype(jnp.float32), axis, -1)
    k = xm.shape[-1]
    kp = -(-k // group) * group
    if kp != k:
        xm = jnp.pad(xm, [(0, 0)] * (xm.ndim - 1) + [(0, kp - k)])
    return xm.reshape(*xm.shape[:-1], kp // group, group)


def from_blocks(xb: Float[Array, "*rest nb g"], axis: int, shape: tuple[int, ...]) -> jax.Array:
    """Inverse of `to_blocks`: crops the padding and puts the axis back."""
    xm = xb.reshape(*xb.shape[:-2], -1)[..., : shape[axis]]
    return jnp.moveaxis(xm, -1, axis)


def pack_nibbles(codes: jax.Array) -> jax.Array:
    """Packs 4-bit codes (uint8 < 16) two per byte along the last axis (padded to even)."""
    if codes.shape[-1] % 2:
        codes = jnp.pad(codes, [(0, 0)] * (codes.ndim - 1) + [(0, 1)])
    pairs = codes.reshape(*codes.shape[:-1], -1, 2).astype(jnp.uint8)
    return pairs[..., 0] | (pairs[..., 1] << 4)


def unpack_nibbles(packed: jax.Array, n: int) -> jax.Array:
    """Inverse of `pack_nibbles`: the first n 4-bit codes of each row, as uint8."""
    both = jnp.stack([packed & 0xF, packed >> 4], axis=-1)
    return both.reshape(*packed.shape[:-1], -1)[..., :n]


def _nonzero(scale: jax.Array) -> jax.Array:
    """A computed scale, or 1 where it is zero: an all-zero group, or a scale so small that
    it is a float32 subnormal, which XLA:CPU flushes to zero (the group then encodes as 0)."""
    return jnp.where(scale > 0, scale, 1.0)


def _amax(xb: jax.Array, fmt: Format) -> jax.Array:
    """Per-group absolute max (*rest, nb), or per-tensor with all axes kept as size 1."""
    a = jnp.max(jnp.abs(xb), axis=-1)
    if fmt.granularity == "tensor":
        a = jnp.max(a, keepdims=True)
    return a


def mx_scale_exponent(amax: jax.Array, fmt: Format) -> jax.Array:
    """The shared exponent e of MX blocks (scale 2^e), int32, per FORMATS.md and its modes.

    floor: floor(log2 amax) - emax_elem; ceil: ceil(log2(amax) - emax_elem); even: amax
    rounded to the element's mantissa width first, then floor; rceil: ceil(log2(amax /
    max_elem)). All-zero blocks get the smallest scale; clamped to [-127, 127].
    """
    if fmt.element == "int8":
        emax, max_elem, mbits = 0, _MXINT8_MAX, 6
    else:
        elem = el.element_format(fmt.element)
        emax, max_elem, mbits = elem.emax, elem.max_normal, elem.mbits
    a = jnp.where(jnp.isfinite(amax) & (amax > 0), amax, 1.0)
    _, fe = jnp.frexp(a)
    floor_log2 = fe.astype(jnp.int32) - 1
    exact_pow2 = jnp.ldexp(jnp.float32(1.0), floor_log2) == a
    if fmt.scale_mode == "floor":
        e = floor_log2 - emax
    elif fmt.scale_mode == "ceil":
        e = jnp.where(exact_pow2, floor_log2, floor_log2 + 1) - emax
    elif fmt.scale_mode == "even":
        r = jnp.ldexp(jnp.round(jnp.ldexp(a, mbits - floor_log2)), floor_log2 - mbits)
        _, re = jnp.frexp(r)
        e = re.astype(jnp.int32) - 1 - emax
    else:  # rceil: the smallest e with amax / 2^e <= max_elem
        ratio = a / max_elem
        _, rf = jnp.frexp(ratio)
        rl = rf.astype(jnp.int32) - 1
        e = jnp.where(jnp.ldexp(jnp.float32(1.0), rl) == ratio, rl, rl + 1)
    return jnp.where(amax > 0, jnp.clip(e, -127, 127), -127)


def _quantize_blocks(xb: jax.Array, fmt: Format) -> dict:
    """Stored arrays of one format from blocks (*rest, nb, g) of float32."""
    kind = fmt.kind
    if kind == "cast":
        return {"codes": xb.astype(jnp.dtype(fmt.element))}
    if kind == "hif8":
        from effjax.formats.hifloat import hif8_encode

        return {"codes": hif8_encode(xb, saturate=fmt.saturate)}
    if kind == "hif4":
        from effjax.formats.hifloat import hif4_quantize_units

        codes, scale, levels = hif4_quantize_units(xb)
        lv = levels.astype(jnp.uint32)
        level_bytes = jnp.stack([(lv >> (8 * i)) & 0xFF for i in range(3)], -1).astype(jnp.uint8)
        return {"codes": codes, "scale": scale, "levels": level_bytes}
    amax = _amax(xb, fmt)
    if kind == "int":
        levels = 2**fmt.bits
        if fmt.symmetric:
            qmax = levels // 2 - 1
            scale = _nonzero(exact_div(amax, jnp.float32(qmax)))
            q = jnp.clip(jnp.round(exact_div(xb, scale[..., None])), -qmax, qmax)
            return {"codes": q.astype(jnp.int8), "scale": scale}
        lo, hi = jnp.min(xb, axis=-1), jnp.max(xb, axis=-1)
        if fmt.granularity == "tensor":
            lo, hi = jnp.min(lo, keepdims=True), jnp.max(hi, keepdims=True)
        scale = _nonzero(exact_div(hi - lo, jnp.float32(levels - 1)))
        zero = jnp.clip(jnp.round(exact_div(-lo, scale)), 0, levels - 1)
        q = jnp.clip(jnp.round(exact_div(xb, scale[..., None])) + zero[..., None], 0, levels - 1)
        return {"codes": q.astype(jnp.uint8), "scale": scale, "zero_point": zero}
    if kind == "fp8":
        elem = el.element_format(fmt.element)
        scale = _nonzero(exact_div(amax, jnp.float32(elem.max_normal)))
        v = el.round_to_element(exact_div(xb, scale[..., None]), elem)
        return {"codes": el.to_storage(v, elem), "scale": scale}
    if kind == "mx":
        e = mx_scale_exponent(amax, fmt)
        scale = el.encode_e8m0(e, nan=~jnp.isfinite(amax))
        v = jnp.ldexp(xb, -e[..., None])
        if fmt.element == "int8":
            q = jnp.clip(jnp.round(v * 64), -127, 127).astype(jnp.int8)
            return {"codes": q, "scale": scale}
        elem = el.element_format(fmt.element)
        return {"codes": el.to_storage(el.round_to_element(v, elem), elem), "scale": scale}
    # nvfp4
    elem = el.element_format("e2m1")
    if fmt.two_level:
        tensor_amax = jnp.max(amax)
        g = _nonzero(tensor_amax / jnp.float32(_E4M3_MAX * _FP4_MAX))
    else:
        g = jnp.float32(1.0)
    block = jnp.clip(exact_div(exact_div(amax, jnp.float32(_FP4_MAX)), g), _E4M3_MIN_SUB,
                     _E4M3_MAX)
    block = el.round_to_element(block, el.ELEMENTS["e4m3"])
    v = jnp.clip(exact_div(xb, (g * block)[..., None]), -_FP4_MAX, _FP4_MAX)
    out = {"codes": el.encode_element(v, elem), "scale": block.astype(jnp.float8_e4m3fn)}
    if fmt.two_level:
        out["global_scale"] = g.astype(jnp.float32)
    return out


def _dequantize_blocks(q: QArray, nb: int, group: int) -> jax.Array:
    """float32 blocks (*rest, nb, g) from a QArray's stored arrays."""
    fmt, codes = q.fmt, q.codes
    if fmt.bits == 4:
        codes = unpack_nibbles(codes, nb * group)
    codes = codes.reshape(*codes.shape[:-1], nb, group)
    kind = fmt.kind
    if kind == "cast":
        return codes.astype(jnp.float32)
    if kind == "hif8":
        from effjax.formats.hifloat import hif8_decode

        return hif8_decode(codes)
    if kind == "hif4":
        from effjax.formats.hifloat import hif4_dequantize_units

        lv = q.levels.astype(jnp.uint32)
        levels = lv[..., 0] | (lv[..., 1] << 8) | (lv[..., 2] << 16)
        return hif4_dequantize_units(codes, q.scale, levels)
    if kind == "int":
        if fmt.bits == 4 and fmt.symmetric:  # stored as two's-complement nibbles
            codes = jnp.where(codes >= 8, codes.astype(jnp.int32) - 16, codes.astype(jnp.int32))
        v = codes.astype(jnp.float32)
        if q.zero_point is not None:
            v = v - q.zero_point[..., None]
        return v * q.scale[..., None]
    if kind == "fp8":
        elem = el.element_format(fmt.element)
        return el.from_storage(codes, elem) * q.scale[..., None]
    if kind == "mx":
        # ldexp rather than a product with the decoded scale: 2^-127 is a float32
        # subnormal, which XLA:CPU would flush to zero as an operand.
        code = q.scale.astype(jnp.int32)[..., None]
        if fmt.element == "int8":
            v = jnp.ldexp(codes.astype(jnp.float32), code - el.E8M0_BIAS - 6)
        else:
            v = jnp.ldexp(el.from_storage(codes, el.element_format(fmt.element)),
                          code - el.E8M0_BIAS)
        return jnp.where(code == 255, jnp.nan, v)
    v = el.decode_element(codes, el.ELEMENTS["e2m1"]) * q.scale.astype(jnp.float32)[..., None]
    return v if q.global_scale is None else v * q.global_scale


def quantize(x: jax.Array, fmt: str | Format, axis: int = -1, **options) -> QArray:
    """Quantizes x to a format along its contraction axis.

    Args:
      x: a real floating-point array.
      fmt: a format name (`effjax.formats.names()`) or a `Format`.
      axis: the contraction axis (blocks and groups run along it).
      **options: `Format` options (granularity, group_size, symmetric, scale_mode,
        two_level, saturate).

    Returns:
      A `QArray`.
    """
    fmt = get_format(fmt, **options)
    axis = check_input(x, axis)
    group = group_size(fmt, x.shape[axis])
    xb = to_blocks(x, axis, group)
    stored = _quantize_blocks(xb, fmt)
    codes = stored["codes"].reshape(*xb.shape[:-2], -1)
    if fmt.bits == 4:
        if fmt.kind == "int" and fmt.symmetric:
            codes = codes.astype(jnp.uint8) & 0xF  # two's-complement nibbles
        codes = pack_nibbles(codes)
    return QArray(codes=codes, scale=stored.get("scale"), global_scale=stored.get("global_scale"),
                  zero_point=stored.get("zero_point"), levels=stored.get("levels"), fmt=fmt,
                  axis=axis, shape=tuple(x.shape), dtype=jnp.dtype(x.dtype).name)


def dequantize(q: QArray, dtype=None) -> jax.Array:
    """The array a QArray stands for.

    Args:
      q: the `QArray`.
      dtype: output dtype (default: the dtype that was quantized).

    Returns:
      An array of shape `q.shape`.
    """
    group = group_size(q.fmt, q.shape[q.axis])
    nb = -(-q.shape[q.axis] // group)
    xb = _dequantize_blocks(q, nb, group)
    return from_blocks(xb, q.axis, q.shape).astype(dtype or q.dtype)

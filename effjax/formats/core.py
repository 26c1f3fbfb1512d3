"""quantize / dequantize for every format, over a chosen contraction axis.

Non-finite inputs follow the policy in the `effjax.formats` docstring: block formats
make a block holding NaN or +-Inf NaN as a whole (its scale is NaN); scaled formats (INT,
FP8) take their scales from the finite values and keep the damage to the value itself.
"""

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


def _barrier(x, barriers: bool):
    """x behind an optimization barrier, or x itself when `barriers` is False."""
    return jax.lax.optimization_barrier(x) if barriers else x


def exact_div(x: jax.Array, d: jax.Array, *, barriers: bool = True) -> jax.Array:
    """x / d correctly rounded (IEEE), with d broadcast to x's shape.

    Under jit, XLA rewrites a division by a broadcast or a constant into a multiplication
    by a reciprocal, which rounds differently (about 18% of float32 quotients on CPU); the
    optimization barrier keeps the true division that the format definitions ask for, so
    jitted and eager quantization agree bit for bit. (Under vmap a scalar d stays scalar
    and the rewrite comes back: vmapped per-tensor scales may differ by an ulp.)

    Args:
      x: the dividend.
      d: the divisor, broadcastable to x's shape.
      barriers: put the operands behind an optimization barrier. False for the body of a
        compiled Pallas kernel, whose lowerings lack the barrier (exactness is then the
        kernel compiler's); interpret mode runs through XLA and keeps it.

    Returns:
      x / d, shaped like x.
    """
    x, d = _barrier((x, jnp.broadcast_to(d, x.shape)), barriers)
    return x / d


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
    """Elements per scale along a contraction axis of length k (1 for an empty axis, which
    then holds no groups)."""
    return fmt.group_size if fmt.granularity == "group" else max(k, 1)


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
    xm = xb.reshape(*xb.shape[:-2], xb.shape[-2] * xb.shape[-1])[..., : shape[axis]]
    return jnp.moveaxis(xm, -1, axis)


def pack_nibbles(codes: jax.Array) -> jax.Array:
    """Packs 4-bit codes (uint8 < 16) two per byte along the last axis (padded to even):
    byte j holds code 2j in its low nibble and code 2j + 1 in its high nibble.

    The pairs are read as one little-endian uint16 each: XLA:CPU then keeps the fused
    quantizer vectorized, where slicing the pairs apart makes it scalar (over 10x slower).
    """
    if codes.shape[-1] % 2:
        codes = jnp.pad(codes, [(0, 0)] * (codes.ndim - 1) + [(0, 1)])
    pairs = codes.astype(jnp.uint8).reshape(*codes.shape[:-1], codes.shape[-1] // 2, 2)
    v = jax.lax.bitcast_convert_type(pairs, jnp.uint16)
    return ((v & 0xF) | ((v >> 4) & 0xF0)).astype(jnp.uint8)


def unpack_nibbles(packed: jax.Array, n: int) -> jax.Array:
    """Inverse of `pack_nibbles`: the first n 4-bit codes of each row, as uint8."""
    v = packed.astype(jnp.uint16)
    pairs = jax.lax.bitcast_convert_type((v & 0xF) | ((v & 0xF0) << 4), jnp.uint8)
    return pairs.reshape(*packed.shape[:-1], 2 * packed.shape[-1])[..., :n]


def pack_sextets(codes: jax.Array) -> jax.Array:
    """Packs 6-bit codes (uint8 < 64) four per three bytes along the last axis (padded to
    a multiple of 4): codes c0..c3 form the little-endian 24-bit word c0 | c1 << 6 |
    c2 << 12 | c3 << 18."""
    if codes.shape[-1] % 4:
        codes = jnp.pad(codes, [(0, 0)] * (codes.ndim - 1) + [(0, -codes.shape[-1] % 4)])
    quads = codes.astype(jnp.uint8).reshape(*codes.shape[:-1], codes.shape[-1] // 4, 4)
    v = jax.lax.bitcast_convert_type(quads, jnp.uint32)
    word = (v & 0x3F) | ((v >> 2) & 0xFC0) | ((v >> 4) & 0x3F000) | ((v >> 6) & 0xFC0000)
    three = jax.lax.bitcast_convert_type(word, jnp.uint8)[..., :3]
    return three.reshape(*codes.shape[:-1], codes.shape[-1] // 4 * 3)


def unpack_sextets(packed: jax.Array, n: int) -> jax.Array:
    """Inverse of `pack_sextets`: the first n 6-bit codes of each row, as uint8."""
    three = packed.reshape(*packed.shape[:-1], packed.shape[-1] // 3, 3)
    word = jax.lax.bitcast_convert_type(jnp.pad(three, [(0, 0)] * (three.ndim - 1) + [(0, 1)]),
                                        jnp.uint32)
    v = (word & 0x3F) | ((word & 0xFC0) << 2) | ((word & 0x3F000) << 4) | ((word & 0xFC0000) << 6)
    quads = jax.lax.bitcast_convert_type(v, jnp.uint8)
    return quads.reshape(*packed.shape[:-1], packed.shape[-1] // 3 * 4)[..., :n]


def pack_codes(codes: jax.Array, bits: int) -> jax.Array:
    """Element codes (*rest, k) in their stored form: 4-bit codes two per byte, 6-bit codes
    four per three bytes, wider codes as they are."""
    if bits == 4:
        return pack_nibbles(codes)
    if bits == 6:
        return pack_sextets(codes)
    return codes


def unpack_codes(packed: jax.Array, bits: int, n: int) -> jax.Array:
    """Inverse of `pack_codes`: the first n codes of each row."""
    if bits == 4:
        return unpack_nibbles(packed, n)
    if bits == 6:
        return unpack_sextets(packed, n)
    return packed


def _nonzero(scale: jax.Array) -> jax.Array:
    """A computed scale, or 1 where it is zero: an all-zero group, or a scale so small that
    it is a float32 subnormal, which XLA:CPU flushes to zero (the group then encodes as 0)."""
    return jnp.where(scale > 0, scale, 1.0)


def _amax(xb: jax.Array, fmt: Format, *, finite: bool = False) -> jax.Array:
    """Per-group absolute max (*rest, nb), or per-tensor with all axes kept as size 1 (0
    for an empty tensor). NaN or Inf where a group holds a non-finite value; `finite` says
    the caller already replaced those (no NaN search)."""
    # XLA:CPU's vectorized max may drop a NaN (max(NaN, x) = x in some lanes), so a NaN is
    # found by a max over 0/1 flags (no boolean reduction: Pallas' Triton lowering has none).
    def with_nan(amax, x, **kw):
        if finite:
            return amax
        return jnp.where(jnp.max(jnp.isnan(x).astype(jnp.float32), **kw) > 0, jnp.nan, amax)

    a = with_nan(jnp.max(jnp.abs(xb), axis=-1), xb, axis=-1)
    if fmt.granularity == "tensor":
        a = with_nan(jnp.max(a, keepdims=True, initial=0.0), a, keepdims=True, initial=0.0)
    return a


def finite_or_zero(x: jax.Array) -> jax.Array:
    """x with NaN and +-Inf replaced by 0: what the scales of INT and FP8 are computed from."""
    return jnp.where(jnp.isfinite(x), x, 0.0)


def _log2_bits(a: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """For positive finite float32 a (subnormals included), from the bits alone:
    (floor(log2 a), whether a is a power of two, the integer significand and the bit
    position of its leading one)."""
    bits = jax.lax.bitcast_convert_type(a, jnp.int32)
    exp_field = (bits >> 23) & 0xFF
    mant = bits & 0x7FFFFF
    lead = jnp.where(exp_field == 0, 31 - jax.lax.clz(mant), 23)
    floor_log2 = jnp.where(exp_field == 0, lead - 149, exp_field - 127)
    sig = jnp.where(exp_field == 0, mant, mant | 0x800000)
    return floor_log2, (sig & (sig - 1)) == 0, sig, lead


def mx_scale_exponent(amax: jax.Array, fmt: Format, *, barriers: bool = True) -> jax.Array:
    """The shared exponent e of MX blocks (scale 2^e), int32, per FORMATS.md and its modes.

    floor: floor(log2 amax) - emax_elem; ceil: ceil(log2(amax) - emax_elem); even: amax
    rounded to the element's mantissa width first (RNE), then floor; rceil: ceil(log2(amax
    / max_elem)). All-zero blocks get the smallest scale; clamped to [-127, 127]. Works on
    the float32 bits (exact for subnormal amax, no ldexp / frexp).

    Args:
      amax: per-block absolute maxima.
      fmt: an MX `Format`.
      barriers: as in `exact_div` (rceil divides).

    Returns:
      int32 exponents shaped like amax.
    """
    if fmt.element == "int8":
        emax, max_elem, mbits = 0, _MXINT8_MAX, 6
    else:
        elem = el.element_format(fmt.element)
        emax, max_elem, mbits = elem.emax, elem.max_normal, elem.mbits
    a = jnp.where(jnp.isfinite(amax) & (amax > 0), amax, 1.0)
    floor_log2, pow2, sig, lead = _log2_bits(a)
    if fmt.scale_mode == "floor":
        e = floor_log2 - emax
    elif fmt.scale_mode == "ceil":
        e = jnp.where(pow2, floor_log2, floor_log2 + 1) - emax
    elif fmt.scale_mode == "even":
        # Keep mbits bits after the leading one, ties to even; a carry adds one octave.
        shift = jnp.maximum(lead - mbits, 1)
        rounded = (sig + (1 << (shift - 1)) - 1 + ((sig >> shift) & 1)) >> shift
        carry = (lead > mbits) & (rounded >= 1 << (mbits + 1))
        e = floor_log2 + carry.astype(jnp.int32) - emax
    else:  # rceil: the smallest e with amax / 2^e <= max_elem
        ratio = exact_div(a, jnp.float32(max_elem), barriers=barriers)
        rl, rpow2, _, _ = _log2_bits(ratio)
        e = jnp.where(rpow2, rl, rl + 1)
    return jnp.where(amax > 0, jnp.clip(e, -127, 127), -127)


def nvfp4_global_scale(amax: jax.Array, *, barriers: bool = True) -> jax.Array:
    """NVFP4's per-tensor scale amax / (448 * 6), correctly rounded (1 where amax is 0).

    Args:
      amax: the tensor's finite absolute maximum.
      barriers: as in `exact_div`.

    Returns:
      float32 scale shaped like amax.
    """
    return _nonzero(exact_div(amax, jnp.float32(_E4M3_MAX * _FP4_MAX), barriers=barriers))


def grid_values(xb: Float[Array, "*rest nb g"], fmt: Format,
                global_scale: jax.Array | None = None, *,
                barriers: bool = True) -> tuple[Float[Array, "*rest nb g"], dict]:
    """Quantizes blocks (*rest, nb, g) of float32.

    Args:
      xb: float32 blocks.
      fmt: the `Format`.
      global_scale: two-level NVFP4's per-tensor scale when the blocks are only part of
        the tensor (a kernel's tile); by default it is computed from the blocks.
      barriers: as in `exact_div`.

    Returns:
      (elements: float32 values on the element grid, before scaling; the stored scale
      arrays: "scale", and "global_scale" / "zero_point" / "levels" where the format has
      them). For HiF4 the elements are the signed 4-bit codes' values k/4.
    """
    kind = fmt.kind
    if kind == "cast":
        return xb.astype(jnp.dtype(fmt.element)).astype(jnp.float32), {}
    if kind == "hif8":
        from effjax.formats.hifloat import hif8_round

        return hif8_round(xb, saturate=fmt.saturate), {}
    if kind == "hif4":
        from effjax.formats.hifloat import hif4_quantize_units

        codes, scale, levels = hif4_quantize_units(xb)
        return decode_elements(codes, fmt), {"scale": scale, "levels": level_bytes(levels)}
    stored = block_scales(xb, fmt, global_scale, barriers=barriers)
    return elements_given(xb, stored, fmt, barriers=barriers), stored


def block_scales(xb: Float[Array, "*rest nb g"], fmt: Format,
                 global_scale: jax.Array | None = None, *, barriers: bool = True) -> dict:
    """The stored scale arrays of blocks (*rest, nb, g) of float32 (not HiF4, HiF8, casts):
    "scale", and "global_scale" / "zero_point" where the format has them.

    Scales of INT and FP8 come from the finite values (an asymmetric INT group holding a
    non-finite value gets a NaN scale); MX and NVFP4 blocks holding one get a NaN scale;
    NVFP4's per-tensor scale comes from the finite values.

    Args:
      xb: float32 blocks.
      fmt: the `Format`.
      global_scale: as in `grid_values`.
      barriers: as in `exact_div` (also keeps each block's max materialized).

    Returns:
      The scale arrays by name: per-group ones (*rest, nb) (per-tensor: all axes of size
      1), NVFP4's global scale a scalar.
    """
    kind = fmt.kind
    if kind == "int":
        levels = 2**fmt.bits
        xf = finite_or_zero(xb)
        if fmt.symmetric:
            # Materialized once: fused into its consumers, XLA:CPU may recompute each
            # group's max for every element.
            amax = _barrier(_amax(xf, fmt, finite=True), barriers)
            return {"scale": _nonzero(exact_div(amax, jnp.float32(levels // 2 - 1),
                                                  barriers=barriers))}
        lo, hi = jnp.min(xf, axis=-1), jnp.max(xf, axis=-1)
        if fmt.granularity == "tensor":
            lo = jnp.min(lo, keepdims=True, initial=jnp.inf)  # initial: empty tensors
            hi = jnp.max(hi, keepdims=True, initial=-jnp.inf)
        scale = _nonzero(exact_div(hi - lo, jnp.float32(levels - 1), barriers=barriers))
        zero = jnp.clip(el.round_half_even(exact_div(-lo, scale, barriers=barriers)), 0,
                        levels - 1)
        # Every code is a value: a non-finite element can only live in a NaN scale.
        scale = jnp.where(jnp.isfinite(_amax(xb, fmt)), scale, jnp.nan)
        return {"scale": scale, "zero_point": zero}
    if kind == "fp8":
        amax = _barrier(_amax(finite_or_zero(xb), fmt, finite=True), barriers)
        elem = el.element_format(fmt.element)
        return {"scale": _nonzero(exact_div(amax, jnp.float32(elem.max_normal),
                                              barriers=barriers))}
    amax = _barrier(_amax(xb, fmt), barriers)
    finite = jnp.isfinite(amax)
    if kind == "mx":
        exponent = mx_scale_exponent(amax, fmt, barriers=barriers)
        return {"scale": el.encode_e8m0(exponent, nan=~finite)}
    # nvfp4
    if not fmt.two_level:
        g = jnp.float32(1.0)
    elif global_scale is None:
        g = nvfp4_global_scale(jnp.max(jnp.abs(finite_or_zero(xb)), initial=0.0),
                               barriers=barriers)
    else:
        g = global_scale
    block = exact_div(exact_div(amax, jnp.float32(_FP4_MAX), barriers=barriers), g,
                      barriers=barriers)
    block = jnp.clip(block, _E4M3_MIN_SUB, _E4M3_MAX)
    block = jnp.where(finite, block, jnp.nan)  # clip would saturate an Inf block to 448
    stored = {"scale": el.round_to_element(block, el.ELEMENTS["e4m3"]).astype(jnp.float8_e4m3fn)}
    if fmt.two_level:
        stored["global_scale"] = g.astype(jnp.float32)
    return stored


def elements_given(xb: Float[Array, "*rest nb g"], stored: dict, fmt: Format, *,
                   barriers: bool = True) -> Float[Array, "*rest nb g"]:
    """Element values of blocks (*rest, nb, g) under fixed stored scales (*rest, nb) (as
    `block_scales` or a QArray holds them): the rounding step of quantization alone, e.g.
    for GPTQ, which fixes a block's scales when it reaches the block and rounds column by
    column. For HiF4 the stored levels are used as they are.

    Args:
      xb: float32 blocks.
      stored: the stored scale arrays by name.
      fmt: the `Format`.
      barriers: as in `exact_div`.

    Returns:
      float32 values on the element grid, before scaling.
    """
    kind = fmt.kind
    if kind == "hif4":
        from effjax.formats.hifloat import hif4_elements

        return hif4_elements(xb, stored["scale"], level_word(stored["levels"]))
    scale = stored["scale"][..., None]
    if kind == "int":
        levels = 2**fmt.bits
        if fmt.symmetric:  # NaN and +-Inf (INT has no Inf) become NaN
            qmax = levels // 2 - 1
            q = jnp.clip(el.round_half_even(exact_div(xb, scale, barriers=barriers)), -qmax, qmax)
            return jnp.where(jnp.isfinite(xb), q, jnp.nan)
        q = el.round_half_even(exact_div(xb, scale, barriers=barriers))
        q = q + stored["zero_point"][..., None]
        return jnp.clip(q, 0, levels - 1)
    if kind == "fp8":  # NaN stays NaN; +-Inf too in E5M2, which has it, NaN in E4M3
        elem = el.element_format(fmt.element)
        v = el.round_to_element(exact_div(xb, scale, barriers=barriers), elem)
        return jnp.where(jnp.isinf(xb), xb if elem.specials == "ieee" else jnp.nan, v)
    if kind == "mx":
        code = scale.astype(jnp.int32)
        e = jnp.where(code == 255, 0, code - el.E8M0_BIAS)  # NaN blocks decode to NaN anyway
        v = el.mul_pow2(xb, -e)
        if fmt.element == "int8":
            return jnp.clip(el.round_half_even(v * 64), -127, 127)
        return el.round_to_element(v, el.element_format(fmt.element))
    g = stored.get("global_scale", jnp.float32(1.0))  # nvfp4
    v = jnp.clip(exact_div(xb, g * scale.astype(jnp.float32), barriers=barriers), -_FP4_MAX,
                 _FP4_MAX)
    return el.round_to_element(v, el.ELEMENTS["e2m1"])


def level_bytes(levels: jax.Array) -> jax.Array:
    """HiF4's packed uint32 level word per unit -> its three stored bytes (*rest, 3)."""
    lv = levels.astype(jnp.uint32)
    return jnp.stack([(lv >> (8 * i)) & 0xFF for i in range(3)], -1).astype(jnp.uint8)


def level_word(stored: jax.Array) -> jax.Array:
    """Inverse of `level_bytes`."""
    lv = stored.astype(jnp.uint32)
    return lv[..., 0] | (lv[..., 1] << 8) | (lv[..., 2] << 16)


def encode_elements(elements: jax.Array, fmt: Format) -> jax.Array:
    """Element values -> stored codes (unpacked; 4-bit codes as uint8 < 16)."""
    kind = fmt.kind
    if kind == "cast":
        return elements.astype(jnp.dtype(fmt.element))
    if kind == "hif8":
        from effjax.formats.hifloat import hif8_encode

        return hif8_encode(elements, saturate=fmt.saturate)
    if kind == "hif4":  # sign in bit 3, magnitude k = |value| * 4 in bits 0-2
        k = (jnp.abs(elements) * 4).astype(jnp.uint8)
        return k | jnp.where(elements < 0, jnp.uint8(8), jnp.uint8(0))
    if kind == "int":
        nan = jnp.isnan(elements)
        if not fmt.symmetric:  # NaN elements only occur under a NaN scale
            return jnp.where(nan, 0.0, elements).astype(jnp.uint8)
        # NaN takes the code -2^(bits-1), which the symmetric clamp leaves unused.
        q = jnp.where(nan, -(2.0 ** (fmt.bits - 1)), elements).astype(jnp.int8)
        return q.astype(jnp.uint8) & 0xF if fmt.bits == 4 else q  # two's-complement nibbles
    if fmt.element == "int8":
        return elements.astype(jnp.int8)
    return el.to_storage(elements, el.element_format(fmt.element))


def decode_elements(codes: jax.Array, fmt: Format) -> jax.Array:
    """Stored codes (unpacked) -> float32 element values (inverse of `_encode`)."""
    kind = fmt.kind
    if kind == "cast":
        return codes.astype(jnp.float32)
    if kind == "hif8":
        from effjax.formats.hifloat import hif8_decode

        return hif8_decode(codes)
    if kind == "hif4":
        mag = (codes & 7).astype(jnp.float32) / 4
        return el.signed(mag, (codes & 8) > 0)
    if kind == "int":
        if not fmt.symmetric:
            return codes.astype(jnp.float32)
        c = codes.astype(jnp.int32)
        if fmt.bits == 4:
            c = jnp.where(c >= 8, c - 16, c)
        return jnp.where(c == -(2 ** (fmt.bits - 1)), jnp.nan, c.astype(jnp.float32))
    if fmt.element == "int8":
        return codes.astype(jnp.float32)
    return el.from_storage(codes, el.element_format(fmt.element))


def apply_scale(elements: jax.Array, stored: dict, fmt: Format) -> jax.Array:
    """Element values (*rest, nb, g) times their scales: the dequantized float32 blocks."""
    kind = fmt.kind
    if kind in ("cast", "hif8"):
        return elements
    if kind == "hif4":
        from effjax.formats.hifloat import hif4_dequantize_units

        return hif4_dequantize_units(encode_elements(elements, fmt), stored["scale"],
                                     level_word(stored["levels"]))
    if kind == "mx":
        # Powers of two from the bits rather than a product with the decoded scale:
        # 2^-127 is a float32 subnormal, which XLA:CPU would flush to zero as an operand.
        code = stored["scale"].astype(jnp.int32)[..., None]
        shift = 6 if fmt.element == "int8" else 0
        v = el.mul_pow2(elements, code - el.E8M0_BIAS - shift)
        return jnp.where(code == 255, jnp.nan, v)
    scale = stored["scale"].astype(jnp.float32)[..., None]
    if stored.get("zero_point") is not None:
        elements = elements - stored["zero_point"][..., None]
    v = elements * scale
    return v * stored["global_scale"] if stored.get("global_scale") is not None else v


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
    xb = to_blocks(x, axis, group_size(fmt, x.shape[axis]))
    elements, stored = grid_values(xb, fmt)
    return assemble(elements, stored, fmt, axis, tuple(x.shape), x.dtype)


def assemble(elements: jax.Array, stored: dict, fmt: Format, axis: int,
             shape: tuple[int, ...], dtype) -> QArray:
    """The QArray holding element values (*rest, nb, g) and their stored scale arrays.

    Args:
      elements: values on the element grid (as `grid_values` / `elements_given` return).
      stored: "scale" and "global_scale" / "zero_point" / "levels" where the format has them.
      fmt: the `Format`.
      axis, shape, dtype: the contraction axis, shape and dtype of the quantized array.
    """
    rows = elements.shape[:-2]
    codes = pack_codes(encode_elements(elements, fmt).reshape(
        *rows, elements.shape[-2] * elements.shape[-1]), fmt.bits)
    return QArray(codes=codes, scale=stored.get("scale"), global_scale=stored.get("global_scale"),
                  zero_point=stored.get("zero_point"), levels=stored.get("levels"), fmt=fmt,
                  axis=axis, shape=shape, dtype=jnp.dtype(dtype).name)


def max_code(fmt: Format) -> float | int | None:
    """The (unpacked) element code of the largest positive value, or None if unbounded."""
    kind = fmt.kind
    if kind == "cast":
        return None
    if kind == "hif8":
        return 0x6E if fmt.saturate else None
    if kind == "int":
        top = 2**fmt.bits - 1 if not fmt.symmetric else 2 ** (fmt.bits - 1) - 1
        return top
    if kind == "hif4" or fmt.element == "e2m1":
        return 7  # magnitude 7 (E2M1: 6.0; HiF4: 1.75)
    if fmt.element == "int8":
        return 127
    elem = el.element_format(fmt.element)
    if elem.storage is None:
        return int(el.encode_element(jnp.float32(elem.max_normal), elem))
    return elem.max_normal


def padded_length(q: QArray) -> int:
    """Length of q's contraction axis padded to whole groups (the unpacked codes' last axis)."""
    group = group_size(q.fmt, q.shape[q.axis])
    return -(-q.shape[q.axis] // group) * group


def filled_dtype(fmt: Format):
    """The dtype of a format's unpacked codes."""
    if fmt.bits in (4, 6) or (fmt.kind == "int" and not fmt.symmetric):
        return jnp.uint8
    if fmt.kind in ("cast", "fp8") or (fmt.kind == "mx" and fmt.element in ("e4m3", "e5m2")):
        return jnp.dtype(fmt.element if fmt.kind == "cast" else el.element_format(
            fmt.element).storage)
    return jnp.uint8 if fmt.kind == "hif8" else jnp.int8


def filled_codes(q: QArray, code: float | int) -> jax.Array:
    """Codes in q's stored form (dtype, packing) with every element's code equal to `code`."""
    return pack_codes(jnp.full((*q.codes.shape[:-1], padded_length(q)), code,
                               filled_dtype(q.fmt)), q.fmt.bits)


def codes_to_values(codes: jax.Array, stored: dict, fmt: Format, k: int,
                    unpack=unpack_codes) -> jax.Array:
    """Stored codes (*rest, packed) of k padded elements per row, decoded and scaled by the
    arrays in `stored` ("scale", "zero_point", "levels", "global_scale" where given):
    float32 (*rest, k // group, group). `unpack(codes, bits, k)` undoes the packing."""
    group = group_size(fmt, k)
    elements = decode_elements(unpack(codes, fmt.bits, k), fmt)
    return apply_scale(elements.reshape(*elements.shape[:-1], k // group, group), stored, fmt)


def dequantize(q: QArray, dtype=None) -> jax.Array:
    """The array a QArray stands for.

    Args:
      q: the `QArray`.
      dtype: output dtype (default: the dtype that was quantized).

    Returns:
      An array of shape `q.shape`.
    """
    values = codes_to_values(q.codes, q.stored(), q.fmt, padded_length(q))
    return from_blocks(values, q.axis, q.shape).astype(dtype or q.dtype)


def quantize_dequantize(x: jax.Array, fmt: Format, axis: int) -> jax.Array:
    """dequantize(quantize(x)) computed without encoding codes (the fake-quant forward)."""
    xb = to_blocks(x, axis, group_size(fmt, x.shape[axis]))
    elements, stored = grid_values(xb, fmt)
    return from_blocks(apply_scale(elements, stored, fmt), axis, x.shape).astype(x.dtype)


def block_values(x: jax.Array, fmt: Format, axis: int) -> tuple[jax.Array, jax.Array | None]:
    """Quantized blocks of x without the NVFP4 global scale, and that scale (or None).

    Returns:
      (float32 (*rest, k_padded) with `axis` moved last, global scale or None).
    """
    xb = to_blocks(x, axis, group_size(fmt, x.shape[axis]))
    elements, stored = grid_values(xb, fmt)
    g = stored.pop("global_scale", None)
    values = apply_scale(elements, stored, fmt)
    return values.reshape(*values.shape[:-2], values.shape[-2] * values.shape[-1]), g

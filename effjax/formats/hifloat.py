"""HiFloat formats: HiF8 (tapered 8-bit float) and HiF4 (hierarchically scaled 4-bit units).

Definitions: `FORMATS.md`, sections "HiF8" and "HiF4". Everything is float32 emulation with
exact arithmetic where the definition asks for exactness (power-of-two scalings, bit-level
exponent extraction, round-half-up done as `floor` plus an exact fraction test).

HiF8 (one byte): bit 7 sign, then a prefix-coded Dot field giving the exponent width D, a
sign-magnitude exponent field with an implicit leading 1, then the mantissa:

    Dot  D  exp bits  mant bits  exponents
    11   4  4         1          +-8 .. +-15
    10   3  3         2          +-4 .. +-7
    01   2  2         3          +-2, +-3
    001  1  1         3          +-1
    0001 0  0         3          0
    0000 denormal:    3 bits m   2^(m-23), m = 1..7

Specials: 0x00 = 0 (there is no -0), 0x80 = NaN, 0x6F / 0xEF = +-Inf. Finite range
[2^-22, 2^15]. Rounding is to nearest, ties away from zero (TA).

HiF4 (unit of 64 elements, viewed as 8 groups of 8, each 2 groups of 4): 4-bit sign-magnitude
elements k/4 (k = 0..7), a one-bit level-1 scale per group of 8, a one-bit level-2 scale per
group of 4, and an E6M2 unit scale. Decode: sign * k/4 * l1 * l2 * s. A unit holding a
NaN or +-Inf gets the NaN scale and decodes to NaN as a whole (the MX rule, see the
`effjax.formats` docstring).
"""

import functools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax import lax
from jaxtyping import Array, Float, UInt8, UInt32

from effjax.formats.elements import signed

__all__ = [
    "E6M2_BIAS",
    "E6M2_MAX",
    "E6M2_MIN",
    "E6M2_NAN",
    "HIF4_UNIT",
    "HIF8_INF",
    "HIF8_MAX",
    "HIF8_MIN",
    "HIF8_NAN",
    "e6m2_decode",
    "e6m2_encode",
    "hif4_dequantize_units",
    "hif4_elements",
    "hif4_pack_levels",
    "hif4_quantize_units",
    "hif4_unpack_levels",
    "hif8_decode",
    "hif8_encode",
    "hif8_round",
    "hif8_table",
]

HIF8_MAX = 32768.0  # 2^15, code 0x6E
HIF8_MIN = 2.0**-22  # smallest positive, code 0x01
HIF8_NAN = 0x80
HIF8_INF = 0x6F  # +Inf; -Inf is 0xEF
_HIF8_OVERFLOW = 40960.0  # 1.25 * 2^15: |x| >= this is Inf (or HIF8_MAX when saturating)
_HIF8_ZERO_BELOW = 2.0**-23  # |x| < this rounds to 0; [2^-23, 2^-22) rounds to 2^-22

E6M2_BIAS = 48
E6M2_MIN = 2.0**-48  # code 0x00
E6M2_MAX = 49152.0  # 1.5 * 2^15, code 0xFE
E6M2_NAN = 0xFF

HIF4_UNIT = 64
_INV7_BF16 = np.float32(ml_dtypes.bfloat16(1.0 / 7.0))  # bf16(1/7) = 0.142578125


# ---------------------------------------------------------------------------------------------
# helpers


def _as_float32(x, name: str) -> Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} must have a floating dtype (float32, bfloat16, ...), "
                         f"got {x.dtype}")
    return x.astype(jnp.float32)


def _as_int32_codes(codes, name: str) -> Array:
    codes = jnp.asarray(codes)
    if not jnp.issubdtype(codes.dtype, jnp.integer):
        raise ValueError(f"{name} must have an integer dtype (uint8 codes), got {codes.dtype}")
    return codes.astype(jnp.int32)


def _pow2(k: Array) -> Array:
    """Exactly 2^k as float32 for int32 k in [-126, 127] (built from the exponent bits)."""
    return lax.bitcast_convert_type(jnp.left_shift(k + 127, 23), jnp.float32)


def _exponent(a: Array) -> Array:
    """floor(log2(a)) for positive normal float32 a, exactly, from the exponent bits (int32).

    Zero and float32 subnormals give -127, Inf and NaN give 128.
    """
    bits = lax.bitcast_convert_type(a, jnp.int32)
    return (jnp.right_shift(bits, 23) & 0xFF) - 127


def _round_half_up(t: Array) -> Array:
    """floor(t + 0.5) for t >= 0, computed exactly (no rounding of the sum t + 0.5)."""
    n = jnp.floor(t)
    return n + (t - n >= 0.5).astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# HiF8


def _hif8_round_abs(a: Array, saturate: bool) -> Array:
    """HiF8 rounding (TA) of a = |x| (float32, NaN allowed)."""
    e = jnp.clip(_exponent(a), -23, 15)  # values outside [2^-23, 2^16) are handled below
    ae = jnp.abs(e)
    mbits = jnp.where(ae <= 3, 3, jnp.where(ae <= 7, 2, jnp.where(ae <= 15, 1, 0)))
    # a * 2^(mbits - e) lies in [2^mbits, 2^(mbits+1)): exact, and so is the product back.
    n = _round_half_up(a * _pow2(mbits - e))
    q = n * _pow2(e - mbits)  # a carry gives 2^(e+1), itself a HiF8 value (up to 2^15)
    # [2^-23, 2^-22) is the upper half of the gap (0, 2^-22): TA sends it to 2^-22.
    q = jnp.where(a < _HIF8_ZERO_BELOW, 0.0, jnp.maximum(q, HIF8_MIN))
    q = jnp.where(a >= _HIF8_OVERFLOW, HIF8_MAX if saturate else jnp.inf, q)
    return jnp.where(jnp.isnan(a), jnp.nan, q)


@functools.partial(jax.jit, static_argnames=("saturate",))
def hif8_round(x: Float[Array, "..."], *, saturate: bool = True) -> Float[Array, "..."]:
    """Rounds x to the HiF8 grid, to nearest with ties away from zero.

    Args:
      x: floating values of any shape (cast to float32 first).
      saturate: |x| >= 40960 (and +-Inf) become +-32768 (the largest finite HiF8 value);
        otherwise they become +-Inf.

    Returns:
      float32 values, each exactly a HiF8 value: |x| < 2^-23 gives +0 (HiF8 has no -0),
      2^-23 <= |x| < 2^-22 gives +-2^-22, NaN stays NaN.
    """
    x = _as_float32(x, "x")
    q = _hif8_round_abs(jnp.abs(x), saturate)
    return jnp.where((x < 0) & (q != 0), -q, q)


@functools.partial(jax.jit, static_argnames=("saturate",))
def hif8_encode(x: Float[Array, "..."], *, saturate: bool = True) -> UInt8[Array, "..."]:
    """Bit-exact HiF8 codes of x, rounded as in `hif8_round`.

    Args:
      x: floating values of any shape.
      saturate: see `hif8_round` (saturating gives 0x6E / 0xEE, otherwise 0x6F / 0xEF).

    Returns:
      uint8 codes of x's shape. NaN gives 0x80; zero, -0 and values rounding to 0 give 0x00.
    """
    x = _as_float32(x, "x")
    q = _hif8_round_abs(jnp.abs(x), saturate)
    finite_nz = jnp.isfinite(q) & (q > 0)
    qn = jnp.where(finite_nz, q, 1.0)
    e = _exponent(qn)
    ae = jnp.abs(e)
    # D = exponent-field width; Dot prefix value and length; mantissa width.
    d = jnp.where(ae == 0, 0, jnp.where(ae == 1, 1, jnp.where(ae <= 3, 2,
                                                             jnp.where(ae <= 7, 3, 4))))
    dot_val = jnp.asarray(np.array([1, 1, 1, 2, 3], np.int32))[d]
    dot_len = jnp.asarray(np.array([4, 3, 2, 2, 2], np.int32))[d]
    mbits = 7 - dot_len - d
    bits = lax.bitcast_convert_type(qn, jnp.int32)
    mant = jnp.right_shift(bits, 23 - mbits) & (jnp.left_shift(1, mbits) - 1)
    dm1 = jnp.maximum(d - 1, 0)
    exp_field = jnp.where(
        d == 0, 0, jnp.left_shift((e < 0).astype(jnp.int32), dm1) | (ae - jnp.left_shift(1, dm1)))
    normal = (jnp.left_shift(dot_val, 7 - dot_len) | jnp.left_shift(exp_field, mbits) | mant)
    denormal = e + 23  # 2^(m - 23), m = 1..7, Dot = 0000
    code = jnp.where(e < -15, denormal, normal)
    code = jnp.where(finite_nz, code, 0)
    code = jnp.where(jnp.isinf(q), HIF8_INF, code)
    code = code | jnp.where((x < 0) & (q > 0), 0x80, 0)
    code = jnp.where(jnp.isnan(q), HIF8_NAN, code)
    return code.astype(jnp.uint8)


def _hif8_value(code: int) -> float:
    """The value of one HiF8 code, from the bit fields (float64)."""
    if code == 0x00:
        return 0.0
    if code == HIF8_NAN:
        return float("nan")
    sign = -1.0 if code & 0x80 else 1.0
    body = code & 0x7F
    if body >> 5 == 0b11:
        d, dot_len = 4, 2
    elif body >> 5 == 0b10:
        d, dot_len = 3, 2
    elif body >> 5 == 0b01:
        d, dot_len = 2, 2
    elif body >> 4 == 0b001:
        d, dot_len = 1, 3
    elif body >> 3 == 0b0001:
        d, dot_len = 0, 4
    else:  # Dot 0000: denormal 2^(m - 23)
        return sign * 2.0 ** ((body & 0b111) - 23)
    mbits = 7 - dot_len - d
    mant = body & ((1 << mbits) - 1)
    exp_field = (body >> mbits) & ((1 << d) - 1)
    if d == 0:
        exp = 0
    else:
        magnitude = (1 << (d - 1)) + (exp_field & ((1 << (d - 1)) - 1))
        exp = -magnitude if exp_field >> (d - 1) else magnitude
    if exp == 15 and mant == 1:
        return sign * float("inf")
    return sign * 2.0**exp * (1 + mant / 2**mbits)


@functools.cache
def hif8_table() -> np.ndarray:
    """float32 value of each of the 256 HiF8 codes, built from the bit-field definition."""
    table = np.array([_hif8_value(c) for c in range(256)], np.float64).astype(np.float32)
    table.flags.writeable = False  # cached: shared by every caller
    return table


@jax.jit
def hif8_decode(codes: UInt8[Array, "..."]) -> Float[Array, "..."]:
    """float32 values of HiF8 codes.

    Args:
      codes: integer codes of any shape (uint8; of wider integers the low 8 bits are used).

    Returns:
      float32 values of the same shape (0x80 is NaN, 0x6F / 0xEF are +-Inf).
    """
    c = _as_int32_codes(codes, "codes") & 0xFF
    return jnp.asarray(hif8_table())[c]


# ---------------------------------------------------------------------------------------------
# E6M2 (the HiF4 unit scale)


@jax.jit
def e6m2_encode(s: Float[Array, "..."]) -> UInt8[Array, "..."]:
    """E6M2 codes of positive scales: RNE to 2 mantissa bits, saturating to the range.

    E6M2 is unsigned: code = (exponent field << 2) | mantissa, with 6 exponent bits, bias 48,
    an implicit leading 1 and no subnormals: value = 2^(code >> 2 - 48) * (1 + (code & 3) / 4),
    from 2^-48 (0x00) to 49152 = 1.5 * 2^15 (0xFE). There is no zero and no Inf; 0xFF (which
    would be 1.75 * 2^15) is reserved for NaN.

    Args:
      s: floating values of any shape (cast to float32).

    Returns:
      uint8 codes. Values below 2^-48 (zero and negatives included) give 0x00, values above
      49152 (and +Inf) give 0xFE, NaN gives 0xFF. Ties go to the even mantissa.
    """
    s = _as_float32(s, "s")
    v = jnp.clip(s, E6M2_MIN, E6M2_MAX)  # both bounds are E6M2 values: clip, then round
    v = jnp.where(jnp.isnan(v), 1.0, v)
    bits = lax.bitcast_convert_type(v, jnp.int32)  # positive normal float32: no sign issues
    lsb = jnp.right_shift(bits, 21) & 1
    bits = (bits + (0xFFFFF + lsb)) & ~0x1FFFFF  # RNE to 2 mantissa bits; a carry bumps E
    exp_field = jnp.right_shift(bits, 23) - 127 + E6M2_BIAS
    code = jnp.left_shift(exp_field, 2) | (jnp.right_shift(bits, 21) & 3)
    return jnp.where(jnp.isnan(s), E6M2_NAN, code).astype(jnp.uint8)


@jax.jit
def e6m2_decode(code: UInt8[Array, "..."]) -> Float[Array, "..."]:
    """float32 values of E6M2 codes (see `e6m2_encode`); 0xFF decodes to NaN.

    Args:
      code: integer codes of any shape (the low 8 bits are used).

    Returns:
      float32 values of the same shape.
    """
    c = _as_int32_codes(code, "code") & 0xFF
    # From the bits (no table: kernel bodies may not capture constants); exponent fields
    # 0..63 map to float32 exponents 79..142, all normal.
    value = lax.bitcast_convert_type(((c >> 2) + 127 - E6M2_BIAS) << 23 | (c & 3) << 21,
                                     jnp.float32)
    return jnp.where(c == E6M2_NAN, jnp.nan, value)


# ---------------------------------------------------------------------------------------------
# HiF4


def _shifts(start: int, n: int, ndim: int, dtype=jnp.int32) -> Array:
    return jnp.arange(start, start + n, dtype=dtype).reshape((1,) * (ndim - 1) + (n,))


@jax.jit
def hif4_pack_levels(l1: Array, l2: Array) -> UInt32[Array, "..."]:
    """Packs the 24 one-bit level scales of each unit into a uint32.

    Bit order: bit g (g = 0..7) is the level-1 bit of group of 8 number g (elements
    8g .. 8g+7); bit 8 + j (j = 0..15) is the level-2 bit of group of 4 number j (elements
    4j .. 4j+3, inside group of 8 number j // 2). A set bit means a scale of 2, a clear bit a
    scale of 1. Bits 24..31 are zero.

    Args:
      l1: (..., 8) bool (or 0/1 integer) level-1 bits.
      l2: (..., 16) bool (or 0/1 integer) level-2 bits, same leading shape.

    Returns:
      (...) uint32 packed levels.
    """
    l1, l2 = jnp.asarray(l1), jnp.asarray(l2)
    if l1.ndim < 1 or l1.shape[-1] != 8:
        raise ValueError(f"l1 must have last axis 8, got shape {l1.shape}")
    if l2.shape != l1.shape[:-1] + (16,):
        raise ValueError(f"l2 must have shape {l1.shape[:-1] + (16,)}, got {l2.shape}")
    # Summed as int32 (24 bits fit; kernel lowerings lack unsigned reductions).
    b1 = jnp.left_shift(l1.astype(jnp.bool_).astype(jnp.int32), _shifts(0, 8, l1.ndim))
    b2 = jnp.left_shift(l2.astype(jnp.bool_).astype(jnp.int32), _shifts(8, 16, l2.ndim))
    return (jnp.sum(b1, axis=-1) + jnp.sum(b2, axis=-1)).astype(jnp.uint32)


@jax.jit
def hif4_unpack_levels(levels: UInt32[Array, "..."]) -> tuple[Array, Array]:
    """Inverse of `hif4_pack_levels`.

    Args:
      levels: (...) integer packed levels (bit order in `hif4_pack_levels`).

    Returns:
      (l1, l2): (..., 8) and (..., 16) bool arrays, True where the scale is 2.
    """
    levels = jnp.asarray(levels)
    if not jnp.issubdtype(levels.dtype, jnp.integer):
        raise ValueError(f"levels must have an integer dtype (uint32), got {levels.dtype}")
    lv = levels.astype(jnp.uint32)[..., None]
    l1 = (jnp.right_shift(lv, _shifts(0, 8, lv.ndim, jnp.uint32)) & np.uint32(1)) != 0
    l2 = (jnp.right_shift(lv, _shifts(8, 16, lv.ndim, jnp.uint32)) & np.uint32(1)) != 0
    return l1, l2


def _element_levels(l1: Array, l2: Array) -> Array:
    """(..., 8) and (..., 16) float32 level scales -> (..., 64) product l1 * l2 per element."""
    batch = l2.shape[:-1]
    l1_per4 = jnp.broadcast_to(l1[..., None], batch + (8, 2)).reshape(batch + (16,))
    per4 = l1_per4 * l2
    return jnp.broadcast_to(per4[..., None], batch + (16, 4)).reshape(batch + (HIF4_UNIT,))


def _hif4_magnitudes(a: Array, r: Array, levels: Array) -> Array:
    """Step 6: k = min(round_half_up(|x| * r / (l1 * l2) * 4), 7), int32."""
    return jnp.minimum(_round_half_up((a * r) / levels * 4.0), 7.0).astype(jnp.int32)


@jax.jit
def hif4_elements(x: Float[Array, "... 64"], scale: UInt8[Array, "..."],
                  levels: UInt32[Array, "..."]) -> Float[Array, "... 64"]:
    """Step 6 alone: the element values (+-k/4) of units under a fixed unit scale code and
    fixed level bits (as `hif4_quantize_units` returns them), e.g. for GPTQ.

    Args:
      x: (..., 64) floating values.
      scale: (...) E6M2 codes.
      levels: (...) packed level bits.

    Returns:
      (..., 64) float32 values k/4 with x's sign (zero without sign).
    """
    x = _as_float32(x, "x")
    r = (1.0 / e6m2_decode(scale)).astype(jnp.bfloat16).astype(jnp.float32)[..., None]
    l1, l2 = hif4_unpack_levels(levels)
    lv = _element_levels(jnp.where(l1, 2.0, 1.0), jnp.where(l2, 2.0, 1.0))
    q = _hif4_magnitudes(jnp.abs(x), r, lv).astype(jnp.float32) / 4
    return jnp.where((x < 0) & (q > 0), -q, q)


@jax.jit
def hif4_quantize_units(
    x: Float[Array, "... 64"],
) -> tuple[UInt8[Array, "... 64"], UInt8[Array, "..."], UInt32[Array, "..."]]:
    """Quantizes units of 64 values to HiF4 (the seven steps of FORMATS.md).

    Arithmetic is float32 (RNE), with the bf16 roundings of the definition:
    s = E6M2(clip(bf16(m64 * bf16(1/7)), 2^-48, 49152)), r = bf16(1 / s),
    l1 = 2 if m8 * r >= 4, l2 = 2 if (m4 * r) / l1 >= 2, q = min(round_half_up(|x| * r / (l1 *
    l2) * 4), 7) / 4, where round_half_up(t) = floor(t + 0.5) taken exactly (the sum t + 0.5 is
    not rounded to float32 first).

    An all-zero unit gets the smallest scale (2^-48) and zero codes. A unit holding a NaN or
    +-Inf gets the NaN scale code 0xFF, zero element codes and zero levels (it decodes to all
    NaN), as an MX block does; other units are unaffected.

    Re-quantizing decoded units is not idempotent in general: the unit scale can change (a
    decoded maximum of 6 s gives a smaller scale), and for scales with mantissa field 3,
    s * bf16(1/s) < 1 moves decoded values that sit on a level threshold under it. It is
    idempotent when the scale code is kept and its mantissa field is 0, 1 or 2.

    Args:
      x: (..., 64) floating values (cast to float32); pad the axis to 64 beforehand.

    Returns:
      codes: (..., 64) uint8, one 4-bit element per byte: bit 3 = sign, bits 0..2 = k
        (value k/4); a zero magnitude always has the sign bit clear.
      scale: (...) uint8 E6M2 code of the unit scale (see `e6m2_encode`).
      levels: (...) uint32, 8 level-1 and 16 level-2 bits (order in `hif4_pack_levels`).
    """
    x = _as_float32(x, "x")
    if x.ndim < 1 or x.shape[-1] != HIF4_UNIT:
        raise ValueError(f"x must have last axis {HIF4_UNIT} (one HiF4 unit), got shape {x.shape}")
    batch = x.shape[:-1]
    # A max rather than jnp.any: reduce_or has no Pallas kernel lowerings.
    finite = jnp.isfinite(x)
    has_nan = jnp.max((~finite).astype(jnp.int32), axis=-1) > 0  # NaN or +-Inf: a NaN unit
    a = jnp.where(finite, jnp.abs(x), 0.0)
    # 1. maxima per group of 4, of 8, and per unit.
    m4 = jnp.max(a.reshape(batch + (16, 4)), axis=-1)
    m8 = jnp.max(m4.reshape(batch + (8, 2)), axis=-1)
    m64 = jnp.max(m8, axis=-1)
    # 2. unit scale in E6M2.
    s_bf16 = (m64 * _INV7_BF16).astype(jnp.bfloat16).astype(jnp.float32)
    scale = e6m2_encode(jnp.clip(s_bf16, E6M2_MIN, E6M2_MAX))
    s = e6m2_decode(scale)
    # 3. reciprocal in bf16.
    r = (1.0 / s).astype(jnp.bfloat16).astype(jnp.float32)[..., None]
    # 4.-5. one-bit level scales.
    l1 = jnp.where(m8 * r >= 4.0, 2.0, 1.0)
    l1_per4 = jnp.broadcast_to(l1[..., None], batch + (8, 2)).reshape(batch + (16,))
    l2 = jnp.where((m4 * r) / l1_per4 >= 2.0, 2.0, 1.0)
    # 6. elements, k = 4q in 0..7.
    k = _hif4_magnitudes(a, r, _element_levels(l1, l2))
    codes = k | jnp.where((x < 0) & (k > 0), 8, 0)
    levels = hif4_pack_levels(l1 == 2.0, l2 == 2.0)
    codes = jnp.where(has_nan[..., None], 0, codes).astype(jnp.uint8)
    levels = jnp.where(has_nan, np.uint32(0), levels)
    scale = jnp.where(has_nan, np.uint8(E6M2_NAN), scale)
    return codes, scale, levels


@jax.jit
def hif4_dequantize_units(
    codes: UInt8[Array, "... 64"], scale: UInt8[Array, "..."], levels: UInt32[Array, "..."]
) -> Float[Array, "... 64"]:
    """Decodes HiF4 units (step 7): x_hat = sign * k/4 * l1 * l2 * s.

    Args:
      codes: (..., 64) integer element codes (bit 3 = sign, bits 0..2 = k).
      scale: (...) E6M2 scale codes.
      levels: (...) packed level bits (see `hif4_pack_levels`).

    Returns:
      (..., 64) float32 values, exact; largest magnitude 7 * s. A NaN scale gives NaN.
    """
    c = _as_int32_codes(codes, "codes")
    if c.ndim < 1 or c.shape[-1] != HIF4_UNIT:
        raise ValueError(f"codes must have last axis {HIF4_UNIT}, got shape {c.shape}")
    batch = c.shape[:-1]
    scale, levels = jnp.asarray(scale), jnp.asarray(levels)
    if scale.shape != batch:
        raise ValueError(f"scale must have shape {batch} (codes' leading shape), got {scale.shape}")
    if levels.shape != batch:
        raise ValueError(f"levels must have shape {batch} (codes' leading shape), "
                         f"got {levels.shape}")
    s = e6m2_decode(scale)[..., None]
    l1b, l2b = hif4_unpack_levels(levels)
    lev = _element_levels(jnp.where(l1b, 2.0, 1.0), jnp.where(l2b, 2.0, 1.0))
    mag = (c & 7).astype(jnp.float32) * 0.25 * lev * s
    return signed(mag, (c & 8) != 0)

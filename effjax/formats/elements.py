"""Element minifloats (ExMy): rounding, bit-exact codes and decoding, emulated in float32.

Covers FP8 E4M3 ("fn": no Inf, NaN = S.1111.111), FP8 E5M2 (IEEE-like Inf/NaN), FP6 E2M3,
FP6 E3M2 and FP4 E2M1 (no specials), plus the E8M0 scale of MX formats. Rounding is
round-to-nearest-even; out-of-range values saturate to the largest normal unless asked
otherwise. Arithmetic is float32 with power-of-two scalings only, so it is exact.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, UInt8


@dataclasses.dataclass(frozen=True, kw_only=True)
class ElementFormat:
    """An ExMy minifloat.

    Attributes:
      name: "e4m3", "e5m2", "e2m3", "e3m2" or "e2m1".
      ebits, mbits, bias: exponent bits, mantissa bits, exponent bias.
      specials: "fn" (all-ones code is NaN, no Inf), "ieee" (top exponent is Inf/NaN) or "none".
      storage: the XLA dtype that holds these values exactly (FP8), or None for uint8 codes.
    """

    name: str
    ebits: int
    mbits: int
    bias: int
    specials: str
    storage: str | None

    @property
    def bits(self) -> int:
        return 1 + self.ebits + self.mbits

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest normal."""
        top = 2**self.ebits - 1 - self.bias
        return top - 1 if self.specials == "ieee" else top

    @property
    def max_normal(self) -> float:
        if self.specials == "fn":  # the all-ones mantissa of the top exponent is NaN
            return 2.0**self.emax * (1 + (2**self.mbits - 2) / 2**self.mbits)
        return 2.0**self.emax * (1 + (2**self.mbits - 1) / 2**self.mbits)

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (self.emin - self.mbits)


ELEMENTS: dict[str, ElementFormat] = {
    "e4m3": ElementFormat(name="e4m3", ebits=4, mbits=3, bias=7, specials="fn",
                          storage="float8_e4m3fn"),
    "e5m2": ElementFormat(name="e5m2", ebits=5, mbits=2, bias=15, specials="ieee",
                          storage="float8_e5m2"),
    "e2m3": ElementFormat(name="e2m3", ebits=2, mbits=3, bias=1, specials="none", storage=None),
    "e3m2": ElementFormat(name="e3m2", ebits=3, mbits=2, bias=3, specials="none", storage=None),
    # FP4 is stored as packed uint8 codes (two per byte), which is smaller than XLA's
    # one-byte float4_e2m1fn; `scaled_matmul` converts to float4_e2m1fn where it is needed.
    "e2m1": ElementFormat(name="e2m1", ebits=2, mbits=1, bias=1, specials="none", storage=None),
}


def element_format(name: str) -> ElementFormat:
    """Looks up an element format by name, listing the known ones on error."""
    if name not in ELEMENTS:
        raise ValueError(f"unknown element format {name!r}; known: {sorted(ELEMENTS)}")
    return ELEMENTS[name]


def _bits(x: Float[Array, ...]) -> Array:
    return jax.lax.bitcast_convert_type(x, jnp.int32)


def _float(bits: Array) -> Float[Array, ...]:
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def signed(magnitude: Float[Array, ...], negative: Array) -> Float[Array, ...]:
    """magnitude with its sign bit set where `negative`: -0 where a zero is negative. Set
    on the bits because compilers may rewrite a select of -a (Triton turned -0 into +0)."""
    return _float(_bits(magnitude) | (negative.astype(jnp.int32) << 31))


def pow2(n: Array) -> Float[Array, ...]:
    """2^n as float32 for int32 n in [-126, 127], built from the bits (exact)."""
    return _float((n + 127) << 23)


def mul_pow2(x: Float[Array, ...], n: Array) -> Float[Array, ...]:
    """x * 2^n for int32 n in [-253, 254], as two exact power-of-two products.

    Equal to ldexp(x, n) wherever the result is a float32 normal (results in the subnormal
    range round once, or flush to zero where XLA flushes subnormals), at a fraction of
    `jnp.ldexp`'s cost.
    """
    n1 = jnp.clip(n, -126, 127)
    return x * pow2(n1) * pow2(n - n1)


def round_half_even(v: Float[Array, ...]) -> Float[Array, ...]:
    """jnp.round (ties to even, -0 kept) from floor and exact float32 steps: Triton kernels
    have no round primitive, and XLA folds the (v + c) - c trick away."""
    n = jnp.floor(v)
    frac = v - n  # exact
    odd = n - 2 * jnp.floor(n * 0.5) == 1
    r = n + jnp.where((frac > 0.5) | ((frac == 0.5) & odd), 1.0, 0.0).astype(v.dtype)
    return jnp.where(r == 0, v * 0, r)  # the sign of zero, as jnp.round keeps it


def round_to_element(
    x: Float[Array, ...], elem: ElementFormat, *, saturate: bool = True
) -> Float[Array, ...]:
    """Rounds float32 values to the element grid (RNE).

    The grid step at |x| is 2^(max(e, emin) - mbits) for e = floor(log2|x|); adding and
    subtracting M = step * 2^23 makes the float32 adder round |x| to a multiple of the step,
    ties to even, exactly (|x| < M always holds).

    Args:
      x: float32 values.
      elem: the element format.
      saturate: clamp finite overflow (and Inf) to +-max_normal; otherwise overflow becomes
        Inf (e5m2) or NaN (e4m3). Formats without specials always saturate.

    Returns:
      float32 values on the grid; NaN stays NaN.
    """
    x = x.astype(jnp.float32)
    # Clamped above max_normal (keeps overflow detectable and M finite); NaN stays NaN.
    a = jnp.minimum(jnp.abs(x), jnp.float32(2 * elem.max_normal))
    exp_bits = _bits(a) & 0x7F800000
    magic = _float(jnp.maximum(exp_bits, (elem.emin + 127) << 23) + ((23 - elem.mbits) << 23))
    q = (a + magic) - magic
    overflow = q > elem.max_normal
    if saturate or elem.specials == "none":
        q = jnp.where(overflow, jnp.float32(elem.max_normal), q)
    else:
        q = jnp.where(overflow, jnp.inf if elem.specials == "ieee" else jnp.nan, q)
    q = jnp.where(jnp.isnan(x), jnp.nan, q)
    return _float(_bits(q) | (_bits(x) & jnp.int32(-(2**31))))  # x's sign


def decode_element(codes: UInt8[Array, ...], elem: ElementFormat) -> Float[Array, ...]:
    """float32 values of element codes (the low `elem.bits` bits of each uint8).

    Built from the bits (the inverse of `encode_element`'s field arithmetic), with no
    lookup table: kernel bodies may not capture array constants.
    """
    c = codes.astype(jnp.int32) & (2**elem.bits - 1)
    mag = c & (2 ** (elem.bits - 1) - 1)
    subnormal = mag < (1 << elem.mbits)
    bits = (mag + ((127 - elem.bias) << elem.mbits) + jnp.where(subnormal, 1 << elem.mbits, 0))
    a = _float(bits << (23 - elem.mbits)) - jnp.where(subnormal, jnp.float32(2.0**elem.emin), 0)
    top_exp = (mag >> elem.mbits) == 2**elem.ebits - 1
    if elem.specials == "ieee":
        a = jnp.where(top_exp, jnp.where((mag & (2**elem.mbits - 1)) == 0, jnp.inf, jnp.nan), a)
    elif elem.specials == "fn":
        a = jnp.where(mag == 2 ** (elem.bits - 1) - 1, jnp.nan, a)
    return signed(a, (c >> (elem.bits - 1)) == 1)


def encode_element(
    x: Float[Array, ...], elem: ElementFormat, *, saturate: bool = True
) -> UInt8[Array, ...]:
    """Bit-exact codes of x rounded to the element grid (RNE, see `round_to_element`).

    A normal grid value 2^(E - bias) (1 + m / 2^mbits) has float32 bits whose top fields
    read (E - bias + 127, m); a subnormal one plus 2^emin is the normal value with E = 1.
    NaN encodes as the format's NaN (e4m3 0x7F, e5m2 0x7E, as ml_dtypes does); formats
    without NaN encode it as -0 (as ml_dtypes does; inside MX blocks NaN lives in the scale).

    Returns:
      uint8 codes, sign in bit `elem.bits - 1`.
    """
    v = round_to_element(x, elem, saturate=saturate)
    a = jnp.abs(v)
    subnormal = a < 2.0**elem.emin
    a = jnp.where(subnormal, a + jnp.float32(2.0**elem.emin), a)
    mag = (_bits(a) >> (23 - elem.mbits)) - ((127 - elem.bias) << elem.mbits)
    mag = mag - jnp.where(subnormal, 1 << elem.mbits, 0)
    top = 2 ** (elem.bits - 1)
    if elem.specials == "ieee":
        mag = jnp.where(jnp.isinf(v), (2**elem.ebits - 1) << elem.mbits, mag)
        mag = jnp.where(jnp.isnan(v), ((2**elem.ebits - 1) << elem.mbits) + 2, mag)
    elif elem.specials == "fn":
        mag = jnp.where(jnp.isnan(v), top - 1, mag)
    else:
        mag = jnp.where(jnp.isnan(v), 0, mag)
    nan_sign = elem.specials == "none"  # -0 stands for NaN where there is no NaN code
    sign = jnp.where(jnp.isnan(v), nan_sign, jnp.signbit(v))
    return (mag + jnp.where(sign, top, 0)).astype(jnp.uint8)


def to_storage(values: Float[Array, ...], elem: ElementFormat) -> jax.Array:
    """Grid values in the element's real XLA dtype (exact), or uint8 codes where XLA has none."""
    if elem.storage is None:
        return encode_element(values, elem)
    return values.astype(jnp.dtype(elem.storage))


def from_storage(stored: jax.Array, elem: ElementFormat) -> Float[Array, ...]:
    """Inverse of `to_storage`: float32 values."""
    if elem.storage is None:
        return decode_element(stored, elem)
    return stored.astype(jnp.float32)


# E8M0: the unsigned power-of-two scale of MX formats. Code c means 2^(c - 127); 0xFF is NaN.
E8M0_BIAS = 127


def encode_e8m0(exponent: Array, nan: Array | None = None) -> UInt8[Array, ...]:
    """E8M0 codes of integer exponents (clamped to [-127, 127]); `nan` marks NaN scales."""
    code = (jnp.clip(exponent, -127, 127) + E8M0_BIAS).astype(jnp.uint8)
    return code if nan is None else jnp.where(nan, jnp.uint8(255), code)


def decode_e8m0(codes: UInt8[Array, ...]) -> Float[Array, ...]:
    """float32 scale 2^(c - 127) of E8M0 codes (NaN for 0xFF), built from the bits.

    Code 0 is the float32 subnormal 2^-127; XLA on CPU flushes subnormals in arithmetic,
    so a block with that scale dequantizes to zero there.
    """
    c = codes.astype(jnp.uint32)
    bits = jnp.where(c == 0, jnp.uint32(1 << 22), c << 23)
    bits = jnp.where(c == 255, jnp.uint32(0x7FC00000), bits)
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def encode_e8m0_values(x: Float[Array, ...]) -> UInt8[Array, ...]:
    """E8M0 codes of positive values rounded to a power of two (mantissa >= 1.5 rounds up,
    as ml_dtypes does); values below 2^-127 clamp to code 0; zero, negative, non-finite
    values and values that round past 2^127 give NaN (0xFF).

    Works on the float32 bits, so subnormal inputs are exact even where XLA flushes them.
    """
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.uint32)
    exp_field = ((bits >> 23) & 0xFF).astype(jnp.int32)
    mant = bits & 0x7FFFFF
    normal_e = exp_field - 127 + (mant >= 0x400000).astype(jnp.int32)
    subnormal_e = -127 + (mant >= 0x600000).astype(jnp.int32)
    e = jnp.where(exp_field == 0, subnormal_e, normal_e)
    bad = ((bits >> 31) == 1) | (exp_field == 255) | ((exp_field == 0) & (mant == 0))
    return encode_e8m0(e, nan=bad | (e > 127))

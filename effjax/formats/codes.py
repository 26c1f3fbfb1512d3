"""`encode` / `decode`: element codes of a format by name."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from effjax.formats import elements as el

CODE_FORMATS = (*el.ELEMENTS, "e8m0", "hif8")


def _check(name: str) -> None:
    if name not in CODE_FORMATS:
        raise ValueError(f"unknown element format {name!r}; known: {list(CODE_FORMATS)}")


def encode(values: jax.Array, name: str, *, saturate: bool = True) -> jax.Array:
    """Bit-exact uint8 codes of values in an element format.

    Args:
      values: real values (rounded to the format first: RNE for ExMy, ties away for HiF8,
        nearest power of two for E8M0).
      name: "e4m3", "e5m2", "e2m3", "e3m2", "e2m1", "e8m0" or "hif8".
      saturate: clamp overflow to the largest finite value (ExMy, HiF8).

    Returns:
      uint8 codes (sign in the top bit of the format's width).
    """
    _check(name)
    values = jnp.asarray(values)
    if not jnp.issubdtype(values.dtype, jnp.floating):
        raise ValueError(f"encode expects real floating-point values, got dtype {values.dtype}")
    if name == "e8m0":
        return el.encode_e8m0_values(values)
    if name == "hif8":
        from effjax.formats.hifloat import hif8_encode

        return hif8_encode(values.astype(jnp.float32), saturate=saturate)
    return el.encode_element(values, el.ELEMENTS[name], saturate=saturate)


def decode(codes: jax.Array, name: str) -> jax.Array:
    """float32 values of uint8 codes in an element format (see `encode`)."""
    _check(name)
    codes = jnp.asarray(codes)
    if not jnp.issubdtype(codes.dtype, jnp.integer):
        raise ValueError(f"decode expects integer codes, got dtype {codes.dtype}")
    if name == "e8m0":
        return el.decode_e8m0(codes.astype(jnp.uint8))
    if name == "hif8":
        from effjax.formats.hifloat import hif8_decode

        return hif8_decode(codes.astype(jnp.uint8))
    return el.decode_element(codes.astype(jnp.uint8), el.ELEMENTS[name])

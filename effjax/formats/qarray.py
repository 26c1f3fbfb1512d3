"""QArray: a quantized tensor as a pytree of its real stored arrays."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import numpy as np

from effjax.formats.registry import Format


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QArray:
    """A quantized array: element codes and scales as arrays, the format as static metadata.

    Invariant: `effjax.formats.dequantize(q)` has shape `q.shape` and approximates the array
    that was quantized, within the format's rounding (half a grid step times the scale, or
    clipping at the format's largest value). NaN and +-Inf follow the `effjax.formats`
    docstring: a NaN scale marks a block that held one; in symmetric INT the code
    -2^(bits-1) stands for a NaN element.

    Layout: the contraction axis `axis` is moved last and padded to a whole number of
    groups, giving `(*rest, k_padded)`; `codes` holds the elements in that layout (4-bit
    codes packed two per byte, element 2i in the low nibble; 6-bit codes four per three
    bytes, little-endian), `scale` one entry per group
    `(*rest, k_padded // group)` (or broadcastable ones for per-tensor scales).

    Attributes:
      codes: element codes in their storage dtype (float8_*, int8, uint8, bfloat16, ...).
      scale: per-group scales in their real encoding (E8M0 bytes for MX, float8_e4m3fn for
        NVFP4, E6M2 bytes for HiF4, float32 for INT/FP8), or None.
      global_scale: NVFP4's per-tensor float32 scale, or None.
      zero_point: asymmetric INT zero points (float32), or None.
      levels: HiF4's packed level-1/level-2 bits (uint32 per 64-element unit), or None.
      fmt: the `Format` (static).
      axis: the contraction axis of the original array, non-negative (static).
      shape: the original shape (static).
      dtype: the original dtype name (static).
    """

    codes: jax.Array
    scale: jax.Array | None
    global_scale: jax.Array | None
    zero_point: jax.Array | None
    levels: jax.Array | None
    fmt: Format = dataclasses.field(metadata=dict(static=True))
    axis: int = dataclasses.field(metadata=dict(static=True))
    shape: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))
    dtype: str = dataclasses.field(metadata=dict(static=True))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def stored(self) -> dict[str, jax.Array]:
        """The scale arrays by name ("scale", "global_scale", "zero_point", "levels"),
        those the format has."""
        return {name: a for name in ("scale", "global_scale", "zero_point", "levels")
                if (a := getattr(self, name)) is not None}

    def storage_bits(self) -> dict[str, int]:
        """Bits held by each stored array (NVFP4's global scale reported on its own)."""
        out = {}
        for name in ("codes", "scale", "zero_point", "levels", "global_scale"):
            a: Any = getattr(self, name)
            if a is not None:
                out[name] = int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize * 8
        return out

    def bits_per_element(self) -> float:
        """Stored bits per original element: codes, scales, zero points and level bits,
        not counting a single per-tensor global scale (NVFP4's one float32)."""
        bits = self.storage_bits()
        bits.pop("global_scale", None)
        return sum(bits.values()) / self.size

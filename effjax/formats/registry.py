"""Number formats by name, with their options validated where they are written."""

from __future__ import annotations

import dataclasses

MX_SCALE_MODES = ("floor", "ceil", "even", "rceil")
GRANULARITIES = ("tensor", "channel", "group")
INT_GROUP_SIZES = (16, 32, 64, 128)

# name -> (kind, element, bits, fixed block size or None)
_BASE = {
    "bf16": ("cast", "bfloat16", 16, None),
    "fp16": ("cast", "float16", 16, None),
    "fp8_e4m3": ("fp8", "e4m3", 8, None),
    "fp8_e5m2": ("fp8", "e5m2", 8, None),
    "int8": ("int", None, 8, None),
    "int4": ("int", None, 4, None),
    "int3": ("int", None, 3, None),
    "int2": ("int", None, 2, None),
    "mxfp8_e4m3": ("mx", "e4m3", 8, 32),
    "mxfp8_e5m2": ("mx", "e5m2", 8, 32),
    "mxfp6_e2m3": ("mx", "e2m3", 6, 32),
    "mxfp6_e3m2": ("mx", "e3m2", 6, 32),
    "mxfp4": ("mx", "e2m1", 4, 32),
    "mxint8": ("mx", "int8", 8, 32),
    "nvfp4": ("nvfp4", "e2m1", 4, 16),
    "hif8": ("hif8", None, 8, None),
    "hif4": ("hif4", None, 4, 64),
}


def names() -> tuple[str, ...]:
    """All format names."""
    return tuple(_BASE)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Format:
    """A number format with its options (hashable: usable as a static jit argument).

    Attributes:
      name: one of `names()`.
      granularity: "tensor", "channel" (one scale per row, over the whole contraction
        axis) or "group" (one scale per `group_size` elements along it). Block formats
        (MX, NVFP4, HiF4) are "group" with their fixed block size; `fp8_*` default to
        "tensor"; `int*` to "channel"; `hif8` and the casts have no scale ("tensor" is
        accepted and ignored for them).
      group_size: elements per scale for "group" (INT: 16, 32, 64 or 128; fixed for blocks).
      symmetric: INT only; False gives a scale and a zero point from min/max.
      scale_mode: MX only: "floor" (the spec), "ceil", "even" or "rceil".
      two_level: NVFP4 only: a per-tensor float32 scale above the E4M3 block scales.
      saturate: HiF8 only: overflow becomes +-32768 rather than +-Inf.
    """

    name: str
    granularity: str = "group"
    group_size: int | None = None
    symmetric: bool = True
    scale_mode: str = "floor"
    two_level: bool = True
    saturate: bool = True

    def __post_init__(self):
        if self.name not in _BASE:
            raise ValueError(f"unknown format {self.name!r}; known formats: {list(_BASE)}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got "
                             f"{self.granularity!r}")
        kind, block = self.kind, _BASE[self.name][3]
        if block is not None:
            if self.granularity != "group" or self.group_size not in (None, block):
                raise ValueError(f"{self.name} has a fixed block of {block} elements along the "
                                 f"contraction axis; got granularity={self.granularity!r}, "
                                 f"group_size={self.group_size}")
            object.__setattr__(self, "group_size", block)
        elif self.granularity == "group":
            if kind != "int" or self.group_size not in INT_GROUP_SIZES:
                raise ValueError(f"group_size for {self.name} must be one of {INT_GROUP_SIZES} "
                                 f"(INT formats only), got {self.group_size}")
        elif self.group_size is not None:
            raise ValueError(f"group_size is only used with granularity='group', got "
                             f"{self.group_size} with {self.granularity!r}")
        if self.scale_mode not in MX_SCALE_MODES:
            raise ValueError(f"scale_mode must be one of {MX_SCALE_MODES}, got {self.scale_mode!r}")
        if not self.symmetric and kind != "int":
            raise ValueError(f"symmetric=False is only for INT formats, got {self.name}")

    @property
    def kind(self) -> str:
        """"cast", "fp8", "int", "mx", "nvfp4", "hif8" or "hif4"."""
        return _BASE[self.name][0]

    @property
    def element(self) -> str | None:
        """The element format name ("e2m1", ...), "int8" for MXINT8, or the cast dtype."""
        return _BASE[self.name][1]

    @property
    def bits(self) -> int:
        """Bits per element, not counting scales."""
        return _BASE[self.name][2]


_DEFAULT_GRANULARITY = {"fp8": "tensor", "int": "channel", "cast": "tensor", "hif8": "tensor"}


def get_format(fmt: str | Format, **options) -> Format:
    """A `Format` from a name and options (or a `Format`, returned as is when no options).

    Args:
      fmt: a format name (see `names()`) or a `Format`.
      **options: `Format` fields (granularity, group_size, symmetric, scale_mode,
        two_level, saturate).

    Returns:
      The validated `Format`.
    """
    if isinstance(fmt, Format):
        return dataclasses.replace(fmt, **options) if options else fmt
    if not isinstance(fmt, str) or fmt not in _BASE:
        raise ValueError(f"unknown format {fmt!r}; known formats: {list(_BASE)}")
    kind = _BASE[fmt][0]
    if "granularity" not in options:
        default = _DEFAULT_GRANULARITY.get(kind, "group")
        options["granularity"] = "group" if options.get("group_size") else default
    return Format(name=fmt, **options)

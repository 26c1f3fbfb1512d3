"""Format specs: one string naming a format and its scale options, as configs write them."""

from __future__ import annotations

from effjax.formats.registry import Format, get_format

_GRANULARITIES = ("tensor", "channel")


def parse_format_spec(spec: str | None) -> Format | None:
    """The format a spec string names.

    A spec is a format name (`names()`), then optionally ":" and a group size ("int4:128":
    INT4 with one scale per group of 128) or a granularity ("fp8_e4m3:channel",
    "fp8_e5m2:tensor"), then optionally "@" and an MX scale mode ("mxfp4@rceil") or "asym"
    (INT with a zero point: "int2:32@asym").

    Args:
      spec: the spec string, or None.

    Returns:
      The validated `Format`, or None when `spec` is None.

    Raises:
      TypeError: `spec` is neither a string nor None.
      ValueError: the part after ":" or "@" is empty or not one of the forms above, or
        `get_format` refuses the name or its options.
    """
    if spec is None:
        return None
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a format spec string such as 'int4:128' or None, got "
                        f"{type(spec).__name__} {spec!r}")
    head, at, mode = spec.partition("@")
    name, colon, group = head.partition(":")
    if at and not mode:
        raise ValueError(f"spec {spec!r}: after '@' expected an MX scale mode or 'asym', got ''")
    options = {"symmetric": False} if mode == "asym" else {"scale_mode": mode} if mode else {}
    if group in _GRANULARITIES:
        options.update(granularity=group)
    elif group.isdigit():
        options.update(granularity="group", group_size=int(group))
    elif colon:
        raise ValueError(f"spec {spec!r}: after ':' expected a group size, 'tensor' or "
                         f"'channel', got {group!r}")
    return get_format(name, **options)

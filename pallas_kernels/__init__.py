"""Pallas kernels for block-scaled formats (filled by the formats and kernels issues)."""

__all__: list[str] = []

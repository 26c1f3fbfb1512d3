"""Taps on the decoder's linear layers: a collector sees each layer's input while tracing."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable

import jax

_COLLECTOR: contextvars.ContextVar[Callable[[str, jax.Array], None] | None] = (
    contextvars.ContextVar("effjax_taps", default=None))


def record(path: str, x: jax.Array) -> None:
    """Hands a linear layer's input x (..., d_in) to the active collector, if any."""
    collector = _COLLECTOR.get()
    if collector is not None:
        collector(path, x)


@contextlib.contextmanager
def collecting(collector: Callable[[str, jax.Array], None]):
    """Calls `collector(path, x)` for every linear layer run (traced) inside the block.

    Used within one trace (e.g. inside a jitted function that runs the forward pass and
    reduces what it saw to statistics), so the arrays never leak out as tracers.
    """
    token = _COLLECTOR.set(collector)
    try:
        yield
    finally:
        _COLLECTOR.reset(token)

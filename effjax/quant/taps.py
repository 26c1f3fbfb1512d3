"""Taps in the decoder: a collector sees each linear layer's input (kind "input") and each
attention layer's cached keys and values (kind "kv") while tracing."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable

import jax

KINDS = ("input", "kv")

_COLLECTOR: contextvars.ContextVar[
    tuple[Callable[[str, jax.Array], None], tuple[str, ...]] | None] = (
    contextvars.ContextVar("effjax_taps", default=None))


def record(path: str, x: jax.Array, kind: str = "input") -> None:
    """Hands a tensor to the active collector, if it collects this kind.

    Args:
      path: "layers/3/attn/q_proj" for a linear layer's input x (..., d_in);
        "layers/3/attn/k" / ".../v" for the keys / values the KV cache holds
        (b, t, kv_heads, head_dim), after RoPE and any online rotation.
      x: the tensor.
      kind: "input" or "kv".
    """
    active = _COLLECTOR.get()
    if active is not None and kind in active[1]:
        active[0](path, x)


@contextlib.contextmanager
def collecting(collector: Callable[[str, jax.Array], None], kinds: tuple[str, ...] = ("input",)):
    """Calls `collector(path, x)` for every tap of the given kinds run (traced) in the block.

    Used within one trace (e.g. inside a jitted function that runs the forward pass and
    reduces what it saw to statistics), so the arrays never leak out as tracers.

    Args:
      collector: called with (path, tensor).
      kinds: which taps to collect (a subset of `KINDS`).
    """
    if not kinds or any(k not in KINDS for k in kinds):
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {kinds!r}")
    token = _COLLECTOR.set((collector, tuple(kinds)))
    try:
        yield
    finally:
        _COLLECTOR.reset(token)

"""Online transforms: matrices a transformed model applies to activations while it runs.

A transform that cannot be folded into weights alone lives in the parameter pytree beside the
layer it feeds, so the pytree stays the whole model:

- `params[...][<proj>]["input_transform"] = {"left": (m, m), "right": (n, n)}`: the layer's
  input x (..., m * n) becomes x (left (x) right) before the layer (and before its activation
  quantizer); the kernel was multiplied by the inverse (QuaRot's online Hadamard before
  down_proj, MR-GPTQ's block-wise Hadamard, FlatQuant's Kronecker affine maps).
- `params["layers"][i]["attn"]["kv_rotation"] = (head_dim, head_dim)` orthogonal R: queries
  and keys are multiplied by R after RoPE, so the cached keys are rotated while q k^T is not
  changed (QuaRot's KV-cache Hadamard).

`effjax.models.forward` takes these out of params and makes them visible to the layers while
it traces (`active`).
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

INPUT = "input_transform"
KV = "kv_rotation"

_ACTIVE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("effjax_online",
                                                                      default=None)


def kron_apply(x: Float[Array, "... d"], left: Float[Array, "m m"],
               right: Float[Array, "n n"]) -> Float[Array, "... d"]:
    """x (left (x) right) along the last axis (d = m * n), in x's dtype (float32 sums)."""
    m, n = left.shape[0], right.shape[0]
    if x.shape[-1] != m * n:
        raise ValueError(f"a ({m} x {n}) Kronecker transform needs {m * n} features, got "
                         f"x of shape {x.shape}")
    xs = x.reshape(*x.shape[:-1], m, n).astype(jnp.float32)
    y = jnp.einsum("...ij,ia,jb->...ab", xs, left.astype(jnp.float32),
                   right.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
    return y.reshape(x.shape).astype(x.dtype)


def split(params) -> tuple[dict, dict[str, object]]:
    """(params without online transforms, {path: transform}); paths like
    "layers/3/mlp/down_proj/input_transform" and "layers/3/attn/kv_rotation"."""
    found: dict[str, object] = {}

    def strip(tree, prefix):
        if not isinstance(tree, dict):
            return tree
        out = {}
        for k, v in tree.items():
            path = f"{prefix}/{k}" if prefix else str(k)
            if k in (INPUT, KV):
                found[path] = v
            else:
                out[k] = strip(v, path)
        return out

    return strip(params, ""), found


@contextlib.contextmanager
def active(transforms: dict[str, object]):
    """Makes `transforms` (from `split`) visible to `lookup` inside the block (one trace)."""
    token = _ACTIVE.set(transforms)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def lookup(path: str):
    """The active transform at `path`, or None."""
    transforms = _ACTIVE.get()
    return None if transforms is None else transforms.get(path)


def apply_input(path: str, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
    """A linear layer's input after its online transform (x itself when it has none)."""
    t = lookup(f"{path}/{INPUT}")
    return x if t is None else kron_apply(x, t["left"], t["right"])


def rotate_qk(path: str, q: Float[Array, "b t h d"], k: Float[Array, "b s kv d"]):
    """Queries and keys times the attention layer's kv_rotation, if it has one."""
    r = lookup(f"{path}/{KV}")
    if r is None:
        return q, k
    return _times(q, r), _times(k, r)


def _times(a: Float[Array, "... d"], r: Float[Array, "d d"]) -> Float[Array, "... d"]:
    return jnp.einsum("...d,de->...e", a.astype(jnp.float32), r.astype(jnp.float32),
                      precision=jax.lax.Precision.HIGHEST).astype(a.dtype)

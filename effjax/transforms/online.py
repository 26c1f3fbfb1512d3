"""Online transforms: matrices a transformed model applies to activations while it runs.

A transform that cannot be folded into weights alone lives in the parameter pytree beside the
layer it feeds, so the pytree stays the whole model:

- `params[...][<proj>]["input_transform"] = {"left": (m, m), "right": (n, n)}`: the layer's
  input x (..., m * n) becomes x (left (x) right) before the layer (and before its activation
  quantizer); the kernel was multiplied by the inverse (QuaRot's online Hadamard before
  down_proj, MR-GPTQ's block-wise Hadamard, FlatQuant's Kronecker affine maps).
- `... = {"blocks": (nb, b, b)}` or `{"global": (g, g), "private": (nb, p, p)}` (b = g p): a
  block-diagonal transform, block k of the features times its own matrix B_k (given, or
  kron(global, private_k)), optionally with `"clip": (nb,)`: each block of the transformed
  input clipped at ratio_k times its absolute max (BATQuant's block-wise affine maps and
  activation clipping). Energy never crosses a block boundary.
- `... = {"per_type": (k, d, d)}`: a token-type-specific transform, each token's input times
  the matrix of its type (FreeAct's activation-side transforms; the types are the forward's
  `token_types`, traced, so new types never recompile).
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
from jaxtyping import Array, Float, Int

INPUT = "input_transform"
KV = "kv_rotation"

_ACTIVE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("effjax_online",
                                                                      default=None)
_TYPES: contextvars.ContextVar[jax.Array | None] = contextvars.ContextVar("effjax_token_types",
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


def block_apply(x: Float[Array, "... d"], blocks: Float[Array, "nb b b"]) -> Float[Array, "... d"]:
    """x times blockdiag(blocks[0], ..., blocks[nb-1]) along the last axis (d = nb * b)."""
    nb, b = blocks.shape[0], blocks.shape[1]
    if x.shape[-1] != nb * b:
        raise ValueError(f"{nb} blocks of {b} need {nb * b} features, got x of shape {x.shape}")
    xs = x.reshape(*x.shape[:-1], nb, b).astype(jnp.float32)
    y = jnp.einsum("...ki,kio->...ko", xs, blocks.astype(jnp.float32),
                   precision=jax.lax.Precision.HIGHEST)
    return y.reshape(x.shape).astype(x.dtype)


def gpk_apply(x: Float[Array, "... d"], glob: Float[Array, "g g"],
              private: Float[Array, "nb p p"]) -> Float[Array, "... d"]:
    """x times blockdiag(kron(glob, private[k]) for each block k), without forming the blocks
    (d = nb * g * p; block k's features read as a (g, p) matrix X_k become glob^T X_k P_k)."""
    g, (nb, p) = glob.shape[0], private.shape[:2]
    if x.shape[-1] != nb * g * p:
        raise ValueError(f"{nb} blocks of {g} x {p} need {nb * g * p} features, got x of shape "
                         f"{x.shape}")
    xs = x.reshape(*x.shape[:-1], nb, g, p).astype(jnp.float32)
    y = jnp.einsum("...kij,ia,kjb->...kab", xs, glob.astype(jnp.float32),
                   private.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
    return y.reshape(x.shape).astype(x.dtype)


def clip_blocks(x: Float[Array, "... d"], ratio: Float[Array, " nb"]) -> Float[Array, "... d"]:
    """Each block k of x's last axis (nb blocks) clipped at ratio[k] times its own absolute
    max; the gradient reaches ratio through the clipped elements (the max is constant)."""
    nb = ratio.shape[0]
    xs = x.reshape(*x.shape[:-1], nb, x.shape[-1] // nb)
    r = ratio.astype(xs.dtype).reshape((1,) * (xs.ndim - 2) + (nb, 1))
    c = r * jax.lax.stop_gradient(
        jnp.max(jnp.abs(xs), axis=-1, keepdims=True))
    return jnp.clip(xs, -c, c).reshape(x.shape)


def per_type_apply(x: Float[Array, "... d"], types: Int[Array, ...],
                   per_type: Float[Array, "k d d"]) -> Float[Array, "... d"]:
    """Each token's x times per_type[its type] along the last axis (types in [0, k))."""
    k, d = per_type.shape[:2]
    if x.shape[-1] != d or types.shape != x.shape[:-1]:
        raise ValueError(f"a per-type transform of {k} ({d} x {d}) matrices needs x (..., {d}) "
                         f"and types of x's leading shape, got x {x.shape}, types {types.shape}")
    y = jnp.einsum("...d,kde->...ke", x.astype(jnp.float32), per_type.astype(jnp.float32),
                   precision=jax.lax.Precision.HIGHEST)
    pick = jax.nn.one_hot(types, k, dtype=jnp.float32)
    return jnp.einsum("...ke,...k->...e", y, pick).astype(x.dtype)


def apply_transform(x: Float[Array, "... d"], t: dict,
                    types: Int[Array, ...] | None = None) -> Float[Array, "... d"]:
    """x after an input transform of any of the module's kinds (see the module docstring);
    `types` are the tokens' types, needed by a per-type transform only."""
    if "per_type" in t:
        if types is None:
            raise ValueError("a per-type input transform needs the tokens' types: pass "
                             "token_types to the forward")
        return per_type_apply(x, types, t["per_type"])
    if "left" in t:
        y = kron_apply(x, t["left"], t["right"])
    elif "blocks" in t:
        y = block_apply(x, t["blocks"])
    else:
        y = gpk_apply(x, t["global"], t["private"])
    return clip_blocks(y, t["clip"]) if "clip" in t else y


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
def active(transforms: dict[str, object], token_types: Int[Array, "b t"] | None = None):
    """Makes `transforms` (from `split`) visible to `lookup`, and the tokens' types to the
    per-type transforms, inside the block (one trace)."""
    token, types = _ACTIVE.set(transforms), _TYPES.set(token_types)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
        _TYPES.reset(types)


def lookup(path: str):
    """The active transform at `path`, or None."""
    transforms = _ACTIVE.get()
    return None if transforms is None else transforms.get(path)


def apply_input(path: str, x: Float[Array, "... d"]) -> Float[Array, "... d"]:
    """A linear layer's input after its online transform (x itself when it has none)."""
    t = lookup(f"{path}/{INPUT}")
    return x if t is None else apply_transform(x, t, _TYPES.get())


def rotate_qk(path: str, q: Float[Array, "b t h d"], k: Float[Array, "b s kv d"]):
    """Queries and keys times the attention layer's kv_rotation, if it has one."""
    r = lookup(f"{path}/{KV}")
    if r is None:
        return q, k
    return _times(q, r), _times(k, r)


def _times(a: Float[Array, "... d"], r: Float[Array, "d d"]) -> Float[Array, "... d"]:
    return jnp.einsum("...d,de->...e", a.astype(jnp.float32), r.astype(jnp.float32),
                      precision=jax.lax.Precision.HIGHEST).astype(a.dtype)

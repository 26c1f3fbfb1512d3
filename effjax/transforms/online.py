"""Online transforms: matrices a transformed model applies to activations while it runs.

A transform that cannot be folded into weights alone is a typed pytree node stored in the
parameter pytree beside the layer it feeds, and that layer applies it, so the pytree stays
the whole model and the forward reads nothing from anywhere else:

- `params[...][<proj>]["input_transform"]`: the layer's input x (..., d) becomes
  `t.apply(x, token_types)` before the layer (and before its activation quantizer); the
  kernel was multiplied by the inverse. The kinds:
  - `Kron(left (m, m), right (n, n))`: x (left (x) right), d = m n (QuaRot's online
    Hadamard before down_proj, MR-GPTQ's block-wise Hadamard, FlatQuant's Kronecker maps);
  - `BlockDiag(blocks (nb, b, b))`: block k of the features times its own matrix, d = nb b;
  - `GPK(glob (g, g), private (nb, p, p))`: the same with B_k = kron(glob, private_k),
    b = g p, without forming the blocks (BATQuant's block-wise affine maps);
  - any of those three with `clip (nb,)`: each block of the transformed input clipped at
    ratio_k times its absolute max (BATQuant's activation clipping; energy never crosses a
    block boundary);
  - `PerType(matrices (k, d, d))`: each token's input times the matrix of its type
    (FreeAct's activation-side transforms; the types are the forward's `token_types`,
    traced, so new types never recompile).
- `params["layers"][i]["attn"]["kv_rotation"]`: a (head_dim, head_dim) orthogonal R: the
  attention layer multiplies queries and keys by R after RoPE, so the cached keys are
  rotated while q k^T is not changed (QuaRot's KV-cache Hadamard).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

INPUT = "input_transform"
KV = "kv_rotation"


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


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Kron:
    """x -> x (left (x) right), then the optional block clipping.

    Attributes:
      left: (m, m).
      right: (n, n); the layer's input has m * n features.
      clip: (nb,) clipping ratio per block of the transformed input, or None.
    """

    left: Float[Array, "m m"]
    right: Float[Array, "n n"]
    clip: Float[Array, " nb"] | None = None

    def apply(self, x: Float[Array, "... d"], types: Int[Array, ...] | None = None
              ) -> Float[Array, "... d"]:
        """x transformed (types unused). Raises ValueError if d != m * n."""
        return _clipped(kron_apply(x, self.left, self.right), self.clip)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BlockDiag:
    """x -> x blockdiag(blocks[0], ..., blocks[nb-1]), then the optional block clipping.

    Attributes:
      blocks: (nb, b, b); the layer's input has nb * b features.
      clip: (nb,) clipping ratio per block, or None.
    """

    blocks: Float[Array, "nb b b"]
    clip: Float[Array, " nb"] | None = None

    def apply(self, x: Float[Array, "... d"], types: Int[Array, ...] | None = None
              ) -> Float[Array, "... d"]:
        """x transformed (types unused). Raises ValueError if d != nb * b."""
        return _clipped(block_apply(x, self.blocks), self.clip)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GPK:
    """x -> x blockdiag(kron(glob, private[k]) for each block k), then the optional block
    clipping.

    Attributes:
      glob: (g, g), shared by every block.
      private: (nb, p, p), one per block; the layer's input has nb * g * p features.
      clip: (nb,) clipping ratio per block, or None.
    """

    glob: Float[Array, "g g"]
    private: Float[Array, "nb p p"]
    clip: Float[Array, " nb"] | None = None

    def apply(self, x: Float[Array, "... d"], types: Int[Array, ...] | None = None
              ) -> Float[Array, "... d"]:
        """x transformed (types unused). Raises ValueError if d != nb * g * p."""
        return _clipped(gpk_apply(x, self.glob, self.private), self.clip)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PerType:
    """Each token's x times the matrix of its type.

    Attributes:
      matrices: (k, d, d), one per token type.
    """

    matrices: Float[Array, "k d d"]

    def apply(self, x: Float[Array, "... d"], types: Int[Array, ...] | None = None
              ) -> Float[Array, "... d"]:
        """x transformed by each token's type (int in [0, k), x's leading shape).

        Raises:
          ValueError: types is None (the forward was given no token_types), or shapes do
            not fit.
        """
        if types is None:
            raise ValueError("a per-type input transform needs the tokens' types: pass "
                             "token_types to the forward")
        return per_type_apply(x, types, self.matrices)


Transform = Kron | BlockDiag | GPK | PerType
"""An online input transform (the value stored under `INPUT`)."""


def _clipped(y: Float[Array, "... d"], clip: Float[Array, " nb"] | None) -> Float[Array, "... d"]:
    return y if clip is None else clip_blocks(y, clip)


def rotate(a: Float[Array, "... d"], r: Float[Array, "d d"]) -> Float[Array, "... d"]:
    """a times r along the last axis (queries or keys by a kv_rotation), in a's dtype
    (float32 products at full precision)."""
    return jnp.einsum("...d,de->...e", a.astype(jnp.float32), r.astype(jnp.float32),
                      precision=jax.lax.Precision.HIGHEST).astype(a.dtype)


def find(params) -> dict[str, Transform | Float[Array, "d d"]]:
    """Every online transform stored in a parameter pytree, by path.

    Args:
      params: a parameter pytree (nested dicts).

    Returns:
      {path: transform}, paths like "layers/3/mlp/down_proj/input_transform" and
      "layers/3/attn/kv_rotation", in the pytree's order.
    """
    found: dict[str, Transform | Float[Array, "d d"]] = {}

    def visit(tree, prefix: str) -> None:
        for k, v in tree.items():
            path = f"{prefix}/{k}" if prefix else str(k)
            if k in (INPUT, KV):
                found[path] = v
            elif isinstance(v, dict):
                visit(v, path)

    visit(params, "")
    return found

"""Function-preserving transforms of decoder parameter pytrees: each returns parameters whose
float model computes the same logits (up to float rounding), with weights and activations
reshaped for quantization.

- `fuse_norms`: RMSNorm weights folded into the projections they feed (norms become ones);
  a tied output head becomes an explicit `lm_head` (the config says so).
- `rotate_residual`: the residual stream rotated by an orthogonal Q (QuaRot, SpinQuant's R1):
  embeddings and writers (o_proj, down_proj) times Q, readers (q/k/v, gate/up, lm_head)
  times Q^T. Needs fused norms: RMSNorm(x Q) = RMSNorm(x) Q only for unit weights. With
  Gemma's sandwich norms a writer's output is normed before it joins the stream, and that
  norm's weight does not commute with Q: the writer stays as it is and the norm's output is
  multiplied by Q (a (hidden, hidden) float matmul per output norm, `Norm.rotation`).
- `rotate_values`: each value head times an orthogonal R (into v_proj), undone in o_proj;
  with `online_kv=True` queries and keys are rotated by R after RoPE too (the KV cache then
  holds rotated keys and values: QuaRot's KV Hadamard).
- `add_input_transform`: an online Kronecker transform T before a projection, the kernel
  times T^-1 (`effjax.transforms.online`).
- `smooth`: per-channel scales s migrated from activations into weights (SmoothQuant, AWQ):
  x / s into the norm (q/k/v, gate/up) or up_proj (down_proj), s into the kernels.

All take and return plain parameter dicts; the rotations compute in float32 at full precision
(differentiable), the others in float64 on the host.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from effjax.formats import QArray
from effjax.transforms import online

if TYPE_CHECKING:
    from effjax.models.config import LMConfig

QKV = ("q_proj", "k_proj", "v_proj")
GATE_UP = ("gate_proj", "up_proj")


def _f64(a) -> np.ndarray:
    if isinstance(a, QArray):
        raise ValueError("transforms act on float parameters; got a QArray kernel (transform "
                         "before quantizing)")
    return np.asarray(a, np.float64)


def _like(value: np.ndarray, ref: jax.Array) -> jax.Array:
    return jnp.asarray(value, ref.dtype)


def copy_dicts(params):
    """A structural copy (dicts copied, arrays shared) to edit without touching the input."""
    return {k: copy_dicts(v) if isinstance(v, dict) else v for k, v in params.items()}


def _layers(params) -> list:
    return [params["layers"][i] for i in sorted(params["layers"])]


def _scale_rows(kernel, s: np.ndarray):
    """diag(s) @ kernel for a (d_in, d_out) kernel."""
    return _like(s[:, None] * _f64(kernel), kernel)


def fuse_norms(params, *, config: LMConfig) -> tuple[dict, LMConfig]:
    """Folds every RMSNorm weight into the kernels that read the normed stream.

    Args:
      params: a float decoder parameter pytree.
      config: its config.

    Returns:
      (params with unit norm weights, config): a tied head is untied (`lm_head` =
      diag(norm) embedding^T), so the config then has tie_word_embeddings=False.
    """
    out = copy_dicts(params)
    for layer in _layers(out):
        for norm, block, names in (("input_norm", "attn", QKV), ("post_attn_norm", "mlp",
                                                                 GATE_UP)):
            g = _f64(layer[norm]["weight"])
            for name in names:
                layer[block][name]["kernel"] = _scale_rows(layer[block][name]["kernel"], g)
            layer[norm]["weight"] = jnp.ones_like(layer[norm]["weight"])
    g = _f64(out["norm"]["weight"])
    head = out["lm_head"]["kernel"] if "lm_head" in out else jnp.asarray(
        out["embed"]["embedding"]).T
    out["lm_head"] = {"kernel": _scale_rows(head, g)}
    out["norm"]["weight"] = jnp.ones_like(out["norm"]["weight"])
    return out, dataclasses.replace(config, tie_word_embeddings=False)


def _check_fused(params) -> None:
    weights = [params["norm"]["weight"]] + [layer[n]["weight"] for layer in _layers(params)
                                            for n in ("input_norm", "post_attn_norm")]
    concrete = [w for w in weights if not isinstance(w, jax.core.Tracer)]
    if any(not np.all(np.asarray(w) == 1) for w in concrete) or "lm_head" not in params:
        raise ValueError("rotate_residual needs fused norms (unit RMSNorm weights and an "
                         "untied lm_head): call fuse_norms first")


def _mm(a, b) -> jax.Array:
    """a @ b in float32 at full precision (the rotations: differentiable, e.g. in SpinQuant)."""
    return jnp.matmul(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32),
                      precision=jax.lax.Precision.HIGHEST)


def _check_orthogonal(m, n: int, what: str) -> None:
    """Refuses a concrete matrix that is not (n, n) orthogonal (traced ones pass)."""
    if isinstance(m, jax.core.Tracer):
        return
    m64 = _f64(m)
    if m64.shape != (n, n) or not np.allclose(m64 @ m64.T, np.eye(n), atol=1e-5):
        raise ValueError(f"{what} must be an orthogonal ({n}, {n}) matrix, got shape "
                         f"{m64.shape}")


def rotate_residual(params, q: Float[Array, "h h"]) -> dict:
    """The residual stream times an orthogonal q (see the module docstring).

    Differentiable in q (float32 arithmetic at full precision).

    Args:
      params: float parameters after `fuse_norms`.
      q: (hidden, hidden) orthogonal matrix.

    Returns:
      The rotated parameters.
    """
    _check_fused(params)
    emb = params["embed"]["embedding"]
    _check_orthogonal(q, emb.shape[1], "q (hidden, hidden)")
    out = copy_dicts(params)
    out["embed"]["embedding"] = _mm(emb, q).astype(emb.dtype)
    readers = [(layer["attn"], QKV) for layer in _layers(out)] + [
        (layer["mlp"], GATE_UP) for layer in _layers(out)] + [(out, ("lm_head",))]
    for block, names in readers:
        for name in names:
            k = block[name]["kernel"]
            block[name]["kernel"] = _mm(jnp.transpose(q), k).astype(k.dtype)
    for layer in _layers(out):
        for block, name, norm in ((layer["attn"], "o_proj", "attn_out_norm"),
                                  (layer["mlp"], "down_proj", "mlp_out_norm")):
            if norm in layer:  # sandwich norms: rotate the norm's output, not the writer's
                n = layer[norm] = dict(layer[norm])
                n["rotation"] = (_mm(n["rotation"], q) if "rotation" in n
                                 else jnp.asarray(q, jnp.float32))
                continue
            proj = block[name]
            for leaf in ("kernel", "bias"):
                if leaf in proj:
                    proj[leaf] = _mm(proj[leaf], q).astype(proj[leaf].dtype)
    return out


def rotate_values(params, r: Float[Array, "d d"], *,
                  config: LMConfig, online_kv: bool = True) -> dict:
    """Every value head times an orthogonal r (folded into v_proj and undone in o_proj);
    with online_kv, queries and keys are also rotated by r after RoPE (an online op).

    Differentiable in r (float32 arithmetic at full precision).

    Args:
      params: float parameters.
      config: the config (heads, head_dim).
      r: (head_dim, head_dim) orthogonal matrix.
      online_kv: also add the online query/key rotation (`online.KV`).

    Returns:
      The transformed parameters.
    """
    d, kv, heads = config.head_dim, config.num_kv_heads, config.num_heads
    _check_orthogonal(r, d, "r (head_dim, head_dim)")
    out = copy_dicts(params)
    for layer in _layers(out):
        v, o = layer["attn"]["v_proj"], layer["attn"]["o_proj"]
        for leaf in ("kernel", "bias"):
            if leaf in v:
                a = v[leaf]
                v[leaf] = _mm(a.reshape(*a.shape[:-1], kv, d), r).reshape(a.shape).astype(
                    a.dtype)
        wo = o["kernel"]
        o["kernel"] = _mm(jnp.transpose(r), wo.reshape(heads, d, -1)).reshape(wo.shape).astype(
            wo.dtype)
        if online_kv:
            layer["attn"][online.KV] = jnp.asarray(r, jnp.float32)
    return out


def add_input_transform(params, pattern: str, left: Float[Array, "m m"],
                        right: Float[Array, "n n"]) -> dict:
    """An online transform T = left (x) right before every projection whose path matches
    `pattern` (its input x becomes x T), the kernel replaced by T^-1 kernel.

    Args:
      params: float parameters.
      pattern: a regular expression searched in layer paths ("layers/3/mlp/down_proj").
      left, right: invertible (m, m) and (n, n) matrices, m * n = the layer's d_in.

    Returns:
      The transformed parameters.

    Raises:
      ValueError: if the pattern matches no projection, a projection already has a
        transform, or the sizes do not fit.
    """
    left64, right64 = _f64(left), _f64(right)
    inv = np.kron(np.linalg.inv(left64), np.linalg.inv(right64))
    return _attach(params, pattern, online.Kron(jnp.asarray(left64, jnp.float32),
                                                jnp.asarray(right64, jnp.float32)),
                   inv.shape[0], lambda w: inv @ w)


def add_block_transform(params, pattern: str,
                        transform: online.BlockDiag | online.GPK) -> dict:
    """A block-diagonal online transform before every projection whose path matches
    `pattern`: block k of the input features times B_k, the kernel's rows of block k
    replaced by B_k^-1 times them (inverses in float64), so the float layer is unchanged.

    Args:
      params: float parameters.
      pattern: a regular expression searched in layer paths.
      transform: `BlockDiag(blocks (nb, b, b))` (B_k given) or `GPK(glob (g, g), private
        (nb, p, p))` (B_k = kron(glob, private_k), b = g p), with nb b = the layer's d_in;
        every B_k invertible. Its optional clip (nb,) is kept (`online.clip_blocks`: 1
        leaves the function unchanged).

    Returns:
      The transformed parameters, the transform stored in float32.

    Raises:
      ValueError: as `add_input_transform`, or for a transform of neither kind.
    """
    if isinstance(transform, online.BlockDiag):
        blocks = _f64(transform.blocks)
    elif isinstance(transform, online.GPK):
        g, priv = _f64(transform.glob), _f64(transform.private)
        blocks = np.stack([np.kron(g, pk) for pk in priv])
    else:
        raise ValueError("transform must be an online.BlockDiag or an online.GPK, got "
                         f"{type(transform).__name__}")
    if blocks.ndim != 3 or blocks.shape[1] != blocks.shape[2]:
        raise ValueError(f"expected (nb, b, b) blocks, got shape {blocks.shape}")
    inv = np.linalg.inv(blocks)
    nb, b = blocks.shape[:2]

    def rows(w):
        return np.einsum("kab,kbo->kao", inv, w.reshape(nb, b, -1)).reshape(w.shape)

    stored = jax.tree.map(lambda a: jnp.asarray(_f64(a), jnp.float32), transform)
    return _attach(params, pattern, stored, nb * b, rows)


def _attach(params, pattern: str, stored: online.Transform, d_in: int, inverse_rows) -> dict:
    """Stores `stored` as the input transform of every projection matching
    pattern, its kernel (d_in, out) replaced by inverse_rows(kernel in float64)."""
    out = copy_dicts(params)
    hits = 0
    for path, block in _projections(out):
        if not re.search(pattern, path):
            continue
        if online.INPUT in block:
            raise ValueError(f"{path} already has an input transform")
        kernel = block["kernel"]
        if _f64(kernel).shape[0] != d_in:
            raise ValueError(f"a transform of {d_in} features does not fit {path}, whose "
                             f"kernel is {np.shape(kernel)}")
        block["kernel"] = _like(inverse_rows(_f64(kernel)), kernel)
        block[online.INPUT] = stored
        hits += 1
    if not hits:
        raise ValueError(f"pattern {pattern!r} matches no projection")
    return out


def _projections(params):
    """(layer path, projection dict) of every projection, in model order."""
    out = []
    for i in sorted(params["layers"]):
        layer = params["layers"][i]
        for block, names in (("attn", (*QKV, "o_proj")), ("mlp", (*GATE_UP, "down_proj"))):
            out += [(f"layers/{i}/{block}/{n}", layer[block][n]) for n in names]
    if "lm_head" in params:
        out.append(("lm_head", params["lm_head"]))
    return out


def smooth(params, scales: dict[str, Float[Array, " d"]]) -> dict:
    """Migrates per-channel scales s from activations into weights: the input x of the
    smoothed projections becomes x / s, their kernels diag(s) W.

    Args:
      params: float parameters.
      scales: {"layers/i/attn/qkv" | "layers/i/mlp/gate_up" | "layers/i/mlp/down_proj": s}
        with positive s. "qkv" and "gate_up" divide the preceding RMSNorm's weight;
        "down_proj" divides up_proj's output columns (and bias): silu(g) * (u / s) = h / s.

    Returns:
      The smoothed parameters.
    """
    out = copy_dicts(params)
    for key, s in scales.items():
        m = re.fullmatch(r"layers/(\d+)/(attn/qkv|mlp/gate_up|mlp/down_proj)", key)
        if m is None:
            raise ValueError(f"scales key {key!r}: expected layers/<i>/attn/qkv, "
                             "layers/<i>/mlp/gate_up or layers/<i>/mlp/down_proj")
        s = _f64(s)
        if not np.all(s > 0) or not np.all(np.isfinite(s)):
            raise ValueError(f"scales[{key!r}] must be positive and finite")
        layer = out["layers"][int(m.group(1))]
        if m.group(2) == "mlp/down_proj":
            up, down = layer["mlp"]["up_proj"], layer["mlp"]["down_proj"]
            up["kernel"] = _like(_f64(up["kernel"]) / s[None, :], up["kernel"])
            if "bias" in up:
                up["bias"] = _like(_f64(up["bias"]) / s, up["bias"])
            down["kernel"] = _scale_rows(down["kernel"], s)
            continue
        norm, block, names = (("input_norm", "attn", QKV) if m.group(2) == "attn/qkv" else
                              ("post_attn_norm", "mlp", GATE_UP))
        layer[norm] = {"weight": _like(_f64(layer[norm]["weight"]) / s, layer[norm]["weight"])}
        for name in names:
            layer[block][name]["kernel"] = _scale_rows(layer[block][name]["kernel"], s)
    return out

"""Softmax attention through one function: a dense reference and memory-efficient backends.

Which (query, key) pairs may attend is described, not materialized: `causal`, a sliding
`window`, the offset of the queries among the keys (decoding with a cache), per-key
validity (padding, unwritten cache slots) and, only when nothing else describes it, an
explicit boolean `mask` (the diffusion LM's span masks, per-layer token dropping). The
blocked backend builds each block's mask from that description and skips the blocks it
rules out, so a causal prefill does about half the work and never holds a (t, s) score
matrix.

Implementations:

- "dense": every score materialized, float32 softmax (the reference the others match);
- "xla": blocked online softmax (flash-style: a scan over key blocks carrying the running
  max and sum, float32 accumulation), on any backend, differentiable; a single query per
  sequence (a decoding step) runs as one fused multiply-reduce over the keys as they lie
  in the cache, which XLA's CPU dot would first transpose;
- "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")` (GPU, half precision);
- "splash": JAX's splash-attention Pallas kernel (TPU);
- "auto": the accelerator kernel where it applies, else "xla" for long sequences and
  single queries, "dense" for the rest.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

IMPLEMENTATIONS = ("auto", "dense", "xla", "cudnn", "splash")
DENSE_MAX_SCORES = 128 * 256
"""Up to this many (query, key) pairs per head, "auto" runs the dense path on CPU."""


def block_size(n: int) -> int:
    """The blocked path's default block along an axis of n queries or keys: n itself below
    128, then 128, 256 from 512 and 512 from 2048 (the fastest on a 2-core CPU at 256 to
    8192 tokens: smaller blocks skip more of a causal prefill, larger ones pay less
    per-block overhead)."""
    return n if n < 128 else 128 if n < 512 else 256 if n < 2048 else 512


class Pairs(NamedTuple):
    """Which (query, key) pairs may attend: `attention`'s mask arguments in one record."""

    causal: bool = False
    q_offset: int | Int[Array, ""] = 0
    window: int | None = None
    key_valid: Bool[Array, "b s"] | None = None
    mask: Bool[Array, "b t s"] | None = None


def allowed_pairs(
    t: int,
    s: int,
    *,
    batch: int,
    causal: bool = False,
    q_offset: int | Int[Array, ""] = 0,
    window: int | None = None,
    key_valid: Bool[Array, "b s"] | None = None,
    mask: Bool[Array, "b t s"] | None = None,
) -> Bool[Array, "b t s"]:
    """The (batch, t, s) boolean matrix of pairs that may attend (see `attention`)."""
    qpos = q_offset + jnp.arange(t)[:, None]
    kpos = jnp.arange(s)[None, :]
    ok = jnp.ones((t, s), bool)
    if causal:
        ok &= kpos <= qpos
    if window is not None:
        ok &= qpos - kpos < window
        if not causal:
            ok &= kpos - qpos < window
    ok = jnp.broadcast_to(ok[None], (batch, t, s))
    if key_valid is not None:
        ok &= key_valid[:, None, :]
    if mask is not None:
        ok &= mask
    return ok


def attention(
    q: Float[Array, "b t h d"],
    k: Float[Array, "b s kv d"],
    v: Float[Array, "b s kv d"],
    *,
    causal: bool = False,
    q_offset: int | Int[Array, ""] = 0,
    window: int | None = None,
    key_valid: Bool[Array, "b s"] | None = None,
    mask: Bool[Array, "b t s"] | None = None,
    implementation: str = "auto",
) -> Float[Array, "b t h d"]:
    """Grouped-query softmax attention, scores and softmax in float32.

    Query i sits at key position `q_offset + i` and may attend key j when all of these
    hold: j <= q_offset + i (if `causal`); |q_offset + i - j| < window (if `window`; with
    `causal` only keys behind count); key_valid[b, j]; mask[b, i, j]. A query with no
    allowed key (a padding slot) gets the plain average of all values rather than NaN.

    Args:
      q: queries, scaled inside by d ** -0.5; h must be a multiple of kv.
      k, v: keys and values.
      causal: causal structure.
      q_offset: key position of query 0 (the cache length when decoding), int or traced.
      window: sliding-window width in positions, or None.
      key_valid: False for keys that no query may attend (padding, unwritten slots).
      mask: any further (b, t, s) restriction; the blocked path reads it block by block.
      implementation: one of `IMPLEMENTATIONS`.

    Returns:
      The attention output, q's dtype.

    Raises:
      ValueError: an unknown implementation; h not a multiple of kv; an accelerator
        kernel asked for where it does not apply.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got "
                         f"{implementation!r}")
    b, t, h, d = q.shape
    s, kv = k.shape[1], k.shape[2]
    if h % kv:
        raise ValueError(f"q's heads ({h}) must be a multiple of k's ({kv})")
    spec = dict(causal=causal, q_offset=q_offset, window=window, key_valid=key_valid,
                mask=mask)
    if implementation == "auto":
        implementation = _choose(q, s, **spec)
    if implementation == "dense":
        return dense_attention(q, k, v, allowed_pairs(t, s, batch=b, **spec))
    if implementation == "xla" and t == 1:
        return single_query_attention(q, k, v, allowed_pairs(t, s, batch=b, **spec))
    if implementation == "xla":
        return blocked_attention(q, k, v, **spec)
    from effjax.models import sdpa_kernels
    if implementation == "cudnn":
        return sdpa_kernels.cudnn(q, k, v, **spec)
    return sdpa_kernels.splash(q, k, v, **spec)


def _choose(q, s, **spec) -> str:
    """The implementation "auto" runs (see the module docstring)."""
    from effjax.models import sdpa_kernels
    platform = jax.default_backend()
    if platform == "gpu" and sdpa_kernels.cudnn_applies(q, s, **spec):
        return "cudnn"
    if platform == "tpu" and sdpa_kernels.splash_applies(q, s, **spec):
        return "splash"
    t = q.shape[1]
    return "dense" if t > 1 and t * s <= DENSE_MAX_SCORES else "xla"


def dense_attention(
    q: Float[Array, "b t h d"],
    k: Float[Array, "b s kv d"],
    v: Float[Array, "b s kv d"],
    allowed: Bool[Array, "b t s"],
) -> Float[Array, "b t h d"]:
    """The reference: every score materialized, masked, float32 softmax."""
    b, t, h, d = q.shape
    kv = k.shape[2]
    qg = q.reshape(b, t, kv, h // kv, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
    scores = scores * (d**-0.5)
    scores = jnp.where(allowed[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v, preferred_element_type=jnp.float32)
    return out.reshape(b, t, h, d).astype(q.dtype)


def single_query_attention(
    q: Float[Array, "b 1 h d"],
    k: Float[Array, "b s kv d"],
    v: Float[Array, "b s kv d"],
    allowed: Bool[Array, "b 1 s"],
) -> Float[Array, "b 1 h d"]:
    """One query per sequence (a decoding step), "xla"'s path for t = 1: scores and output
    as broadcast products summed in float32, reading k and v in their (b, s, kv, d) layout
    (no transposed copy of the cache, which XLA's CPU dot makes).

    Args:
      q, k, v: as in `attention`, with one query.
      allowed: `allowed_pairs` for that query.

    Returns:
      The attention output, q's dtype.
    """
    b, _, h, d = q.shape
    kv = k.shape[2]
    f32 = jnp.float32
    qg = q.reshape(b, 1, kv, h // kv, d).astype(f32)
    scores = jnp.sum(qg * k[:, :, :, None, :].astype(f32), axis=-1) * (d**-0.5)
    scores = jnp.where(allowed[:, 0, :, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=1).astype(v.dtype).astype(f32)
    out = jnp.sum(probs[..., None] * v[:, :, :, None, :].astype(f32), axis=1)
    return out.reshape(b, 1, h, d).astype(q.dtype)


def _blocks(x: Array, axis: int, size: int, fill: Any = 0) -> Array:
    """x padded along axis to a multiple of size and split there: (..., n, size, ...)
    with the block index moved to the front."""
    n = -(-x.shape[axis] // size)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, n * size - x.shape[axis])
    x = jnp.pad(x, pad, constant_values=fill)
    x = x.reshape(x.shape[:axis] + (n, size) + x.shape[axis + 1:])
    return jnp.moveaxis(x, axis, 0)


def blocked_attention(
    q: Float[Array, "b t h d"],
    k: Float[Array, "b s kv d"],
    v: Float[Array, "b s kv d"],
    *,
    causal: bool = False,
    q_offset: int | Int[Array, ""] = 0,
    window: int | None = None,
    key_valid: Bool[Array, "b s"] | None = None,
    mask: Bool[Array, "b t s"] | None = None,
    block_q: int | None = None,
    block_k: int | None = None,
) -> Float[Array, "b t h d"]:
    """Flash-style attention in plain XLA, `attention`'s "xla" implementation.

    Query blocks are mapped over; for each, a scan over key blocks carries the running
    row max, row sum and float32 output, and skips (`lax.cond`) a block that the causal
    structure or the window rules out entirely. Each block's scores are recomputed in the
    backward pass (`jax.checkpoint`), so gradients need no (t, s) buffer either.

    Args:
      q, k, v, causal, q_offset, window, key_valid, mask: as in `attention`.
      block_q, block_k: block sizes (clipped to t and s); default `block_size` of t and s.

    Returns:
      The attention output, q's dtype.
    """
    b, t, h, d = q.shape
    s, kv = k.shape[1], k.shape[2]
    g = h // kv
    bq, bk = min(block_q or block_size(t), t), min(block_k or block_size(s), s)
    if key_valid is None:
        key_valid = jnp.ones((b, s), bool)
    qb = _blocks(q.reshape(b, t, kv, g, d), 1, bq)  # (nq, b, bq, kv, g, d)
    qb = jnp.transpose(qb, (0, 1, 3, 4, 2, 5))  # (nq, b, kv, g, bq, d)
    kb = jnp.transpose(_blocks(k, 1, bk), (0, 1, 3, 2, 4))  # (nk, b, kv, bk, d)
    vb = jnp.transpose(_blocks(v, 1, bk), (0, 1, 3, 2, 4))
    validb = _blocks(key_valid, 1, bk, fill=False)  # (nk, b, bk)
    maskb = None
    if mask is not None:  # (nq, nk, b, bq, bk)
        maskb = jnp.moveaxis(_blocks(_blocks(mask, 1, bq, fill=False), 3, bk, fill=False), 0, 1)
    nk = kb.shape[0]
    scale = d**-0.5
    q_offset = jnp.asarray(q_offset, jnp.int32)

    def one_query_block(args):
        i, qi, mask_i = args
        q_first = q_offset + i * bq
        qpos = q_first + jnp.arange(bq)

        @jax.checkpoint
        def update(carry, kj, vj, valid_j, mask_ij, j):
            m, denom, acc = carry
            kpos = j * bk + jnp.arange(bk)
            ok = jnp.broadcast_to(valid_j[:, None, :], (b, bq, bk))
            if causal:
                ok &= kpos[None, None, :] <= qpos[None, :, None]
            if window is not None:
                ok &= (qpos[:, None] - kpos[None, :] < window)[None]
                if not causal:
                    ok &= (kpos[None, :] - qpos[:, None] < window)[None]
            if mask_ij is not None:
                ok &= mask_ij
            scores = jnp.einsum("bkgqd,bksd->bkgqs", qi, kj,
                                preferred_element_type=jnp.float32) * scale
            scores = jnp.where(ok[:, None, None], scores, -jnp.inf)
            m_new = jnp.maximum(m, scores.max(-1))
            m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
            p = jnp.exp(scores - m_safe[..., None])
            alpha = jnp.exp(m - m_safe)
            denom = alpha * denom + p.sum(-1)
            acc = alpha[..., None] * acc + jnp.einsum(
                "bkgqs,bksd->bkgqd", p.astype(vj.dtype), vj, preferred_element_type=jnp.float32)
            return m_new, denom, acc

        def step(carry, xs):
            j, kj, vj, valid_j, mask_ij = xs
            needed = jnp.asarray(True)
            if causal:
                needed &= j * bk <= q_first + bq - 1
            if window is not None:
                needed &= q_first - ((j + 1) * bk - 1) < window
                if not causal:
                    needed &= j * bk - (q_first + bq - 1) < window
            carry = jax.lax.cond(needed, lambda c: update(c, kj, vj, valid_j, mask_ij, j),
                                 lambda c: c, carry)
            return carry, None

        init = (jnp.full((b, kv, g, bq), -jnp.inf, jnp.float32),
                jnp.zeros((b, kv, g, bq), jnp.float32),
                jnp.zeros((b, kv, g, bq, d), jnp.float32))
        xs = (jnp.arange(nk), kb, vb, validb, mask_i)
        (_, denom, acc), _ = jax.lax.scan(step, init, xs)
        return denom, acc

    nq = qb.shape[0]
    denom, acc = jax.lax.map(one_query_block, (jnp.arange(nq), qb, maskb))
    # (nq, b, kv, g, bq[, d]) -> (b, t, kv, g[, d])
    denom = jnp.moveaxis(denom, 0, 3).reshape(b, kv, g, nq * bq)[..., :t]
    acc = jnp.moveaxis(acc, 0, 3).reshape(b, kv, g, nq * bq, d)[..., :t, :]
    mean_v = jnp.mean(v.astype(jnp.float32), axis=1)  # (b, kv, d): a query with no key
    out = jnp.where(denom[..., None] > 0, acc / jnp.where(denom > 0, denom, 1.0)[..., None],
                    mean_v[:, :, None, None, :])
    return jnp.transpose(out, (0, 3, 1, 2, 4)).reshape(b, t, h, d).astype(q.dtype)

"""Accelerator kernels behind `effjax.models.sdpa.attention`: cuDNN (GPU) and splash
attention (TPU).

Both follow `attention`'s pair rules for every query that has at least one allowed key;
a query with none (padding) gets whatever the kernel makes of it (the dense and XLA paths
give the average of the values). Both are differentiable (the kernels' own backward
passes). Neither handles a query offset (decoding with a cache) or an explicit mask: the
`*_applies` functions say when a kernel can run, and `attention(implementation="auto")`
falls back to the XLA path otherwise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

SPLASH_LANES = 128
"""Splash tiles both sequence axes in multiples of this many positions."""
SPLASH_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))
CUDNN_DTYPES = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))
CUDNN_MAX_HEAD_DIM = 128


def _static_zero(q_offset) -> bool:
    return isinstance(q_offset, int) and q_offset == 0


def splash_applies(q: Float[Array, "b t h d"], s: int, *, causal: bool = False,
                   q_offset: int | Int[Array, ""] = 0, window: int | None = None,
                   key_valid: Bool[Array, "b s"] | None = None,
                   mask: Bool[Array, "b t s"] | None = None) -> bool:
    """Whether `splash` runs these arguments: t and s multiples of 128, bfloat16 or
    float32, queries aligned with the keys (q_offset the int 0), no explicit mask."""
    del causal, key_valid
    t = q.shape[1]
    return (t % SPLASH_LANES == 0 and s % SPLASH_LANES == 0 and q.dtype in SPLASH_DTYPES
            and _static_zero(q_offset) and mask is None and (window is None or window >= 1))


def _splash_block(n: int, preferred: int = 512) -> int:
    """The largest of preferred, preferred / 2, ..., 128 that divides n."""
    size = preferred
    while size > SPLASH_LANES and n % size:
        size //= 2
    return size


def splash(
    q: Float[Array, "b t h d"],
    k: Float[Array, "b s kv d"],
    v: Float[Array, "b s kv d"],
    *,
    causal: bool = False,
    q_offset: int | Int[Array, ""] = 0,
    window: int | None = None,
    key_valid: Bool[Array, "b s"] | None = None,
    mask: Bool[Array, "b t s"] | None = None,
    interpret: bool = False,
) -> Float[Array, "b t h d"]:
    """JAX's splash-attention TPU kernel (grouped-query heads native, blocks ruled out by
    the causal or window structure skipped, key_valid as segment ids).

    Args:
      q, k, v, causal, q_offset, window, key_valid, mask: as in `attention`.
      interpret: run the kernel in the Pallas interpreter (CPU tests).

    Returns:
      The attention output, q's dtype.

    Raises:
      ValueError: `splash_applies` is False for these arguments.
    """
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    b, t, h, d = q.shape
    s = k.shape[1]
    if not splash_applies(q, s, causal=causal, q_offset=q_offset, window=window, mask=mask):
        raise ValueError(
            f"splash attention needs t and s multiples of {SPLASH_LANES}, bfloat16 or float32, "
            f"q_offset=0 and no explicit mask; got q {q.shape} {q.dtype}, s={s}, "
            f"q_offset={q_offset!r}, mask {'given' if mask is not None else 'None'}")
    if window is None:
        pattern = sa.CausalMask((t, s)) if causal else sa.FullMask((t, s))
    else:
        pattern = sa.LocalMask((t, s), window_size=(window - 1, 0 if causal else window - 1),
                               offset=0)
    bq, bk = _splash_block(t), _splash_block(s)
    sizes = sa.BlockSizes(block_q=bq, block_kv=bk, block_kv_compute=bk, block_q_dkv=bq,
                          block_kv_dkv=bk, block_kv_dkv_compute=bk, block_q_dq=bq,
                          block_kv_dq=bk)
    # Built on every trace: a kernel kept across traces would carry concrete arrays that
    # jax.export cannot take (splash caches the costly mask processing itself).
    kernel = sa.make_splash_mha(sa.MultiHeadMask([pattern] * h), block_sizes=sizes,
                                head_shards=1, q_seq_shards=1, interpret=interpret)
    scaled = (q.astype(jnp.float32) * d**-0.5).astype(q.dtype)  # the kernel does not scale
    qh = jnp.swapaxes(scaled, 1, 2)
    kh = jnp.swapaxes(k.astype(q.dtype), 1, 2)
    vh = jnp.swapaxes(v.astype(q.dtype), 1, 2)
    if key_valid is None:
        out = jax.vmap(kernel)(qh, kh, vh)
    else:  # every query in segment 1, key j in segment key_valid[j]
        ids = sa.SegmentIds(q=jnp.ones((b, t), jnp.int32), kv=key_valid.astype(jnp.int32))
        out = jax.vmap(kernel)(qh, kh, vh, ids)
    return jnp.swapaxes(out, 1, 2).astype(q.dtype)


def cudnn_applies(q: Float[Array, "b t h d"], s: int, *, causal: bool = False,
                  q_offset: int | Int[Array, ""] = 0, window: int | None = None,
                  key_valid: Bool[Array, "b s"] | None = None,
                  mask: Bool[Array, "b t s"] | None = None) -> bool:
    """Whether "auto" should run `cudnn`: float16 or bfloat16, head_dim a multiple of 8 up
    to 128, queries aligned with the keys, a window only with causal, and nothing that
    would need a dense (t, s) bias (no key_valid, no explicit mask)."""
    del s
    d = q.shape[-1]
    return (q.dtype in CUDNN_DTYPES and d % 8 == 0 and d <= CUDNN_MAX_HEAD_DIM
            and _static_zero(q_offset) and mask is None and key_valid is None
            and (window is None or (causal and window >= 1)))


def cudnn(
    q: Float[Array, "b t h d"],
    k: Float[Array, "b s kv d"],
    v: Float[Array, "b s kv d"],
    *,
    causal: bool = False,
    q_offset: int | Int[Array, ""] = 0,
    window: int | None = None,
    key_valid: Bool[Array, "b s"] | None = None,
    mask: Bool[Array, "b t s"] | None = None,
) -> Float[Array, "b t h d"]:
    """cuDNN's fused attention through `jax.nn.dot_product_attention`.

    A causal window becomes cuDNN's sliding window; key_valid, an explicit mask or a
    window without causal become a dense (b, 1, t, s) mask (cuDNN's bias path: it runs,
    at O(t s) memory).

    Args:
      q, k, v, causal, q_offset, window, key_valid, mask: as in `attention`.

    Returns:
      The attention output, q's dtype.

    Raises:
      ValueError: q is not float16 / bfloat16, or q_offset is not the int 0.
    """
    b, t, h, d = q.shape
    s = k.shape[1]
    if q.dtype not in CUDNN_DTYPES or not _static_zero(q_offset):
        raise ValueError(f"cuDNN attention needs float16 or bfloat16 and q_offset=0; got "
                         f"{q.dtype}, q_offset={q_offset!r}")
    kw = {}
    dense = mask
    if window is not None and causal:
        kw["local_window_size"] = (window - 1, 0)
    elif window is not None:
        near = jnp.abs(jnp.arange(t)[:, None] - jnp.arange(s)[None, :]) < window
        dense = near[None] if dense is None else dense & near[None]
    if key_valid is not None:
        dense = key_valid[:, None, :] if dense is None else dense & key_valid[:, None, :]
    if dense is not None:
        kw["mask"] = jnp.broadcast_to(dense[:, None], (dense.shape[0], 1, t, s))
    out = jax.nn.dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype),
                                       scale=d**-0.5, is_causal=causal,
                                       implementation="cudnn", **kw)
    return out.astype(q.dtype)

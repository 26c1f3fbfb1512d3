"""GPTQ: column-by-column rounding with optimal-brain-surgeon updates of the columns not yet
rounded, blocked with lazy batch updates, on every effjax format.

For W (d_out, d_in) and the layer-input Hessian H = 2 X^T X / n: U is the upper Cholesky
factor of (H + damp * mean(diag H) * I)^-1; for column j in order, q_j = Q(w_j) on the
format's grid, e_j = (w_j - q_j) / U_jj and w_k -= e_j U_jk for k > j (inside a block at
once, the rest of the matrix after each block). Block-scaled formats fix a group's scales
when the loop reaches the group's first column (from the updated weights), or up front
(`static_groups`, required with `act_order` for grouped formats); per-channel and
per-tensor scales are fixed up front.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from effjax.formats import QArray, core
from effjax.formats.registry import Format, get_format
from effjax.ptq.scales import search_scales


def _column(w: Float[Array, " d"], stored: dict, fmt: Format, pos: jax.Array):
    """One column's element values and dequantized values under its group's stored arrays.

    HiF4's element rounding depends on the position in its 64-element unit (the level bits):
    the column is placed at `pos` of an otherwise zero unit.
    """
    if fmt.kind == "hif4":
        at = jnp.arange(core.group_size(fmt, 64)) == pos
        block = jnp.where(at[None, :], w[:, None], 0.0)[:, None, :]
        st = {"scale": stored["scale"][:, None], "levels": stored["levels"][:, None, :]}
        e = core.elements_given(block, st, fmt)
        v = core.apply_scale(e, st, fmt)
        return jnp.sum(jnp.where(at, e[:, 0], 0.0), -1), jnp.sum(jnp.where(at, v[:, 0], 0.0), -1)
    block = w[:, None, None]
    if not stored:  # casts, HiF8: elementwise grids without scales
        e = core.grid_values(block, fmt)[0]
    else:
        stored = {k: (v[:, None] if v.ndim else v) for k, v in stored.items()}
        e = core.elements_given(block, stored, fmt)
    return e[:, 0, 0], core.apply_scale(e, stored, fmt)[:, 0, 0]


def _stored_at(stored: dict, gi: jax.Array) -> dict:
    """Every per-group array's column gi (global scales unchanged)."""
    out = {}
    for k, v in stored.items():
        if k == "global_scale":
            out[k] = v
        else:
            col = jax.lax.dynamic_index_in_dim(v, jnp.minimum(gi, v.shape[1] - 1), axis=1,
                                               keepdims=False)
            out[k] = col
    return out


def _scales(block: Float[Array, "o nb g"], fmt: Format, hdiag: Float[Array, "nb g"] | None,
            global_scale=None) -> dict:
    """A block's stored scale arrays: the format's rule, or searched (weighted by the
    Hessian diagonal) when hdiag is given."""
    if hdiag is None:
        return core.grid_values(block, fmt, global_scale=global_scale)[1]
    return search_scales(block, fmt, weights=hdiag, global_scale=global_scale)


@functools.partial(jax.jit, static_argnames=("fmt", "block_size", "act_order", "static",
                                             "search"))
def _gptq(w: Float[Array, "o i"], u: Float[Array, "i i"], perm: jax.Array,
          hdiag: Float[Array, " i"], fmt: Format, block_size: int, act_order: bool,
          static: bool, search: bool):
    d_out, d_in = w.shape
    group = core.group_size(fmt, d_in)
    nb = d_in // group
    # Scales fixed up front (from the weights before any update), or per group on the way.
    stored = _scales(w.reshape(d_out, nb, group), fmt,
                     hdiag.reshape(nb, group) if search else None)
    if act_order:
        w = w[:, perm]
    elements = jnp.zeros_like(w)
    for b0 in range(0, d_in, block_size):
        b1 = min(b0 + block_size, d_in)
        w1 = w[:, b0:b1]
        u1 = u[b0:b1]

        def step(i, carry, b0=b0, b1=b1, u1=u1):
            w1, err1, e1, stored = carry
            col = b0 + i
            orig = perm[col]
            gi = orig // group
            if not static:  # entering a group: its scales from the updated weights
                def rescale(st):
                    block = jax.lax.dynamic_slice_in_dim(w1, i, group, axis=1)
                    hd = jax.lax.dynamic_slice_in_dim(hdiag, col, group)[None, :]
                    new = _scales(block[:, None, :], fmt, hd if search else None,
                                  st.get("global_scale"))
                    return {k: (v if k == "global_scale" else jax.lax.dynamic_update_slice_in_dim(
                        st[k], new[k], gi, axis=1)) for k, v in st.items()}
                stored = jax.lax.cond(orig % group == 0, rescale, lambda st: st, stored)
            wi = w1[:, i]
            e, q = _column(wi, _stored_at(stored, gi), fmt, orig % group)
            err = (wi - q) / u1[i, col]
            w1 = w1 - err[:, None] * jax.lax.dynamic_slice_in_dim(u1[i], b0, b1 - b0)[None, :]
            return (w1, err1.at[:, i].set(err), e1.at[:, i].set(e), stored)

        init = (w1, jnp.zeros_like(w1), jnp.zeros_like(w1), stored)
        w1, err1, e1, stored = jax.lax.fori_loop(0, b1 - b0, step, init)
        elements = elements.at[:, b0:b1].set(e1)
        if b1 < d_in:
            w = w.at[:, b1:].add(-err1 @ u[b0:b1, b1:])
    if act_order:
        elements = elements[:, jnp.argsort(perm)]
    return elements.reshape(d_out, nb, group), stored


def gptq_quantize(kernel: Float[Array, "i o"], xtx: Float[Array, "i i"], count: int,
                  fmt: str | Format, *, block_size: int = 128, damp: float = 0.01,
                  act_order: bool = False, static_groups: bool = False,
                  scale_search: bool = False) -> QArray:
    """GPTQ of one linear layer's kernel onto a format.

    Args:
      kernel: (d_in, d_out) float weights (the decoder's layout: x @ kernel).
      xtx: (d_in, d_in) sum of x x^T of the layer's calibration inputs.
      count: the number of calibration tokens in xtx.
      fmt: any weight format (name or `Format`); groups run along d_in.
      block_size: columns per lazy-update block (a multiple of the format's group).
      damp: dampening, as a fraction of the mean Hessian diagonal; raised 10x (up to twice)
        if the damped Hessian is still not positive definite.
      act_order: process columns by decreasing Hessian diagonal.
      static_groups: fix every group's scales from the original weights up front.
      scale_search: choose each group's scale by `effjax.ptq.scales.search_scales`, the
        error weighted by the Hessian diagonal (MR-GPTQ's MSE scale search), instead of the
        format's amax rule.

    Returns:
      A QArray along axis 0 of shape (d_in, d_out): the GPTQ weights, stored exactly.
      Inputs that calibration never saw (zero Hessian diagonal) get zero weight columns.
    """
    fmt = get_format(fmt)
    kernel = jnp.asarray(kernel)
    if kernel.ndim != 2 or xtx.shape != (kernel.shape[0], kernel.shape[0]):
        raise ValueError(f"kernel must be (d_in, d_out) and xtx (d_in, d_in), got {kernel.shape} "
                         f"and {xtx.shape}")
    d_in = kernel.shape[0]
    group = core.group_size(fmt, d_in)
    if fmt.granularity == "group" and block_size % group:
        raise ValueError(f"block_size={block_size} must be a multiple of {fmt.name}'s group "
                         f"{group}")
    if act_order and fmt.granularity == "group" and not static_groups:
        raise ValueError("act_order with a grouped format needs static_groups=True")
    if count < 1 or damp <= 0:
        raise ValueError(f"count must be >= 1 and damp > 0, got {count} and {damp}")
    kp = -(-d_in // group) * group
    h = 2.0 * np.asarray(xtx, np.float64) / count
    w = np.asarray(kernel, np.float64).T
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    if kp != d_in:  # padded inputs: independent, weight 0
        h = np.pad(h, ((0, kp - d_in), (0, kp - d_in)))
        h[d_in:, d_in:] = np.eye(kp - d_in)
        w = np.pad(w, ((0, 0), (0, kp - d_in)))
    perm = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(kp)
    for attempt in range(3):
        hd = h + damp * 10**attempt * np.mean(np.diag(h)) * np.eye(kp)
        hd = hd[perm][:, perm]
        try:
            u = np.linalg.cholesky(np.linalg.inv(hd)).T  # upper: (H^-1) = U^T U
        except np.linalg.LinAlgError:
            continue
        if np.all(np.isfinite(u)) and np.all(np.diag(u) > 0):
            break
    else:
        raise ValueError("the damped Hessian is not positive definite even at "
                         f"damp={damp * 100}; check the calibration statistics")
    elements, stored = _gptq(jnp.asarray(w, jnp.float32), jnp.asarray(u, jnp.float32),
                             jnp.asarray(perm, jnp.int32), jnp.asarray(np.diag(h), jnp.float32),
                             fmt, block_size, act_order,
                             static_groups or fmt.granularity != "group", scale_search)
    return core.assemble(elements, stored, fmt, 0, tuple(kernel.shape), kernel.dtype)

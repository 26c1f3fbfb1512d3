"""Scale search: per block, the stored scale among nearby candidates that minimizes the
block's (optionally weighted) squared quantization error, instead of the format's amax rule.

Candidates per format: MX, the E8M0 exponent of the amax rule offset by -1, 0 or +1 (the
study's pre-scale / scale-exponent optimization: a power of two up avoids clipping the
block's largest element, down spends the grid on the bulk); NVFP4, the E4M3 block scale
times 0.75..1.25 re-rounded to E4M3 (MR-GPTQ's MSE scale search for FP4 blocks); INT and FP8,
the float scale times 0.5..1.1 (clipping included; symmetric INT only). HiF4 and
asymmetric INT keep the amax rule.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from effjax.formats import QArray, core, elements
from effjax.formats.registry import Format, get_format

MX_OFFSETS = (-1, 0, 1)
NVFP4_FACTORS = tuple(np.linspace(0.75, 1.25, 11))
FLOAT_FACTORS = tuple(np.linspace(0.5, 1.1, 13))


def _candidates(base: dict, fmt: Format) -> list[dict]:
    if fmt.kind == "mx":
        code = base["scale"].astype(jnp.int32)
        finite = code != 255  # NaN blocks keep their code
        return [{**base, "scale": jnp.where(finite, jnp.clip(code + off, 0, 254), code)
                 .astype(base["scale"].dtype)} for off in MX_OFFSETS]
    if fmt.kind == "nvfp4":
        s = base["scale"].astype(jnp.float32)
        e4m3 = elements.ELEMENTS["e4m3"]
        return [{**base, "scale": elements.round_to_element(
            jnp.clip(s * f, e4m3.min_subnormal, e4m3.max_normal), e4m3).astype(
                base["scale"].dtype)} for f in NVFP4_FACTORS]
    if fmt.kind == "fp8" or (fmt.kind == "int" and fmt.symmetric):
        return [{**base, "scale": base["scale"] * f} for f in FLOAT_FACTORS]
    return [base]


def search_scales(xb: Float[Array, "*rest nb g"], fmt: str | Format, *,
                  weights: Float[Array, "nb g"] | None = None,
                  global_scale: jax.Array | None = None) -> dict:
    """The stored arrays of blocks with each block's scale chosen by error.

    Args:
      xb: float32 blocks (*rest, nb, g) (as `core.to_blocks` makes them).
      fmt: the format (name or `Format`).
      weights: optional nonnegative per-position weights, broadcast against xb (e.g. the
        Hessian diagonal of the layer's inputs: the error then approximates the output
        error); default uniform.
      global_scale: NVFP4's second-level scale, if fixed already.

    Returns:
      A dict like `core.block_scales` (and "levels" for HiF4), never worse per block than
      the amax rule (which is among the candidates).
    """
    fmt = get_format(fmt)
    _, base = core.grid_values(xb, fmt, global_scale=global_scale)
    if not base:
        return base
    w = jnp.ones((), jnp.float32) if weights is None else jnp.broadcast_to(
        jnp.asarray(weights, jnp.float32), xb.shape)
    best, best_err = base, None
    for stored in _candidates(base, fmt):
        v = core.apply_scale(core.elements_given(xb, stored, fmt), stored, fmt)
        err = jnp.sum(w * jnp.square(v - xb), axis=-1)
        err = jnp.where(jnp.isnan(err), jnp.inf, err)
        if best_err is None:
            best, best_err = stored, err
            continue
        take = err < best_err
        best = {k: jnp.where(take, stored[k], best[k]) if k in ("scale", "zero_point") else
                best[k] for k in best}
        best_err = jnp.minimum(err, best_err)
    return best


def quantize_searched(x: Float[Array, ...], fmt: str | Format, axis: int = 0, *,
                      weights: Float[Array, " k"] | None = None) -> QArray:
    """`effjax.formats.quantize` with searched scales (`search_scales`).

    Args:
      x: float array.
      fmt: the format.
      axis: the quantization axis (groups run along it).
      weights: optional (x.shape[axis],) nonnegative weights of the positions along axis.

    Returns:
      A QArray; dequantizing it is never further from x, block by block (in the weighted
      error), than `quantize(x, fmt, axis)`.
    """
    fmt = get_format(fmt)
    x = jnp.asarray(x)
    axis = core.check_input(x, axis)
    k = x.shape[axis]
    group = core.group_size(fmt, k)
    xb = core.to_blocks(x.astype(jnp.float32), axis, group)
    w = None
    if weights is not None:
        weights = jnp.asarray(weights, jnp.float32)
        if weights.shape != (k,):
            raise ValueError(f"weights must have shape ({k},), got {weights.shape}")
        kp = -(-k // group) * group
        w = jnp.pad(weights, (0, kp - k)).reshape(kp // group, group)
    stored = search_scales(xb, fmt, weights=w)
    elements_ = core.elements_given(xb, stored, fmt)
    return core.assemble(elements_, stored, fmt, axis, x.shape, x.dtype)

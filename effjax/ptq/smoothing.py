"""Scale migration methods: SmoothQuant and AWQ.

Both divide a projection group's input channels by scales s and multiply the kernels' rows by
s (`effjax.transforms.smooth`: into the preceding RMSNorm for q/k/v and gate/up, into up_proj
for down_proj), then quantize. SmoothQuant sets s_j = max|x_j|^a / max|W_j|^(1-a) so that
activations are easier to quantize; AWQ searches s = mean|x|^a for the a that minimizes the
group's calibration output error under the weight format, then searches a clipping ratio per
output channel and group.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from tqdm.auto import tqdm

from effjax.formats import core, dequantize, quantize
from effjax.formats.registry import Format
from effjax.ptq.calibrate import LayerStats
from effjax.ptq.methods import _per_kernel, _require, _targets, rtn
from effjax.quant.recipe import Recipe, get_layer
from effjax.transforms import smooth
from effjax.transforms.fold import GATE_UP, QKV

# scales key -> (the projections it scales, the one whose input statistics it uses)
GROUPS = {"attn/qkv": tuple(("attn", p) for p in QKV),
          "mlp/gate_up": tuple(("mlp", p) for p in GATE_UP),
          "mlp/down_proj": (("mlp", "down_proj"),)}
CLIP_RATIOS = tuple(np.round(np.arange(1.0, 0.5, -0.05), 2))


def _groups(params, calib, recipe: Recipe) -> list[tuple[str, list[str]]]:
    """(scales key, projection paths) of every group whose projections the recipe matches."""
    matched = {name for _, name in _targets(params, recipe)}
    out = []
    for i in sorted(params["layers"]):
        for key, members in GROUPS.items():
            names = [f"layers/{i}/{b}/{p}" for b, p in members]
            if all(n in matched for n in names):
                _require(calib, names[:1])
                out.append((f"layers/{i}/{key}", names))
    return out


def smoothquant_scales(params, calib: dict[str, LayerStats], recipe: Recipe, *,
                       alpha: float = 0.5) -> dict[str, np.ndarray]:
    """SmoothQuant's migration scales s_j = max|x_j|^alpha / max|W_j|^(1 - alpha).

    Args:
      params: float decoder parameters.
      calib: `calibrate`'s statistics (per-channel absmax of each layer's input).
      recipe: which projections are quantized (groups are smoothed when all match).
      alpha: migration strength in [0, 1].

    Returns:
      {scales key: (d_in,) float64 s} for `effjax.transforms.smooth`; channels never active
      (or with zero weights) get 1.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    scales = {}
    for key, names in _groups(params, calib, recipe):
        amax = np.asarray(calib[names[0]].absmax, np.float64)
        wmax = np.max([np.max(np.abs(np.asarray(get_layer(params, n)["kernel"], np.float64)),
                              axis=1) for n in names], axis=0)
        s = np.where((amax > 0) & (wmax > 0), amax**alpha / np.maximum(wmax, 1e-12)**(1 - alpha),
                     1.0)
        scales[key] = np.clip(s, 1e-5, 1e5)
    return scales


def smoothquant(params, calib: dict[str, LayerStats], recipe: Recipe, *, alpha: float = 0.5):
    """SmoothQuant: migrate activation outliers into the weights, then round to nearest.

    Args:
      params: float decoder parameters.
      calib: `calibrate`'s statistics.
      recipe: the `Recipe` (weights quantized by it; its activation formats then see the
        smoothed activations).
      alpha: migration strength.

    Returns:
      params, smoothed, with QArray kernels.
    """
    return rtn(smooth(params, smoothquant_scales(params, calib, recipe, alpha=alpha)), None,
               recipe)


def _error(w: Float[Array, "i o"], wq: Float[Array, "i o"], xtx: Float[Array, "i i"]):
    """Calibration output error ||X (wq - w)||^2 from X^T X."""
    d = wq - w
    return jnp.sum((xtx @ d) * d)


@functools.partial(jax.jit, static_argnames=("fmt",))
def _alpha_errors(kernels: tuple, xtx: Float[Array, "i i"], mean_abs: Float[Array, " i"],
                  alphas: Float[Array, " a"], fmt: Format) -> Float[Array, " a"]:
    def one(alpha):
        s = jnp.maximum(mean_abs, 1e-4) ** alpha
        s = s / jnp.sqrt(jnp.max(s) * jnp.min(s))
        err = 0.0
        for w in kernels:
            wq = dequantize(quantize(w * s[:, None], fmt, axis=0), jnp.float32) / s[:, None]
            err = err + _error(w, wq, xtx)
        return err

    return jax.lax.map(one, alphas)


def awq_scales(params, calib: dict[str, LayerStats], recipe: Recipe, *, grid: int = 20,
               progress: bool = True) -> dict[str, np.ndarray]:
    """AWQ's activation-aware scales: per group, s = mean|x|^a (normalized) for the a on a
    grid of [0, 1) that minimizes the group's calibration output error after quantization.

    Args:
      params: float decoder parameters.
      calib: `calibrate`'s statistics (X^T X and the input sample of each group).
      recipe: the weight formats (groups are scaled when all their projections match).
      grid: number of alphas tried (a = 0 is plain RTN, so never worse in this error).
      progress: show a progress bar.

    Returns:
      {scales key: (d_in,) float64 s} for `effjax.transforms.smooth`.
    """
    alphas = jnp.arange(grid, dtype=jnp.float32) / grid
    scales = {}
    for key, names in tqdm(_groups(params, calib, recipe), desc="awq scales",
                           disable=not progress):
        st = calib[names[0]]
        mean_abs = jnp.mean(jnp.abs(st.sample), axis=0)
        kernels = tuple(jnp.asarray(get_layer(params, n)["kernel"], jnp.float32) for n in names)
        errs = _alpha_errors(kernels, st.xtx / st.count.astype(jnp.float32), mean_abs, alphas,
                             recipe.rule_for(names[0]).weight)
        a = float(alphas[int(jnp.argmin(errs))])
        s = np.maximum(np.asarray(mean_abs, np.float64), 1e-4) ** a
        scales[key] = s / np.sqrt(s.max() * s.min())
    return scales


@functools.partial(jax.jit, static_argnames=("fmt", "group"))
def _clip_search(w: Float[Array, "i o"], xtx: Float[Array, "i i"], fmt: Format, group: int):
    """w clipped per (group, output channel) to ratio * the group's max |w|, the ratio of
    CLIP_RATIOS with the least error of that group's block of X^T X (cross-group terms are
    left out, as in AWQ)."""
    d_in, d_out = w.shape
    nb = -(-d_in // group)  # a last, partial group is padded with zeros, as the formats do
    pad = nb * group - d_in
    wb = jnp.pad(w, ((0, pad), (0, 0))).reshape(nb, group, d_out)
    xtx = jnp.pad(xtx, ((0, pad), (0, pad)))
    xb = jnp.stack([xtx[b * group:(b + 1) * group, b * group:(b + 1) * group]
                    for b in range(nb)])
    top = jnp.max(jnp.abs(wb), axis=1, keepdims=True)
    best_w, best_err = wb, jnp.full((nb, d_out), jnp.inf)
    for r in CLIP_RATIOS:
        wc = jnp.clip(wb, -r * top, r * top)
        d = dequantize(quantize(wc.reshape(-1, d_out), fmt, axis=0), jnp.float32).reshape(
            wb.shape) - wb
        err = jnp.einsum("bio,bij,bjo->bo", d, xb, d)
        take = err < best_err
        best_w = jnp.where(take[:, None, :], wc, best_w)
        best_err = jnp.minimum(err, best_err)
    return best_w.reshape(-1, d_out)[:d_in]


def awq(params, calib: dict[str, LayerStats], recipe: Recipe, *, grid: int = 20,
        clip: bool = True, progress: bool = True):
    """AWQ: activation-aware scales (`awq_scales`) migrated into the weights, a clipping
    ratio searched per output channel and group, then round to nearest.

    Args:
      params: float decoder parameters.
      calib: `calibrate`'s statistics for every matched layer.
      recipe: the `Recipe`.
      grid: alphas tried by the scale search.
      clip: also search the clipping ratios.
      progress: show progress bars.

    Returns:
      params, scaled, with QArray kernels.
    """
    scales = awq_scales(params, calib, recipe, grid=grid, progress=progress)
    scaled = smooth(params, scales)
    of_layer = {n: scales[key] for key, names in _groups(params, calib, recipe) for n in names}

    def one(name, w, stats, fmt):
        w = jnp.asarray(w, jnp.float32)
        if clip:
            s = of_layer.get(name)
            xtx = np.asarray(stats.xtx, np.float64) / int(stats.count)
            if s is not None:  # the kernel's input is x / s now
                xtx = xtx / np.outer(s, s)
            w = _clip_search(w, jnp.asarray(xtx, jnp.float32), fmt,
                             core.group_size(fmt, w.shape[0]))
        return quantize(w, fmt, axis=0)

    return _per_kernel(scaled, calib, recipe, "awq clip", progress, one)


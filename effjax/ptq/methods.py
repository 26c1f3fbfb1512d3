"""Post-training quantization methods as pure functions over parameter pytrees."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from effjax.formats import QArray
from effjax.ptq.calibrate import LayerStats
from effjax.ptq.gptq import gptq_quantize
from effjax.ptq.scales import quantize_searched
from effjax.quant.recipe import Recipe, layer_path, quantize_params
from effjax.transforms import add_input_transform, hadamard_pair


def _targets(params, recipe: Recipe) -> list[tuple[tuple, str]]:
    """(key path, layer path) of every float kernel the recipe gives a weight format."""
    out = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(
            params, is_leaf=lambda x: isinstance(x, QArray)):
        if isinstance(leaf, QArray) or getattr(path[-1], "key", None) != "kernel":
            continue
        rule = recipe.rule_for(layer_path(path))
        if rule is not None and rule.weight is not None:
            out.append((path, layer_path(path)))
    if not out:
        raise ValueError("the recipe's patterns match no kernel of params: "
                         f"{[r.pattern for r in recipe.rules]}")
    return out


def rtn(params, calib: dict[str, LayerStats] | None, recipe: Recipe):
    """Round to nearest: every matched kernel quantized on its own (calibration unused).

    Args:
      params: a decoder parameter pytree.
      calib: ignored (accepted so every method has the same signature), may be None.
      recipe: the `Recipe` (weight formats by layer path).

    Returns:
      params with QArray kernels.
    """
    del calib
    _targets(params, recipe)  # refuses a recipe that matches nothing
    return quantize_params(params, recipe)


def gptq(params, calib: dict[str, LayerStats], recipe: Recipe, *, block_size: int = 128,
         damp: float = 0.01, act_order: bool = False, static_groups: bool = False,
         scale_search: bool = False, progress: bool = True):
    """GPTQ of every matched kernel from its layer's calibration Hessian.

    Args:
      params: a decoder parameter pytree.
      calib: `calibrate`'s statistics, with an entry for every matched layer.
      recipe: the `Recipe`.
      block_size, damp, act_order, static_groups, scale_search: see `gptq_quantize`.
      progress: show a progress bar.

    Returns:
      params with QArray kernels.
    """
    return _per_kernel(params, calib, recipe, "gptq", progress, lambda _, w, stats, fmt: (
        gptq_quantize(w, stats.xtx, int(stats.count), fmt, block_size=block_size, damp=damp,
                      act_order=act_order, static_groups=static_groups,
                      scale_search=scale_search)))


def scale_opt(params, calib: dict[str, LayerStats], recipe: Recipe, *,
              weighted: bool = True, progress: bool = True):
    """Round to nearest with each block's scale searched (`effjax.ptq.scales`): for MX the
    scale exponent offset (the MX pre-scale optimization), for NVFP4 / INT / FP8 the scale.

    Args:
      params: a decoder parameter pytree.
      calib: `calibrate`'s statistics (their X^T X diagonal weights the error when
        `weighted`; may be None when not).
      recipe: the `Recipe`.
      weighted: weight each input channel's error by its mean squared input.
      progress: show a progress bar.

    Returns:
      params with QArray kernels.
    """
    def one(_, w, stats, fmt):
        weights = jnp.diag(stats.xtx) / stats.count.astype(jnp.float32) if weighted else None
        return quantize_searched(w, fmt, 0, weights=weights)

    if not weighted:
        calib = None
    return _per_kernel(params, calib, recipe, "scale search", progress, one)


def mr_gptq(params, calib: dict[str, LayerStats], recipe: Recipe, *, block_size: int = 128,
            damp: float = 0.01, progress: bool = True):
    """MR-GPTQ: a block-wise Hadamard rotation (blocks of the format's group) before every
    matched projection, then GPTQ with Hessian-weighted scale search.

    The rotation x -> x (I (x) H_g / sqrt(g)) is an online transform of the input (it adds
    an `input_transform` beside each kernel) and W -> (I (x) H_g)^T W / sqrt(g) is folded into
    the kernel, so the float model is unchanged; the calibration X^T X is rotated the same
    way (exactly), so no new calibration pass is needed.

    Args:
      params: a float decoder parameter pytree.
      calib: `calibrate`'s statistics for every matched layer.
      recipe: the `Recipe`; its weight formats must have groups (block formats, grouped INT).
      block_size, damp: see `gptq_quantize`.
      progress: show a progress bar.

    Returns:
      params with QArray kernels and input transforms.
    """
    targets = _targets(params, recipe)
    rotated, stats = params, {}
    for path, name in targets:
        fmt = recipe.rule_for(name).weight
        if fmt.granularity != "group":
            raise ValueError(f"mr_gptq rotates within the weight format's groups; {name}'s "
                             f"format {fmt.name} has {fmt.granularity} scales")
        d_in = _get(params, path).shape[0]
        g = fmt.group_size
        if d_in % g:
            raise ValueError(f"mr_gptq needs whole groups: {name} has {d_in} inputs, not a "
                             f"multiple of {fmt.name}'s group {g}")
        left, right = jnp.eye(d_in // g, dtype=jnp.float32), hadamard_pair(g)[1]
        rotated = add_input_transform(rotated, f"^{re.escape(name)}$", left, right)
        _require(calib, [name])
        t = np.kron(np.eye(d_in // g), np.asarray(right, np.float64))
        st = calib[name]
        stats[name] = st._replace(
            xtx=jnp.asarray(t.T @ np.asarray(st.xtx, np.float64) @ t, jnp.float32),
            sample=jnp.asarray(np.asarray(st.sample, np.float64) @ t, jnp.float32),
            absmax=jnp.max(jnp.abs(jnp.asarray(np.asarray(st.sample, np.float64) @ t)), 0))
    return gptq(rotated, stats, recipe, block_size=block_size, damp=damp, scale_search=True,
                progress=progress)


def _require(calib, names) -> None:
    missing = [n for n in names if calib is None or n not in calib]
    if missing:
        raise ValueError(f"no calibration statistics for {missing[:3]} (of {len(missing)})")


def _per_kernel(params, calib, recipe: Recipe, desc: str, progress: bool, quantize_one):
    """Every matched kernel replaced by quantize_one(layer path, kernel, its stats or None,
    format)."""
    targets = _targets(params, recipe)
    if calib is not None:
        _require(calib, [name for _, name in targets])
    done = {}
    for path, name in tqdm(targets, desc=desc, disable=not progress):
        done[name] = quantize_one(name, _get(params, path),
                                  None if calib is None else calib[name],
                                  recipe.rule_for(name).weight)

    def replace(path, leaf):
        return done.get(layer_path(path), leaf) if getattr(path[-1], "key", None) == "kernel" \
            else leaf

    return jax.tree_util.tree_map_with_path(replace, params,
                                            is_leaf=lambda x: isinstance(x, QArray))


def _get(tree, path):
    for k in path:
        tree = tree[getattr(k, "key", getattr(k, "idx", k))]
    return tree

"""Post-training quantization methods as pure functions over parameter pytrees."""

from __future__ import annotations

import jax
from tqdm.auto import tqdm

from effjax.formats import QArray
from effjax.ptq.calibrate import LayerStats
from effjax.ptq.gptq import gptq_quantize
from effjax.quant.recipe import Recipe, layer_path, quantize_params


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
         progress: bool = True):
    """GPTQ of every matched kernel from its layer's calibration Hessian.

    Args:
      params: a decoder parameter pytree.
      calib: `calibrate`'s statistics, with an entry for every matched layer.
      recipe: the `Recipe`.
      block_size, damp, act_order, static_groups: see `gptq_quantize`.
      progress: show a progress bar.

    Returns:
      params with QArray kernels.
    """
    targets = _targets(params, recipe)
    missing = [name for _, name in targets if name not in calib]
    if missing:
        raise ValueError(f"no calibration statistics for {missing[:3]} (of {len(missing)})")
    done = {}
    for path, name in tqdm(targets, desc="gptq", disable=not progress):
        leaf = _get(params, path)
        stats = calib[name]
        done[name] = gptq_quantize(leaf, stats.xtx, int(stats.count),
                                   recipe.rule_for(name).weight, block_size=block_size,
                                   damp=damp, act_order=act_order, static_groups=static_groups)

    def replace(path, leaf):
        return done.get(layer_path(path), leaf) if getattr(path[-1], "key", None) == "kernel" \
            else leaf

    return jax.tree_util.tree_map_with_path(replace, params,
                                            is_leaf=lambda x: isinstance(x, QArray))


def _get(tree, path):
    for k in path:
        tree = tree[getattr(k, "key", getattr(k, "idx", k))]
    return tree

"""Quantized execution: recipes (path -> weight, activation, KV formats), quantize_params, qdot."""

from effjax.quant.dot import qdot
from effjax.quant.recipe import Recipe, Rule, get_layer, layer_path, quantize_params, recipe

__all__ = ["Recipe", "Rule", "get_layer", "layer_path", "qdot", "quantize_params", "recipe"]

"""Quantized execution: recipes (path -> weight, activation, KV formats), quantize_params, qdot.

Contents: `recipe(weight, activation, kv_cache)` / `Recipe(rules=(Rule(pattern, weight,
activation), ...), kv_cache=...)` by layer path; `quantize_params(params, recipe)` puts
`QArray`s in the pytree; `qdot` is what `effjax.models.linear` runs: dequantize-and-matmul with
float32 accumulation, or, when weights and activations are both MXFP8/MXFP4/NVFP4, exact
bfloat16 block values in a float32-accumulating dot (bit for bit `jax.lax.scaled_dot`).
"""

from effjax.quant.dot import qdot
from effjax.quant.recipe import Recipe, Rule, get_layer, layer_path, quantize_params, recipe

__all__ = ["Recipe", "Rule", "get_layer", "layer_path", "qdot", "quantize_params", "recipe"]

"""Calibration: per linear layer input statistics, captured by the forward pass."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int
from tqdm.auto import tqdm

from effjax.models.config import LMConfig
from effjax.models.decoder import block_forward, embed, forward
from effjax.models.layers import rms_norm
from effjax.quant.recipe import Recipe


class LayerStats(NamedTuple):
    """What calibration keeps of one linear layer's inputs (never all of them).

    Attributes:
      xtx: (d_in, d_in) float32 sum of x x^T over the tokens seen (GPTQ's Hessian is
        2 xtx / count).
      count: () int32 tokens seen.
      absmax: (d_in,) float32 largest |x| per input channel.
      sample: (s, d_in) float32, the first s token inputs (s <= the sample size).
    """

    xtx: Float[Array, "d d"]
    count: Int[Array, ""]
    absmax: Float[Array, " d"]
    sample: Float[Array, "s d"]


@functools.partial(jax.jit, static_argnames=("config", "sample_size"))
def _batch_stats(params, tokens: Int[Array, "b t"], config: LMConfig,
                 sample_size: int) -> dict[str, LayerStats]:
    inputs = forward(params, tokens, config=config, capture=("inputs",))[2]["inputs"]
    return _reduce(_rows(inputs), sample_size)


def _rows(inputs: dict[str, jax.Array]) -> dict[str, Float[Array, "tokens d"]]:
    return {path: x.reshape(-1, x.shape[-1]).astype(jnp.float32) for path, x in inputs.items()}


def _reduce(seen: dict[str, jax.Array], sample_size: int) -> dict[str, LayerStats]:
    return {path: LayerStats(
        xtx=jnp.einsum("ti,tj->ij", x, x, precision=jax.lax.Precision.HIGHEST),
        count=jnp.int32(x.shape[0]), absmax=jnp.max(jnp.abs(x), axis=0),
        sample=x[:sample_size]) for path, x in seen.items()}


def _context_options(context) -> dict:
    """`block_forward`'s positions / attn_mask / token_types from a `layerwise.LayerContext`
    (None: its defaults)."""
    if context is None:
        return {}
    return dict(positions=context.positions, attn_mask=context.attn_mask,
                token_types=context.token_types)


def block_inputs(layer_params, x, index: int, recipe: Recipe | None = None,
                 context=None, *, config: LMConfig) -> dict[str, jax.Array]:
    """Every projection's input in one layer, (tokens, d_in) float32 per path, as the layer
    captures it (`block_forward` with `context`'s positions, attention mask and token
    types)."""
    _, found = block_forward(layer_params, x, config=config, index=index, recipe=recipe,
                             capture=("inputs",), **_context_options(context))
    return _rows(found["inputs"])


@functools.partial(jax.jit, static_argnames=("config", "index", "recipe", "sample_size"))
def _block_stats(layer_params, x, config: LMConfig, index: int, recipe: Recipe | None,
                 sample_size: int) -> dict[str, LayerStats]:
    return _reduce(block_inputs(layer_params, x, index, recipe, config=config), sample_size)


@functools.partial(jax.jit, static_argnames=("config", "index", "recipe"))
def block_out(layer_params, x, index: int, recipe: Recipe | None,
              context=None, *, config: LMConfig):
    """`block_forward`, jitted (one compile per layer index and recipe); `context` gives its
    positions, attention mask and token types (a `layerwise.LayerContext`, or None)."""
    return block_forward(layer_params, x, config=config, index=index, recipe=recipe,
                         **_context_options(context))


def calibrate_sequential(params, tokens: Int[Array, "n t"], quantize_layer, *,
                         config: LMConfig, recipe: Recipe | None = None, batch_size: int = 8,
                         sample_size: int = 512, progress: bool = True):
    """Calibrates and quantizes layer by layer: layer i's statistics are those of the inputs
    that layers 0..i-1, already quantized, produce (GPTQ's sequential mode).

    Args:
      params: float parameters.
      config: the model's config.
      tokens: (n, t) int32 calibration windows.
      quantize_layer: `(params, stats, index) -> params` quantizing layer `index`'s
        projections from `stats` ({path: LayerStats} of that layer); index None is the
        output head ("lm_head", the final-norm output), called last.
      recipe: activation / KV-cache formats the quantized layers run with while later
        layers are calibrated.
      batch_size, sample_size, progress: as in `calibrate`.

    Returns:
      The quantized parameters.
    """
    tokens = _check(tokens, batch_size, sample_size)
    hidden = [embed(params, jnp.asarray(tokens[s:s + batch_size], jnp.int32), config=config)
              for s in range(0, tokens.shape[0], batch_size)]
    for i in tqdm(sorted(params["layers"]), desc="sequential calibration",
                  disable=not progress):
        stats = None
        for x in hidden:
            batch = _block_stats(params["layers"][i], x, config, i, recipe, sample_size)
            stats = _accumulate(stats, batch, sample_size)
        params = quantize_layer(params, stats, i)
        hidden = [block_out(params["layers"][i], x, i, recipe, config=config) for x in hidden]
    normed = [rms_norm(x, params["norm"]["weight"], config.rms_norm_eps) for x in hidden]
    stats = None
    for x in normed:
        batch = _reduce({"lm_head": x.reshape(-1, x.shape[-1]).astype(jnp.float32)},
                        sample_size)
        stats = _accumulate(stats, batch, sample_size)
    return quantize_layer(params, stats, None)


def _check(tokens, batch_size: int, sample_size: int) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise ValueError(f"tokens must be (n, t) calibration windows, got shape {tokens.shape}")
    if batch_size < 1 or sample_size < 1:
        raise ValueError(f"batch_size and sample_size must be >= 1, got {batch_size}, "
                         f"{sample_size}")
    return tokens


def _accumulate(stats: dict[str, LayerStats] | None, batch: dict[str, LayerStats],
                sample_size: int) -> dict[str, LayerStats]:
    """Statistics so far (None before the first batch) merged with one batch's."""
    if stats is None:
        return batch
    return {p: _merge(stats[p], batch[p], sample_size) for p in stats}


def _merge(a: LayerStats, b: LayerStats, sample_size: int) -> LayerStats:
    return LayerStats(xtx=a.xtx + b.xtx, count=a.count + b.count,
                      absmax=jnp.maximum(a.absmax, b.absmax),
                      sample=jnp.concatenate([a.sample, b.sample])[:sample_size])


def calibrate(params, tokens: Int[Array, "n t"], *, config: LMConfig, batch_size: int = 8,
              sample_size: int = 512, progress: bool = True) -> dict[str, LayerStats]:
    """Runs the model over calibration windows and keeps per-layer input statistics.

    Args:
      params: the parameter pytree (float, or with QArray weights: the statistics are then
        those of the inputs the quantized layers before each layer produce).
      config: the model's config.
      tokens: (n, t) int32 calibration windows (no padding).
      batch_size: windows per forward pass (n need not be a multiple).
      sample_size: token inputs kept per layer (the first ones).
      progress: show a progress bar.

    Returns:
      {layer path ("layers/3/mlp/down_proj", ...): LayerStats}.
    """
    tokens = _check(tokens, batch_size, sample_size)
    stats = None
    starts = range(0, tokens.shape[0], batch_size)
    for s in tqdm(starts, desc="calibration", disable=not progress):
        batch = _batch_stats(params, jnp.asarray(tokens[s:s + batch_size], jnp.int32), config,
                             sample_size)
        stats = _accumulate(stats, batch, sample_size)
    return stats

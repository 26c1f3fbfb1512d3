"""Layer-wise training of learned quantization transforms (FlatQuant, BATQuant): each
decoder layer's parameters learned with Adam so that the quantized layer's output matches
the float layer's, layer i training on the inputs the already-quantized layers before it
produce (sequential), then quantized for good before the next layer."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int
from tqdm.auto import tqdm

from effjax.formats import fake_quant_learnable_clip, group_amax, quantize
from effjax.models.config import LMConfig
from effjax.models.decoder import block_forward, embed
from effjax.ptq.calibrate import block_out
from effjax.quant.recipe import Recipe
from effjax.transforms.fold import GATE_UP, QKV

# group name -> (block, projections sharing one transformed input)
GROUPS = {"qkv": ("attn", QKV), "o": ("attn", ("o_proj",)), "gate_up": ("mlp", GATE_UP),
          "down": ("mlp", ("down_proj",))}


CLIP_INIT = 6.0  # the clipping logits' start


def clip_ratio(logit: jax.Array) -> jax.Array:
    """A learnable clipping ratio: sigmoid(logit) / sigmoid(CLIP_INIT), at most 1.

    Exactly 1 (no clipping) at the start, lowered as training lowers the logit. (A ratio
    just below 1 is not harmless: under a power-of-two MX scale it drops the scale a binade
    for every block whose max sits just above a power of two, clipping that max by 25%.)
    """
    return jnp.minimum(jax.nn.sigmoid(logit) / jax.nn.sigmoid(CLIP_INIT), 1.0)


def clipped_kernel(w: jax.Array, ratio: jax.Array, fmt, *, fake: bool):
    """A kernel (d_in, d_out) clipped at ratio times each quantization group's absolute max
    along d_in, then fake-quantized (fake=True: the gradient reaches w and ratio) or
    quantized to a QArray (fake=False)."""
    if fake:
        return fake_quant_learnable_clip(w, ratio, fmt, axis=0)
    c = ratio * group_amax(w, fmt, axis=0)
    return quantize(jnp.clip(w, -c, c), fmt, axis=0)


def weight_format(recipe: Recipe, index: int, block: str, proj: str):
    """The recipe's weight format of layer `index`'s projection, or None."""
    rule = recipe.rule_for(f"layers/{index}/{block}/{proj}")
    return None if rule is None else rule.weight


def learned_groups(layer, recipe: Recipe, index: int):
    """(name, block, projections) of the layer's groups whose every projection has a weight
    format (the groups a learned transform is trained for)."""
    return [(name, block, projs) for name, (block, projs) in GROUPS.items()
            if all(weight_format(recipe, index, block, p) is not None for p in projs)]

class LayerContext(NamedTuple):
    """What the layers see besides the residual stream, for each of n calibration windows
    (None: `block_forward`'s defaults: causal, positions 0..t-1, no token types).

    Attributes:
      embeds: (n, t, hidden) the residual stream entering layer 0 (image features spliced
        in); default the tokens' embeddings.
      positions: (n, t) or (3, n, t) RoPE position ids.
      attn_mask: (n, t, t) which keys each query sees (all True: a masked-diffusion LM).
      token_types: (n, t) int32 token types in [0, k): the per-type transforms read them,
        and the layer loss weighs every type equally.
    """

    embeds: Float[Array, "n t h"] | None = None
    positions: Int[Array, "n t"] | Int[Array, "3 n t"] | None = None
    attn_mask: Bool[Array, "n t t"] | None = None
    token_types: Int[Array, "n t"] | None = None

    def rows(self, index) -> LayerContext:
        """The context of windows `index` (an index array)."""
        def take(a):
            return None if a is None else a[index]

        pos = self.positions
        if pos is not None:
            pos = pos[:, index] if pos.ndim == 3 else pos[index]
        return LayerContext(take(self.embeds), pos, take(self.attn_mask), take(self.token_types))


def token_weights(types: np.ndarray | None, shape: tuple[int, int]) -> jax.Array:
    """(b, t) loss weights summing to 1, each token type present getting an equal share
    (uniform without types)."""
    if types is None:
        return jnp.full(shape, 1.0 / (shape[0] * shape[1]), jnp.float32)
    types = np.asarray(types)
    present, counts = np.unique(types, return_counts=True)
    share = np.zeros(present[-1] + 1)
    share[present] = 1.0 / (len(present) * counts)
    return jnp.asarray(share[types], jnp.float32)


# init(layer, recipe, index, x, context) -> learnable pytree ({} when nothing is learned in
# the layer), given the layer's calibration input x (n, t, h) and its `LayerContext`;
# transformed(layer, learn, recipe, index, fake) -> the layer's params, fake-quantized
# (fake=True, differentiable in learn) or quantized to QArrays (fake=False).
Init = Callable[[dict, Recipe, int, jax.Array, LayerContext], dict]
Transformed = Callable[..., dict]


@functools.partial(jax.jit, static_argnames=("config", "index", "recipe", "transformed"))
def _layer_loss(learn, layer, x, target, weights, context: LayerContext, config: LMConfig,
                index: int, recipe: Recipe, transformed: Transformed):
    got = block_forward(transformed(layer, learn, recipe, index, fake=True), x, config=config,
                        index=index, recipe=recipe, positions=context.positions,
                        attn_mask=context.attn_mask, token_types=context.token_types)
    return jnp.sum(weights * jnp.mean(jnp.square(got - target), axis=-1))


_grad = jax.jit(jax.value_and_grad(_layer_loss),
                static_argnames=("config", "index", "recipe", "transformed"))


@functools.partial(jax.jit, static_argnames=("recipe", "index", "transformed"))
def _quantized(layer, learn, recipe: Recipe, index: int, transformed: Transformed):
    """The layer under its learned parameters, quantized (one compile, not one per op)."""
    return transformed(layer, learn, recipe, index, fake=False)


def train_layerwise(params, tokens: Int[Array, "n t"], recipe: Recipe, *,
                    config: LMConfig, init: Init, transformed: Transformed, steps: int,
                    batch_size: int, learning_rate: float, desc: str,
                    context: LayerContext | None = None,
                    optimizer: optax.GradientTransformation | None = None,
                    progress: bool = True) -> tuple[dict, dict[int, list[float]], dict]:
    """Learns and quantizes every layer in turn.

    Args:
      params: float decoder parameters.
      config: their config.
      tokens: (n, t) calibration windows.
      recipe: formats of the projections (and the activation / KV formats in the loss).
      init: the learnable parameters of a layer (see the module's `Init`).
      transformed: the layer under its learned parameters (see `Transformed`).
      steps: Adam steps per layer.
      batch_size: windows per step.
      learning_rate: Adam's step size.
      desc: the progress bar's label.
      context: the windows' layer-0 inputs, positions, attention mask and token types
        (`LayerContext`; default causal text windows).
      optimizer: in place of Adam at `learning_rate` (each layer starts it afresh).
      progress: show a progress bar.

    Returns:
      (params with every layer quantized, {layer: loss per step}, {layer: the learned
      parameters}).
    """
    if steps < 0 or batch_size < 1:
        raise ValueError(f"need steps >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    tokens = jnp.asarray(np.asarray(tokens, np.int32))
    context = LayerContext() if context is None else context
    x_fp = (embed(params, tokens, config=config) if context.embeds is None
            else jnp.asarray(context.embeds))
    if x_fp.shape[:2] != tokens.shape:
        raise ValueError(f"context.embeds must be (n, t, hidden) for tokens {tokens.shape}, got "
                         f"{x_fp.shape}")
    x_q = x_fp
    n = tokens.shape[0]
    every = context._replace(embeds=None)  # the layers' context; embeds enter layer 0 only
    types = None if every.token_types is None else np.asarray(every.token_types)
    out = dict(params)
    out["layers"] = dict(params["layers"])
    history, learned = {}, {}
    for i in tqdm(sorted(params["layers"]), desc=desc, disable=not progress):
        layer = params["layers"][i]
        target = block_out(layer, x_fp, i, None, every, config=config)
        learn = init(layer, recipe, i, x_q, every)
        losses = []
        if learn:
            opt = optax.adam(learning_rate) if optimizer is None else optimizer
            state = opt.init(learn)
            for s in range(steps):
                sl = np.arange(s * batch_size, (s + 1) * batch_size) % n
                weights = token_weights(None if types is None else types[sl],
                                        (len(sl), x_q.shape[1]))
                loss, g = _grad(learn, layer, x_q[sl], target[sl], weights, every.rows(sl),
                                config, i, recipe, transformed)
                with jax.numpy_dtype_promotion("standard"):  # optax mixes int step counts
                    updates, state = opt.update(g, state, learn)
                learn = optax.apply_updates(learn, updates)
                losses.append(float(loss))
        history[i], learned[i] = losses, learn
        out["layers"][i] = _quantized(layer, learn, recipe, i, transformed)
        x_fp = target
        x_q = block_out(out["layers"][i], x_q, i, recipe, every, config=config)
    return out, history, learned

"""FlatQuant: a learnable Kronecker affine transform P = A (x) B before each projection group
of every layer (q/k/v, o_proj, gate/up, down_proj) and a learnable clipping ratio per
output channel of each kernel, trained layer by layer with optax (Adam) so the quantized
layer's output matches the float layer's on the calibration inputs.

The transformed layer computes x P (online, `effjax.transforms.online`) against the kernel
P^-1 W, so before quantization it is the float layer exactly; the transforms start as
Hadamard matrices (orthogonal), the clipping ratios at 1.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Int
from tqdm.auto import tqdm

from effjax.formats import fake_quant_learnable_clip, group_amax, quantize
from effjax.models.config import LMConfig
from effjax.models.decoder import block_forward, embed
from effjax.quant.recipe import Recipe
from effjax.transforms import hadamard_pair, online
from effjax.transforms.fold import GATE_UP, QKV

# group name -> (block, projections sharing the transformed input)
GROUPS = {"qkv": ("attn", QKV), "o": ("attn", ("o_proj",)), "gate_up": ("mlp", GATE_UP),
          "down": ("mlp", ("down_proj",))}
_LOGIT_MAX = 6.0  # clipping ratio = sigmoid(logit): starts at 0.9975


def kron_split(d: int) -> tuple[int, int]:
    """(m, n) with m * n = d and n the largest divisor of d at most sqrt(d)."""
    n = max(k for k in range(1, int(d**0.5) + 1) if d % k == 0)
    return d // n, n


def _init_factor(size: int) -> jax.Array:
    """An orthogonal starting factor: a normalized Hadamard matrix when one exists."""
    try:
        left, right = hadamard_pair(size)
        return jnp.kron(left, right)
    except ValueError:
        return jnp.eye(size, dtype=jnp.float32)


def _init(layer, recipe: Recipe, index: int) -> dict:
    learn = {}
    for name, (block, projs) in GROUPS.items():
        if not all(_fmt(recipe, index, block, p) is not None for p in projs):
            continue
        m, n = kron_split(layer[block][projs[0]]["kernel"].shape[0])
        learn[name] = {"left": _init_factor(m), "right": _init_factor(n),
                       "clip": {p: jnp.full((layer[block][p]["kernel"].shape[1],), _LOGIT_MAX)
                                for p in projs}}
    return learn


def _fmt(recipe: Recipe, index: int, block: str, proj: str):
    rule = recipe.rule_for(f"layers/{index}/{block}/{proj}")
    return None if rule is None else rule.weight


def _transformed(layer, learn: dict, recipe: Recipe, index: int, *, fake: bool):
    """The layer with P before each learned group and P^-1 W kernels, fake-quantized with the
    learned clipping (fake=True) or clipped and quantized to QArrays (fake=False)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in layer.items()}
    for block in ("attn", "mlp"):
        out[block] = {k: dict(v) if isinstance(v, dict) else v for k, v in layer[block].items()}
    for name, t in learn.items():
        block, projs = GROUPS[name]
        inv = jnp.kron(jnp.linalg.inv(t["left"]), jnp.linalg.inv(t["right"]))
        for p in projs:
            fmt = _fmt(recipe, index, block, p)
            w = jnp.matmul(inv, out[block][p]["kernel"].astype(jnp.float32),
                           precision=jax.lax.Precision.HIGHEST)
            ratio = jax.nn.sigmoid(t["clip"][p])[None, :]
            if fake:
                w = fake_quant_learnable_clip(w, ratio, fmt, axis=0)
            else:
                c = ratio * group_amax(w, fmt, axis=0)
                w = quantize(jnp.clip(w, -c, c), fmt, axis=0)
            out[block][p]["kernel"] = w
            out[block][p][online.INPUT] = {"left": t["left"], "right": t["right"]}
    return out


@functools.partial(jax.jit, static_argnames=("config", "index", "recipe"))
def _layer_loss(learn, layer, x, target, config: LMConfig, index: int, recipe: Recipe):
    got = block_forward(_transformed(layer, learn, recipe, index, fake=True), x, config=config,
                        index=index, recipe=recipe)
    return jnp.mean(jnp.square(got - target))


def flatquant(params, config: LMConfig, tokens: Int[Array, "n t"], recipe: Recipe, *,
              steps: int = 50, batch_size: int = 4, learning_rate: float = 5e-3,
              progress: bool = True) -> tuple[dict, dict[int, list[float]]]:
    """Learns the transforms and clipping layer by layer and quantizes.

    Layer i trains on the inputs the already-quantized layers 0..i-1 produce, against the
    float layer's output on the float model's inputs.

    Args:
      params: float decoder parameters.
      config: their config.
      tokens: (n, t) calibration windows.
      recipe: weight formats of the projections (a group is learned when all its
        projections have one; others stay float), activation / KV formats in the loss.
      steps: Adam steps per layer.
      batch_size: windows per step.
      learning_rate: Adam's step size.
      progress: show a progress bar.

    Returns:
      (params with QArray kernels and the learned online transforms, {layer: losses}).
    """
    if steps < 0 or batch_size < 1:
        raise ValueError(f"need steps >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    tokens = jnp.asarray(np.asarray(tokens, np.int32))
    x_fp = embed(params, tokens)
    x_q = x_fp
    out = dict(params)
    out["layers"] = dict(params["layers"])
    grad = jax.jit(jax.value_and_grad(_layer_loss),
                   static_argnames=("config", "index", "recipe"))
    history = {}
    n = tokens.shape[0]
    for i in tqdm(sorted(params["layers"]), desc="flatquant", disable=not progress):
        layer = params["layers"][i]
        target = block_forward(layer, x_fp, config=config, index=i)
        learn = _init(layer, recipe, i)
        losses = []
        if learn:
            opt = optax.adam(learning_rate)
            state = opt.init(learn)
            for s in range(steps):
                sl = np.arange(s * batch_size, (s + 1) * batch_size) % n
                loss, g = grad(learn, layer, x_q[sl], target[sl], config, i, recipe)
                with jax.numpy_dtype_promotion("standard"):  # optax mixes int step counts
                    updates, state = opt.update(g, state, learn)
                learn = optax.apply_updates(learn, updates)
                losses.append(float(loss))
        history[i] = losses
        out["layers"][i] = _transformed(layer, learn, recipe, i, fake=False)
        x_fp = target
        x_q = block_forward(out["layers"][i], x_q, config=config, index=i, recipe=recipe)
    return out, history

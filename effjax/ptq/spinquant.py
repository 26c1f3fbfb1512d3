"""SpinQuant: the residual rotation R1 and the per-head value rotation R2 learned, on the
Stiefel manifold, by Cayley SGD through the quantized network's language-modelling loss.

The network is the fused-norm model rotated by (R1, R2) (`effjax.transforms`), its kernels
fake-quantized with a straight-through gradient and its activations / KV cache quantized by
the recipe; R1 and R2 start from random Hadamard matrices. `cayley_sgd` is an optax
transformation that keeps every parameter it updates orthogonal.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int
from tqdm.auto import tqdm

from effjax.formats import fake_quant
from effjax.models.config import LMConfig
from effjax.models.decoder import forward
from effjax.quant.recipe import Recipe, layer_path
from effjax.transforms import fuse_norms, random_hadamard, rotate_residual, rotate_values


class CayleyState(NamedTuple):
    momentum: optax.Updates


def cayley_sgd(learning_rate: float, momentum: float = 0.9) -> optax.GradientTransformation:
    """SGD on orthogonal matrices by the Cayley transform.

    For a parameter R with Euclidean gradient G (momentum-averaged into M), the skew matrix
    A = M R^T - R M^T gives Y = (I + a/2 A)^-1 (I - a/2 A) R, which is orthogonal when R
    is, and a descent step to first order. As in Li et al.'s Cayley SGD (which SpinQuant
    uses), the step a = min(lr, 1 / ||A||_1) is capped so that a large gradient turns R by a
    bounded angle rather than far past the minimum. The update returned is Y - R, so
    `optax.apply_updates` lands on Y.

    Args:
      learning_rate: the largest step size lr.
      momentum: the momentum factor of M.

    Returns:
      An optax `GradientTransformation` (needs `params` in `update`).
    """
    if learning_rate <= 0 or not 0 <= momentum < 1:
        raise ValueError(f"need learning_rate > 0 and 0 <= momentum < 1, got {learning_rate}, "
                         f"{momentum}")

    def init(params):
        return CayleyState(jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("cayley_sgd needs params in update()")
        m = jax.tree.map(lambda mo, g: momentum * mo + g, state.momentum, grads)

        def step(r, mo):
            a = mo @ r.T - r @ mo.T
            step = jnp.minimum(learning_rate, 1 / (jnp.max(jnp.sum(jnp.abs(a), axis=0)) + 1e-8))
            eye = jnp.eye(r.shape[0], dtype=r.dtype)
            y = jnp.linalg.solve(eye + step / 2 * a, (eye - step / 2 * a) @ r)
            return y - r

        return jax.tree.map(step, params, m), CayleyState(m)

    return optax.GradientTransformation(init, update)


def _fake_quant_kernels(params, recipe: Recipe):
    """Every kernel the recipe gives a weight format, fake-quantized (straight-through)."""
    def visit(path, leaf):
        if getattr(path[-1], "key", None) != "kernel":
            return leaf
        rule = recipe.rule_for(layer_path(path))
        return leaf if rule is None or rule.weight is None else fake_quant(leaf, rule.weight,
                                                                           axis=0)

    return jax.tree_util.tree_map_with_path(visit, params)


def _rotated(base, rots, config: LMConfig):
    out = rotate_residual(base, rots["r1"])
    return rotate_values(out, rots["r2"], online_kv=True, config=config)


@functools.partial(jax.jit, static_argnames=("config", "recipe"))
def _loss(rots, base, tokens: Int[Array, "b t"], config: LMConfig, recipe: Recipe):
    params = _fake_quant_kernels(_rotated(base, rots, config), recipe)
    logits = forward(params, tokens[:, :-1], config=config, recipe=recipe)[0]
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1))


def spinquant_rotations(params, tokens: Int[Array, "n t"], recipe: Recipe, *,
                        config: LMConfig, key: jax.Array, steps: int = 100, batch_size: int = 4,
                        learning_rate: float = 1.5, momentum: float = 0.9,
                        progress: bool = True) -> tuple[dict, LMConfig, list[float]]:
    """Learns R1 (hidden) and R2 (head_dim) and returns the rotated float model.

    Args:
      params: float decoder parameters.
      config: their config.
      tokens: (n, t) calibration windows.
      recipe: the formats the loss quantizes with (weights fake-quantized, activations and
        KV cache as in the forward).
      key: PRNG key (initial Hadamard signs, batch order).
      steps: Cayley SGD steps.
      batch_size: windows per step.
      learning_rate, momentum: of `cayley_sgd`.
      progress: show a progress bar.

    Returns:
      (rotated float params with the learned R1, R2 (and the online query/key rotation),
      config with an untied head, the loss per step).
    """
    if steps < 0 or batch_size < 1:
        raise ValueError(f"need steps >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    tokens = np.asarray(tokens, np.int32)
    base, config = fuse_norms(params, config=config)
    k1, k2, k3 = jax.random.split(key, 3)
    rots = {"r1": random_hadamard(config.hidden_size, k1),
            "r2": random_hadamard(config.head_dim, k2)}
    opt = cayley_sgd(learning_rate, momentum)
    state = opt.init(rots)
    grad = jax.jit(jax.value_and_grad(_loss), static_argnames=("config", "recipe"))
    n = len(tokens)
    epochs = -(-max(steps * batch_size, 1) // n)  # each epoch a fresh order of the windows
    order = np.concatenate([np.asarray(jax.random.permutation(k, n))
                            for k in jax.random.split(k3, epochs)])
    losses = []
    for s in tqdm(range(steps), desc="spinquant", disable=not progress):
        batch = jnp.asarray(tokens[order[s * batch_size:(s + 1) * batch_size]])
        loss, g = grad(rots, base, batch, config, recipe)
        with jax.numpy_dtype_promotion("standard"):
            updates, state = opt.update(g, state, rots)
        rots = _orthonormal(optax.apply_updates(rots, updates))
        losses.append(float(loss))
    return _rotated(base, rots, config), config, losses


@jax.jit
def _orthonormal(rots: dict) -> dict:
    """Each matrix replaced by the nearest orthogonal one (U V^T of its SVD): the Cayley
    step is orthogonal in exact arithmetic, float32 drifts (~1e-5 per step at 576)."""
    def project(r):
        u, _, vt = jnp.linalg.svd(r)
        return u @ vt

    return jax.tree.map(project, rots)


def orthogonality_error(r: Float[Array, "n n"]) -> float:
    """max |R R^T - I|."""
    r = np.asarray(r, np.float64)
    return float(np.max(np.abs(r @ r.T - np.eye(r.shape[0]))))

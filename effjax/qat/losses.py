"""Distillation and cross-entropy losses over token masks.

Each loss is the mean over the masked positions of a per-token divergence between the
student's next-token distribution q and the teacher's p (both from logits, computed in
float32). With a temperature T both distributions are softened and the loss is scaled by
T^2 (Hinton et al.), so gradients keep their size as T changes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

LOSSES = ("ce", "forward_kl", "reverse_kl", "jsd", "topk_kl")


def _masked_mean(per_token: Float[Array, "b t"], mask: Bool[Array, "b t"]) -> Float[Array, ""]:
    m = mask.astype(jnp.float32)
    return jnp.sum(per_token * m) / jnp.maximum(jnp.sum(m), 1.0)


def _log_probs(logits: Float[Array, "b t v"], temperature: float) -> Float[Array, "b t v"]:
    return jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)


def cross_entropy(logits: Float[Array, "b t v"], targets: Int[Array, "b t"],
                  mask: Bool[Array, "b t"]) -> Float[Array, ""]:
    """Mean negative log-likelihood of `targets` over the masked positions."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return _masked_mean(nll, mask)


def forward_kl(student: Float[Array, "b t v"], teacher: Float[Array, "b t v"],
               mask: Bool[Array, "b t"], temperature: float = 1.0) -> Float[Array, ""]:
    """KL(p_teacher || q_student): mass-covering (the usual distillation loss)."""
    lp, lq = _log_probs(teacher, temperature), _log_probs(student, temperature)
    kl = jnp.sum(jnp.exp(lp) * (lp - lq), axis=-1)
    return _masked_mean(kl, mask) * temperature**2


def reverse_kl(student: Float[Array, "b t v"], teacher: Float[Array, "b t v"],
               mask: Bool[Array, "b t"], temperature: float = 1.0) -> Float[Array, ""]:
    """KL(q_student || p_teacher): mode-seeking."""
    lp, lq = _log_probs(teacher, temperature), _log_probs(student, temperature)
    kl = jnp.sum(jnp.exp(lq) * (lq - lp), axis=-1)
    return _masked_mean(kl, mask) * temperature**2


def jsd(student: Float[Array, "b t v"], teacher: Float[Array, "b t v"],
        mask: Bool[Array, "b t"], temperature: float = 1.0, beta: float = 0.5
        ) -> Float[Array, ""]:
    """Generalized Jensen-Shannon divergence: beta KL(p || m) + (1 - beta) KL(q || m) with
    m = beta p + (1 - beta) q (beta = 0.5: the symmetric JSD, bounded by log 2)."""
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    lp, lq = _log_probs(teacher, temperature), _log_probs(student, temperature)
    lm = jnp.logaddexp(lp + jnp.log(beta), lq + jnp.log1p(-beta))
    kl_p = jnp.sum(jnp.exp(lp) * (lp - lm), axis=-1)
    kl_q = jnp.sum(jnp.exp(lq) * (lq - lm), axis=-1)
    return _masked_mean(beta * kl_p + (1 - beta) * kl_q, mask) * temperature**2


def topk_kl(student: Float[Array, "b t v"], teacher_top: tuple[Float[Array, "b t k"],
            Int[Array, "b t k"]], mask: Bool[Array, "b t"], temperature: float = 1.0
            ) -> Float[Array, ""]:
    """Forward KL on the teacher's top-k tokens: the teacher's top-k probabilities
    renormalized against the student's full-vocabulary log-probabilities at those tokens.

    Args:
      student: student logits.
      teacher_top: (teacher logits at its top k tokens, their token ids), as `teacher_topk`
        gives (what a logit cache stores).
      mask: positions to average over.
      temperature: softening temperature.

    Returns:
      The loss.
    """
    values, ids = teacher_top
    lp = jax.nn.log_softmax(values.astype(jnp.float32) / temperature, axis=-1)
    lq = jnp.take_along_axis(_log_probs(student, temperature), ids.astype(jnp.int32), axis=-1)
    kl = jnp.sum(jnp.exp(lp) * (lp - lq), axis=-1)
    return _masked_mean(kl, mask) * temperature**2


def teacher_topk(logits: Float[Array, "b t v"], k: int
                 ) -> tuple[Float[Array, "b t k"], Int[Array, "b t k"]]:
    """The teacher's k largest logits per position and their token ids (a compact cache)."""
    if not 0 < k <= logits.shape[-1]:
        raise ValueError(f"k must be in [1, {logits.shape[-1]}] (the vocabulary), got {k}")
    values, ids = jax.lax.top_k(logits.astype(jnp.float32), k)
    return values, ids.astype(jnp.int32)

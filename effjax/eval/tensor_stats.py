"""Tensor statistics: how a model's weights, activations and KV cache are spread, and how
much of each tensor every number format keeps (its quantization SNR)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int
from tqdm.auto import tqdm

from effjax.formats import Format, fake_quant, get_format
from effjax.models.config import LMConfig
from effjax.models.decoder import Params, forward
from effjax.models.records import LM, check_tokens
from effjax.quant.recipe import layer_path

TENSOR_KINDS = ("weight", "activation", "kv")


class TensorStats(NamedTuple):
    """Statistics of one tensor.

    Attributes:
      kind: "weight", "activation" or "kv".
      shape: the tensor's shape (quantized along its last axis).
      dynamic_range: log2(max|x| / median|x|) over the nonzero entries, in binades: how far
        the largest value sits above a typical one.
      kurtosis: E[(x - mean)^4] / var^2 over all entries (3 for a Gaussian).
      crest: mean over blocks of `block` consecutive elements along the last axis of
        max|x| / rms(x) (blocks of zeros skipped); sqrt(block) at most.
      snr_db: format label -> 10 log10(sum x^2 / sum (x - q(x))^2), in dB (inf when exact).
    """

    kind: str
    shape: tuple[int, ...]
    dynamic_range: float
    kurtosis: float
    crest: float
    snr_db: dict[str, float]


@functools.partial(jax.jit, static_argnums=(1,))
def _fake_quant(x: Float[Array, "n d"], fmt: Format) -> Float[Array, "n d"]:
    return fake_quant(x, fmt, axis=-1)


def quantization_snr(x: Float[Array, "... d"], fmt: str | Format) -> float:
    """The signal-to-quantization-noise ratio of `fmt` on x, quantized along the last axis.

    Args:
      x: a float tensor; scales (per tensor, per row, per block) follow `fmt`.
      fmt: a format name or `Format`.

    Returns:
      10 log10(sum x^2 / sum (x - q(x))^2) in dB, the sums in float64 (inf when q(x) = x).
    """
    x = jnp.asarray(x, jnp.float32)
    q = np.asarray(_fake_quant(x.reshape(-1, x.shape[-1]), get_format(fmt)), np.float64)
    x64 = np.asarray(x, np.float64).reshape(q.shape)
    noise = float(np.sum((x64 - q) ** 2))
    return float("inf") if noise == 0 else float(10 * np.log10(np.sum(x64**2) / noise))


def tensor_stats(x: Float[Array, "... d"], formats: Mapping[str, str | Format], *,
                 kind: str, block: int = 32) -> TensorStats:
    """Statistics and per-format SNR of one tensor (quantized along its last axis).

    Args:
      x: the tensor (a weight laid out (out, in): the contraction axis last).
      formats: label -> format.
      kind: "weight", "activation" or "kv".
      block: elements per block for the crest factor (must divide the last axis).

    Returns:
      A `TensorStats`.
    """
    if kind not in TENSOR_KINDS:
        raise ValueError(f"kind must be one of {TENSOR_KINDS}, got {kind!r}")
    x64 = np.asarray(x, np.float64)
    if x64.ndim < 1 or x64.size == 0 or x64.shape[-1] % block:
        raise ValueError(f"expected a non-empty tensor whose last axis is a multiple of "
                         f"{block=}, got shape {x64.shape}")
    a = np.abs(x64)
    nonzero = a[a > 0]
    dyn = float(np.log2(nonzero.max() / np.median(nonzero))) if nonzero.size else 0.0
    centered = x64 - x64.mean()
    var = np.mean(centered**2)
    kurt = float(np.mean(centered**4) / var**2) if var > 0 else 0.0
    blocks = a.reshape(-1, block)
    rms = np.sqrt(np.mean(blocks**2, axis=-1))
    live = rms > 0
    crest = float(np.mean(blocks.max(-1)[live] / rms[live])) if live.any() else 0.0
    snr = {label: quantization_snr(x, fmt) for label, fmt in formats.items()}
    return TensorStats(kind=kind, shape=tuple(x64.shape), dynamic_range=dyn, kurtosis=kurt,
                       crest=crest, snr_db=snr)


@functools.partial(jax.jit, static_argnames=("config",))
def _seen(params: Params, tokens: Int[Array, "b t"], config: LMConfig) -> dict[str, jax.Array]:
    found = forward(params, tokens, config=config, capture=("inputs", "kv"))[2]
    seen: dict[str, jax.Array] = {}
    tracers: list[jax.Array] = []
    for path, x in found["inputs"].items():  # in model order, each layer's keys and values
        if path.endswith("/attn/o_proj"):      # before its o_proj input
            attn = path.removesuffix("/o_proj")
            for kv in ("k", "v"):
                a = found["kv"][f"{attn}/{kv}"]
                seen[f"{attn}/{kv}"] = a.reshape(-1, a.shape[-1]).astype(jnp.float32)
        if any(x is t for t in tracers):  # q/k/v (and gate/up) share one input
            continue
        tracers.append(x)
        seen[path] = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    return seen


def model_tensors(lm: LM, tokens: Int[Array, "b t"]) -> dict[str, tuple[str, np.ndarray]]:
    """A model's weight, activation and KV-cache tensors, each with its quantization axis last.

    Args:
      lm: the model (float kernels).
      tokens: (b, t) token ids the activations and keys/values come from.

    Returns:
      name -> (kind, array): "weight <layer path>" kernels as (out, in); "activation <layer
      path>" the inputs of each projection (one entry for projections sharing an input),
      (tokens, in); "kv <layer>/k" and ".../v" the cached keys / values after RoPE,
      (tokens * kv_heads, head_dim).
    """
    tokens = np.asarray(tokens, np.int32)
    check_tokens(tokens, lm.config)
    out: dict[str, tuple[str, np.ndarray]] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(lm.params):
        if getattr(path[-1], "key", None) == "kernel":
            out[f"weight {layer_path(path)}"] = ("weight", np.asarray(leaf, np.float32).T)
    for path, x in _seen(lm.params, jnp.asarray(tokens), lm.config).items():
        kind = "kv" if path.endswith(("/k", "/v")) else "activation"
        out[f"{kind} {path}"] = (kind, np.asarray(x))
    return out


def model_tensor_stats(lm: LM, tokens: Int[Array, "b t"], formats: Mapping[str, str | Format], *,
                       block: int = 32, progress: bool = True) -> dict[str, TensorStats]:
    """`tensor_stats` of every tensor of `model_tensors(lm, tokens)`.

    Args:
      lm: the model.
      tokens: (b, t) token ids for the activations and the KV cache.
      formats: label -> format, each measured on every tensor.
      block: the crest factor's block size.
      progress: show a progress bar.

    Returns:
      name -> `TensorStats`, in `model_tensors` order.
    """
    tensors = model_tensors(lm, tokens)
    return {name: tensor_stats(x, formats, kind=kind, block=block)
            for name, (kind, x) in tqdm(tensors.items(), desc="tensor stats",
                                        disable=not progress)}


def format_wins(stats: Mapping[str, TensorStats], *, by: str = "kurtosis",
                threshold: float | None = None) -> dict[str, dict[str, int]]:
    """Splits tensors into narrow-range and high-variance, and counts each format's wins.

    Args:
      stats: name -> `TensorStats` (every entry measured on the same formats).
      by: the statistic that splits them: "kurtosis", "dynamic_range" or "crest".
      threshold: tensors above it are high-variance (default: the median, so the groups
        are halves).

    Returns:
      {"narrow-range": {label: wins}, "high-variance": {label: wins}}: in each group, how
      many tensors each format has the best SNR on (every label listed, ties to the first).
    """
    if by not in ("kurtosis", "dynamic_range", "crest"):
        raise ValueError(f"by must be 'kurtosis', 'dynamic_range' or 'crest', got {by!r}")
    if not stats:
        raise ValueError("stats is empty")
    labels = list(next(iter(stats.values())).snr_db)
    values = np.array([getattr(s, by) for s in stats.values()])
    cut = float(np.median(values)) if threshold is None else threshold
    out = {"narrow-range": dict.fromkeys(labels, 0), "high-variance": dict.fromkeys(labels, 0)}
    for s, v in zip(stats.values(), values, strict=True):
        if list(s.snr_db) != labels:
            raise ValueError(f"every entry must have the formats {labels}, got {list(s.snr_db)}")
        best = max(labels, key=lambda label: s.snr_db[label])
        out["high-variance" if v > cut else "narrow-range"][best] += 1
    return out

"""The masked-diffusion LM: the decoder with bidirectional attention and a mask token.

A masked-diffusion LM (LLaDA) is the decoder of `effjax.models.decoder` run without the
causal mask: every position sees every other, and the model predicts the original token at
each position holding the mask token. Its training objective (`diffusion_loss`) draws a
noise level t ~ U(0, 1] per sequence, replaces each answer token by the mask token with
probability t and scores the cross-entropy on the masked tokens, weighted by 1/t: an upper
bound on the negative log-likelihood of the answers.

LLaDA checkpoints (OLMo-style tensor names) load with `load_llada` by this name map:

    model.transformer.wte.weight                -> embed/embedding
    model.transformer.blocks.N.attn_norm.weight -> layers/N/input_norm/weight
    model.transformer.blocks.N.{q,k,v}_proj     -> layers/N/attn/{q,k,v}_proj
    model.transformer.blocks.N.attn_out         -> layers/N/attn/o_proj
    model.transformer.blocks.N.ff_norm.weight   -> layers/N/post_attn_norm/weight
    model.transformer.blocks.N.ff_proj          -> layers/N/mlp/gate_proj  (the SiLU branch)
    model.transformer.blocks.N.up_proj          -> layers/N/mlp/up_proj
    model.transformer.blocks.N.ff_out           -> layers/N/mlp/down_proj
    model.transformer.ln_f.weight               -> norm/weight
    model.transformer.ff_out.weight             -> lm_head/kernel  (absent when weight_tying)

(`.weight` of a projection is its (out, in) kernel, transposed on load; `.bias` its bias.)
"""

from __future__ import annotations

import pathlib
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from effjax.models.config import LMConfig
from effjax.models.decoder import Params, forward
from effjax.models.hf import read_json, read_weights
from effjax.models.records import DiffusionLM
from effjax.quant.recipe import Recipe

LLADA_MASK_ID = 126336  # LLaDA-8B's [MASK]

_LLADA_LAYER = {
    "attn_norm.weight": ("input_norm", "weight"),
    "ff_norm.weight": ("post_attn_norm", "weight"),
    **{f"{src}.{w}": (*dst, "kernel" if w == "weight" else "bias")
       for src, dst in (("q_proj", ("attn", "q_proj")), ("k_proj", ("attn", "k_proj")),
                        ("v_proj", ("attn", "v_proj")), ("attn_out", ("attn", "o_proj")),
                        ("ff_proj", ("mlp", "gate_proj")), ("up_proj", ("mlp", "up_proj")),
                        ("ff_out", ("mlp", "down_proj")))
       for w in ("weight", "bias")},
}
_LLADA_TOP = {
    "model.transformer.wte.weight": ("embed", "embedding"),
    "model.transformer.ln_f.weight": ("norm", "weight"),
    "model.transformer.ff_out.weight": ("lm_head", "kernel"),
}
_LLADA_BLOCK_RE = re.compile(r"model\.transformer\.blocks\.(\d+)\.(.+)")


def bidirectional_forward(
    params: Params,
    tokens: Int[Array, "b t"],
    *,
    config: LMConfig,
    mask: Bool[Array, "b t"] | None = None,
    positions: Int[Array, "b t"] | None = None,
    attn_mask: Bool[Array, "b t t"] | None = None,
    dtype=jnp.float32,
    recipe: Recipe | None = None,
    attention_impl: str = "auto",
    scan_layers: bool | None = None,
) -> Float[Array, "b t v"]:
    """Logits of the masked-diffusion LM: the decoder with full (or the given) attention.

    Args:
      params: the decoder's parameter pytree.
      tokens: token ids, masked positions holding the mask token.
      config: the model's config.
      mask: False for padding (never attended to); default all True.
      positions: RoPE positions; default 0..t-1.
      attn_mask: a structured mask (e.g. `effjax.agents.span_attention_mask`); default
        every position sees every other.
      dtype: compute dtype.
      recipe: activation formats for quantized params.
      attention_impl, scan_layers: as in `effjax.models.forward`.

    Returns:
      float32 logits (b, t, vocab).
    """
    b, t = tokens.shape
    if attn_mask is None:
        attn_mask = jnp.ones((b, t, t), bool)
    return forward(params, tokens, config=config, mask=mask, positions=positions,
                   attn_mask=attn_mask, dtype=dtype, recipe=recipe,
                   attention_impl=attention_impl, scan_layers=scan_layers)[0]


def noise_tokens(
    tokens: Int[Array, "b t"],
    noisable: Bool[Array, "b t"],
    key: jax.Array,
    *,
    mask_id: int,
    eps: float = 1e-3,
) -> tuple[Int[Array, "b t"], Bool[Array, "b t"], Float[Array, " b"]]:
    """The forward process: t ~ U(eps, 1] per row, each noisable token masked with prob. t.

    Args:
      tokens: clean token ids.
      noisable: which tokens may be masked (the answer / action spans).
      key: PRNG key.
      mask_id: the mask token.
      eps: the smallest noise level (keeps 1/t bounded).

    Returns:
      (noised tokens, which were masked, t per row).
    """
    k_t, k_m = jax.random.split(key)
    t = eps + (1.0 - eps) * jax.random.uniform(k_t, (tokens.shape[0],))
    masked = noisable & (jax.random.uniform(k_m, tokens.shape) < t[:, None])
    return jnp.where(masked, mask_id, tokens), masked, t


def diffusion_loss(
    params: Params,
    tokens: Int[Array, "b t"],
    noisable: Bool[Array, "b t"],
    key: jax.Array,
    *,
    config: LMConfig,
    mask_id: int,
    mask: Bool[Array, "b t"] | None = None,
    attn_mask: Bool[Array, "b t t"] | None = None,
    eps: float = 1e-3,
    dtype=jnp.float32,
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """The LLaDA objective: cross-entropy on masked tokens / t, per noisable token.

    Each row's loss is the sum over its masked tokens of -log p(token) / t, divided by the
    row's number of noisable tokens (LLaDA's SFT normalization); rows are averaged.

    Args:
      params: the decoder's parameter pytree.
      tokens: clean token ids.
      noisable: the tokens the objective may mask (answer or action spans).
      key: PRNG key for t and the masks.
      config: the model's config.
      mask_id: the mask token.
      mask: False for padding; default all True.
      attn_mask: structured attention (default bidirectional).
      eps: the smallest noise level.
      dtype: compute dtype.

    Returns:
      (loss, {"masked_ce": mean CE per masked token, "masked_fraction"}).
    """
    noised, masked, t = noise_tokens(tokens, noisable, key, mask_id=mask_id, eps=eps)
    logits = bidirectional_forward(params, noised, config=config, mask=mask,
                                   attn_mask=attn_mask, dtype=dtype)
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
    nll = jnp.where(masked, nll, 0.0)
    count = lambda m, axis=None: jnp.maximum(jnp.sum(m, axis=axis), 1).astype(jnp.float32)
    per_row = jnp.sum(nll, axis=1) / t / count(noisable, 1)
    fraction = jnp.sum(masked).astype(jnp.float32) / count(noisable)
    return jnp.mean(per_row), {"masked_ce": jnp.sum(nll) / count(masked),
                               "masked_fraction": fraction}


def llada_name_to_path(name: str) -> tuple | None:
    """Maps a LLaDA tensor name to its effjax path (see the module docstring), else None."""
    if name in _LLADA_TOP:
        return _LLADA_TOP[name]
    m = _LLADA_BLOCK_RE.fullmatch(name)
    if m and m.group(2) in _LLADA_LAYER:
        return ("layers", int(m.group(1)), *_LLADA_LAYER[m.group(2)])
    return None


def llada_config(hf: dict[str, Any]) -> tuple[LMConfig, int]:
    """An `LMConfig` and the mask token id from a LLaDA `config.json` dictionary.

    Args:
      hf: the parsed config (OLMo-style keys: d_model, n_heads, n_kv_heads, n_layers,
        mlp_hidden_size, embedding_size / vocab_size, rope_theta, rms_norm_eps,
        max_sequence_length, include_bias / include_qkv_bias, weight_tying, mask_token_id).

    Returns:
      (config, mask_id).
    """
    missing = [k for k in ("d_model", "n_heads", "n_layers", "mlp_hidden_size") if k not in hf]
    if missing:
        raise ValueError(f"LLaDA config.json lacks {missing}; expected OLMo-style keys "
                         "(d_model, n_heads, n_layers, mlp_hidden_size)")
    if hf.get("activation_type", "silu") not in ("silu", "swiglu"):
        raise ValueError(f"activation_type must be 'silu' or 'swiglu', got "
                         f"{hf['activation_type']!r}")
    heads = hf["n_heads"]
    bias = bool(hf.get("include_bias", False))
    config = LMConfig(
        family="llama",
        vocab_size=hf.get("embedding_size") or hf["vocab_size"],
        hidden_size=hf["d_model"],
        intermediate_size=hf["mlp_hidden_size"],
        num_layers=hf["n_layers"],
        num_heads=heads,
        num_kv_heads=hf.get("n_kv_heads") or heads,
        head_dim=hf["d_model"] // heads,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
        rope_theta=float(hf.get("rope_theta", 10000.0)),
        max_position_embeddings=hf.get("max_sequence_length", 4096),
        tie_word_embeddings=bool(hf.get("weight_tying", False)),
        qkv_bias=bias or bool(hf.get("include_qkv_bias", False)),
        o_bias=bias,
        mlp_bias=bias,
        eos_token_id=hf.get("eos_token_id"),
        pad_token_id=hf.get("pad_token_id"),
    )
    return config, int(hf.get("mask_token_id", LLADA_MASK_ID))


def load_llada(path: str | pathlib.Path, *, dtype=np.float32) -> DiffusionLM:
    """Loads a LLaDA checkpoint directory (config.json + safetensors).

    Args:
      path: the directory.
      dtype: dtype of the returned arrays.

    Returns:
      A `DiffusionLM` (no tokenizer) with the config's mask token.

    Raises:
      ValueError: no config.json, a config without the OLMo-style keys, or weights that do
        not fit it.
    """
    path = pathlib.Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ValueError(f"expected a config.json in the LLaDA directory {str(path)!r}")
    config, mask_id = llada_config(read_json(cfg_file))
    return DiffusionLM(config=config, params=read_weights(path, llada_name_to_path, config, dtype),
                       tokenizer=None, source=str(path), mask_id=mask_id)


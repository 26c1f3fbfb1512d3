"""The decoder LM in Flax NNX and its pure entry point over a parameter pytree.

Parameters are a plain nested dict (`init_params`, loaders) with kernels laid out
(in, out):

    {"embed": {"embedding": (vocab, hidden)},
     "layers": {i: {"input_norm": {"weight"}, "attn": {"q_proj": {"kernel", ["bias"]}, "k_proj",
                    "v_proj", "o_proj", ["q_norm", "k_norm"]},
                    "post_attn_norm": {"weight"}, "mlp": {"gate_proj", "up_proj", "down_proj"}}},
     "norm": {"weight"}, ["lm_head": {"kernel": (hidden, vocab)}]}

A transformed model may also hold online transforms (`effjax.transforms.online`): an
"input_transform" beside a projection's kernel, a "kv_rotation" in an attention layer.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from effjax.formats import fake_quant
from effjax.models.config import LMConfig
from effjax.models.layers import apply_rope, attention, linear, rms_norm
from effjax.quant import taps
from effjax.quant.recipe import Recipe
from effjax.transforms import online

Params = dict[str, Any]


class KVCache(NamedTuple):
    """Static-shape key/value cache for decoding.

    Attributes:
      k, v: one array per layer, each (batch, max_len, num_kv_heads, head_dim).
      valid: (batch, max_len) bool, slots holding a real (non-padding) token.
      length: () int32, number of slots written so far (shared by the batch).
    """

    k: tuple[Array, ...]
    v: tuple[Array, ...]
    valid: Bool[Array, "b s"]
    length: Int[Array, ""]


def check_token_ids(tokens: Any, vocab_size: int) -> None:
    """Checks that concrete token ids lie in [0, vocab_size).

    Traced ids (under jit, vmap or grad) have no values to check and pass; `embed_tokens`
    then gives an out-of-range id a NaN embedding, and its sequence's logits come out NaN.

    Args:
      tokens: integer token ids of any shape (NumPy, list or a concrete jax.Array).
      vocab_size: the model's vocabulary size.

    Raises:
      ValueError: an id is negative or at least vocab_size; the message gives the range
        found.
    """
    if isinstance(tokens, jax.core.Tracer):
        return
    ids = np.asarray(tokens)
    if ids.size:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"token ids must lie in [0, {vocab_size}), got ids in "
                             f"[{lo}, {hi}]")


def embed_tokens(table: Float[Array, "v h"], tokens: Int[Array, "*ids"]) -> Float[Array, "*ids h"]:
    """Rows of an embedding table; a row of NaN for an id outside [0, v), negative ids
    included (which `jnp.take` alone would wrap around to real rows), so that a bad id
    under jit cannot pass for a real token."""
    v = table.shape[0]
    inside = (tokens >= 0) & (tokens < v)
    return jnp.take(table, jnp.where(inside, tokens, v), axis=0, mode="fill",
                    fill_value=jnp.nan)


def init_cache(config: LMConfig, batch: int, max_len: int, dtype=jnp.float32) -> KVCache:
    """An empty cache with room for `max_len` tokens per sequence."""
    shape = (batch, max_len, config.num_kv_heads, config.head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(config.num_layers))
    return KVCache(zeros, zeros, jnp.zeros((batch, max_len), bool), jnp.zeros((), jnp.int32))


class Linear(nnx.Module):
    """A projection whose math is `effjax.models.layers.linear`.

    `path` ("layers/3/attn/q_proj") is what quantization recipes match against.
    """

    def __init__(self, d_in: int, d_out: int, *, use_bias: bool, path: str, rngs: nnx.Rngs):
        self.kernel = nnx.Param(jax.random.normal(rngs.params(), (d_in, d_out)) * d_in**-0.5)
        self.bias = nnx.Param(jnp.zeros((d_out,))) if use_bias else None
        self.path = path

    def __call__(self, x, recipe: Recipe | None = None):
        x = online.apply_input(self.path, x)
        taps.record(self.path, x)
        act = None if recipe is None else recipe.activation_format(self.path)
        return linear(x, self.kernel.get_value(),
                      None if self.bias is None else self.bias.get_value(), act,
                      impl="auto" if recipe is None else recipe.impl)


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, eps: float):
        self.weight = nnx.Param(jnp.ones((dim,)))
        self.eps = eps

    def __call__(self, x):
        return rms_norm(x, self.weight.get_value(), self.eps)


class Attention(nnx.Module):
    def __init__(self, config: LMConfig, *, path: str, rngs: nnx.Rngs):
        c = config
        self.config = c
        self.path = path
        kv = c.num_kv_heads * c.head_dim
        self.q_proj = Linear(c.hidden_size, c.num_heads * c.head_dim, use_bias=c.qkv_bias,
                             path=f"{path}/q_proj", rngs=rngs)
        self.k_proj = Linear(c.hidden_size, kv, use_bias=c.qkv_bias, path=f"{path}/k_proj",
                             rngs=rngs)
        self.v_proj = Linear(c.hidden_size, kv, use_bias=c.qkv_bias, path=f"{path}/v_proj",
                             rngs=rngs)
        self.o_proj = Linear(c.num_heads * c.head_dim, c.hidden_size, use_bias=c.o_bias,
                             path=f"{path}/o_proj", rngs=rngs)
        if c.qk_norm:
            self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps)
            self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def __call__(self, x, positions, inv_freq, allowed, cache_kv, start, recipe):
        c = self.config
        b, t, _ = x.shape
        q = self.q_proj(x, recipe).reshape(b, t, c.num_heads, c.head_dim)
        k = self.k_proj(x, recipe).reshape(b, t, c.num_kv_heads, c.head_dim)
        v = self.v_proj(x, recipe).reshape(b, t, c.num_kv_heads, c.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q, positions, inv_freq)
        k = apply_rope(k, positions, inv_freq)
        q, k = online.rotate_qk(self.path, q, k)
        taps.record(f"{self.path}/k", k, kind="kv")
        taps.record(f"{self.path}/v", v, kind="kv")
        if recipe is not None and recipe.kv_cache is not None:  # what the cache would hold
            k = fake_quant(k, recipe.kv_cache, axis=-1)
            v = fake_quant(v, recipe.kv_cache, axis=-1)
        if cache_kv is not None:
            ck, cv = cache_kv
            zero = jnp.zeros((), jnp.int32)
            k = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (zero, start, zero, zero))
            v = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (zero, start, zero, zero))
        out = attention(q, k.astype(q.dtype), v.astype(q.dtype), allowed)
        return self.o_proj(out.reshape(b, t, c.num_heads * c.head_dim), recipe), (k, v)


class MLP(nnx.Module):
    def __init__(self, config: LMConfig, *, path: str, rngs: nnx.Rngs):
        c = config
        h, i, bias = c.hidden_size, c.intermediate_size, c.mlp_bias
        self.gate_proj = Linear(h, i, use_bias=bias, path=f"{path}/gate_proj", rngs=rngs)
        self.up_proj = Linear(h, i, use_bias=bias, path=f"{path}/up_proj", rngs=rngs)
        self.down_proj = Linear(i, h, use_bias=bias, path=f"{path}/down_proj", rngs=rngs)

    def __call__(self, x, recipe):
        hidden = jax.nn.silu(self.gate_proj(x, recipe)) * self.up_proj(x, recipe)
        return self.down_proj(hidden, recipe)


class Block(nnx.Module):
    def __init__(self, config: LMConfig, *, path: str, rngs: nnx.Rngs):
        self.input_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn = Attention(config, path=f"{path}/attn", rngs=rngs)
        self.post_attn_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config, path=f"{path}/mlp", rngs=rngs)

    def __call__(self, x, positions, inv_freq, allowed, cache_kv, start, recipe):
        h, kv = self.attn(self.input_norm(x), positions, inv_freq, allowed, cache_kv, start,
                          recipe)
        x = x + h
        return x + self.mlp(self.post_attn_norm(x), recipe), kv


class DecoderLM(nnx.Module):
    """Llama / Qwen2 / Qwen3 decoder-only LM."""

    def __init__(self, config: LMConfig, *, rngs: nnx.Rngs):
        c = config
        self.config = c
        self.embed = nnx.Embed(c.vocab_size, c.hidden_size, rngs=rngs)
        self.layers = nnx.List([Block(c, path=f"layers/{i}", rngs=rngs)
                                for i in range(c.num_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.lm_head = (None if c.tie_word_embeddings
                        else Linear(c.hidden_size, c.vocab_size, use_bias=False, path="lm_head",
                                    rngs=rngs))

    def __call__(
        self,
        tokens: Int[Array, "b t"],
        positions: Int[Array, "b t"],
        mask: Bool[Array, "b t"],
        cache: KVCache | None,
        dtype,
        recipe: Recipe | None = None,
        return_hidden: bool = False,
        attn_mask: Bool[Array, "b t s"] | None = None,
        embeds: Float[Array, "b t h"] | None = None,
    ):
        c = self.config
        x = (embed_tokens(self.embed.embedding.get_value(), tokens) if embeds is None
             else embeds).astype(dtype)
        inv_freq = jnp.asarray(c.rope_inv_freq(), jnp.float32)
        positions = rope_positions(positions, c)
        t = tokens.shape[1]
        if cache is None:
            structure = jnp.tril(jnp.ones((t, t), bool))[None] if attn_mask is None else attn_mask
            keys = mask
            start = None
        else:
            start = cache.length
            zero = jnp.zeros((), jnp.int32)
            keys = valid = jax.lax.dynamic_update_slice(cache.valid, mask, (zero, start))
            slots = jnp.arange(valid.shape[1])
            query_slots = start + jnp.arange(t)
            structure = ((slots[None, :] <= query_slots[:, None])[None] if attn_mask is None
                         else attn_mask)
        keys = keys[:, None, :]
        allowed = structure & (keys[None] if structure.ndim == 4 else keys)
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            layer_cache = None if cache is None else (cache.k[i], cache.v[i])
            x, (k, v) = layer(x, positions, inv_freq, allowed[i] if allowed.ndim == 4 else allowed,
                              layer_cache, start, recipe)
            new_k.append(k)
            new_v.append(v)
        x = self.norm(x)
        if self.lm_head is None:
            act = None if recipe is None else recipe.activation_format("lm_head")
            logits = linear(x, self.embed.embedding.get_value().T, act=act,
                            impl="auto" if recipe is None else recipe.impl)
        else:
            logits = self.lm_head(x, recipe)
        new_cache = None
        if cache is not None:
            new_cache = KVCache(tuple(new_k), tuple(new_v), valid, cache.length + t)
        if return_hidden:
            return logits.astype(jnp.float32), new_cache, x.astype(jnp.float32)
        return logits.astype(jnp.float32), new_cache


def rope_positions(positions: Int[Array, "b t"] | Int[Array, "3 b t"], config: LMConfig):
    """RoPE positions as the layers read them: (b, t), or (b, t, frequencies) for (3, b, t)
    multimodal ids (one position per frequency)."""
    if positions.ndim == 3:
        return jnp.moveaxis(positions, 0, -1)[..., jnp.asarray(config.mrope_axes())]
    return positions


@functools.lru_cache(maxsize=32)
def _graph(config: LMConfig):
    """The NNX graph definition and abstract state of a config (no arrays allocated)."""
    abstract = nnx.eval_shape(lambda: DecoderLM(config, rngs=nnx.Rngs(0)))
    return nnx.split(abstract, nnx.Param)


@functools.lru_cache(maxsize=256)
def _block_graph(config: LMConfig, index: int):
    abstract = nnx.eval_shape(lambda: Block(config, path=f"layers/{index}", rngs=nnx.Rngs(0)))
    return nnx.split(abstract, nnx.Param)


def embed(params: Params, tokens: Int[Array, "b t"], dtype=jnp.float32) -> Float[Array, "b t h"]:
    """The token embeddings: the residual stream entering layer 0.

    Raises:
      ValueError: concrete token ids outside [0, vocab) (see `check_token_ids`; traced
        ones embed as NaN).
    """
    table = params["embed"]["embedding"]
    check_token_ids(tokens, table.shape[0])
    return embed_tokens(table, tokens).astype(dtype)


def block_forward(
    layer_params: Params,
    x: Float[Array, "b t h"],
    *,
    config: LMConfig,
    index: int,
    recipe: Recipe | None = None,
    positions: Int[Array, "b t"] | Int[Array, "3 b t"] | None = None,
    attn_mask: Bool[Array, "b t t"] | None = None,
    token_types: Int[Array, "b t"] | None = None,
) -> Float[Array, "b t h"]:
    """One decoder layer on the residual stream (no padding, no cache): what `forward` does
    to x in layer `index`, for layer-by-layer work (sequential calibration).

    Args:
      layer_params: `params["layers"][index]` (float or quantized, with any online
        transforms).
      x: the residual stream entering the layer.
      config: the model's config.
      index: the layer's index (its projections' paths are "layers/<index>/...").
      recipe: activation / KV-cache formats, as in `forward`.
      positions: RoPE positions as in `forward`; default 0..t-1.
      attn_mask: as in `forward`; default causal.
      token_types: as in `forward`.

    Returns:
      The residual stream leaving the layer, x's dtype.
    """
    wrapped, transforms = online.split({"layers": {index: layer_params}})
    graphdef, state = _block_graph(config, index)
    state = jax.tree.map(lambda a: a, state)
    nnx.replace_by_pure_dict(state, wrapped["layers"][index])
    block = nnx.merge(graphdef, state)
    b, t, _ = x.shape
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    allowed = (jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool))[None], (b, t, t))
               if attn_mask is None else attn_mask)
    inv_freq = jnp.asarray(config.rope_inv_freq(), jnp.float32)
    with online.active(transforms, token_types):
        return block(x, rope_positions(positions, config), inv_freq, allowed, None, None,
                     recipe)[0]


def init_params(config: LMConfig, key: jax.Array, dtype=jnp.float32) -> Params:
    """Randomly initialized parameters (for tests and training from scratch)."""
    model = DecoderLM(config, rngs=nnx.Rngs(params=key))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    return jax.tree.map(lambda a: a.astype(dtype), params)


def param_shapes(config: LMConfig) -> Params:
    """The expected shape of every parameter, as a pytree of tuples."""
    _, state = _graph(config)
    return jax.tree.map(lambda a: tuple(a.shape), nnx.to_pure_dict(state))


def forward(
    params: Params,
    tokens: Int[Array, "b t"],
    *,
    config: LMConfig,
    positions: Int[Array, "b t"] | None = None,
    mask: Bool[Array, "b t"] | None = None,
    cache: KVCache | None = None,
    dtype=jnp.float32,
    recipe: Recipe | None = None,
    return_hidden: bool = False,
    attn_mask: Bool[Array, "b t s"] | None = None,
    embeds: Float[Array, "b t h"] | None = None,
    token_types: Int[Array, "b t"] | None = None,
) -> tuple[Float[Array, "b t v"], KVCache | None]:
    """The pure forward pass: parameter pytree and tokens to float32 logits.

    Jittable. Concrete token ids are checked (`check_token_ids`); traced ones (under jit)
    cannot be: an id outside [0, vocab) embeds as NaN, which attention spreads to the logits
    of its sequence (other sequences of the batch are unaffected), so a bad id never passes
    for a real token. `LM.apply` checks the ids before it jits; call `check_token_ids`
    yourself before jitting `forward`.

    Args:
      params: the parameter pytree (see the module docstring).
      tokens: int32 token ids.
      config: the model's config.
      positions: RoPE positions, (b, t); default 0..t-1 (offset by the cache length when
        decoding). With `config.mrope_section`, also (3, b, t) temporal / height / width ids
        (Qwen2.5-VL's multimodal RoPE; equal ids on the three axes are plain RoPE).
      mask: True for real tokens, False for padding; default all True.
      cache: optional `KVCache`; the new keys/values are written at `cache.length`.
      dtype: compute dtype (float32 or bfloat16). Logits are always float32.
      recipe: optional `effjax.quant.Recipe`: activation formats per layer and the KV-cache
        format (weights are quantized in params by `effjax.quant.quantize_params`).
      return_hidden: also return the final normalized hidden states (the head's input).
      attn_mask: which keys each query may attend to, in place of the causal structure
        ((b, t, t) without a cache, (b, t, cache slots) with one); padding and unwritten
        cache slots stay excluded. All True gives bidirectional attention (masked diffusion).
        A (num_layers, b, t, s) mask gives each layer its own (tokens dropped after a layer,
        as FastV does).
      embeds: the input embeddings in place of the tokens' (image features spliced in by a
        vision-language model); `tokens` still gives the shape.
      token_types: each token's type (int32 in [0, k)), read by per-type input transforms
        (FreeAct: vision / text, or masked / unmasked); traced, so any types, one compile.

    Returns:
      (logits (b, t, vocab) float32, the updated cache or None), and with return_hidden a
      third element, the hidden states (b, t, hidden) float32.

    Raises:
      ValueError: concrete token ids outside [0, config.vocab_size) (not checked when
        `embeds` replaces the lookup).
    """
    if embeds is None:
        check_token_ids(tokens, config.vocab_size)
    b, t = tokens.shape
    if mask is None:
        mask = jnp.ones((b, t), bool)
    if positions is None:
        offset = jnp.zeros((), jnp.int32) if cache is None else cache.length
        positions = jnp.broadcast_to(offset + jnp.arange(t, dtype=jnp.int32), (b, t))
    params, transforms = online.split(params)
    graphdef, state = _graph(config)
    state = jax.tree.map(lambda x: x, state)  # a fresh copy: the cached one stays abstract
    nnx.replace_by_pure_dict(state, params)
    model = nnx.merge(graphdef, state)
    with online.active(transforms, token_types):
        return model(tokens, positions, mask, cache, dtype, recipe, return_hidden, attn_mask,
                     embeds)

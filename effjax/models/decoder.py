"""The decoder LM as plain functions over a typed parameter pytree.

`init_params` makes the pytree, the loaders fill it, `forward` reads it: every array the
model computes with, the online transforms included, is a leaf of `params`, and every
other input is an argument. Kernels are laid out (in, out):

    DecoderParams = {"embed": {"embedding": (vocab, hidden)},
                     "layers": {i: LayerParams},
                     "norm": {"weight": (hidden,)},
                     ["lm_head": Projection (hidden -> vocab), untied models only]}
    LayerParams = {"input_norm": {"weight"}, "attn": AttentionParams,
                   "post_attn_norm": {"weight"}, "mlp": {"gate_proj", "up_proj", "down_proj"},
                   ["attn_out_norm", "mlp_out_norm": {"weight", ["rotation" (hidden, hidden)
                    after rotate_residual]}, with sandwich norms]}
    AttentionParams = {"q_proj", "k_proj", "v_proj", "o_proj": Projection,
                       ["q_norm", "k_norm": {"weight": (head_dim,)}], ["kv_rotation"]}
    Projection = {"kernel": (in, out) array or QArray, ["bias": (out,)],
                  ["input_transform": an `effjax.transforms.online.Transform`]}

A projection's path ("layers/3/attn/q_proj") is what quantization recipes match against.
Gemma's RMSNorm scales by (1 + w); its norms are stored here as the weight 1 + w, so every
family shares one `rms_norm`.
What a forward pass saw on the way (hidden states, projection inputs, keys and values,
queries and keys as attention scores them) comes back when asked for by `capture`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, NamedTuple, NotRequired, TypedDict

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from effjax.formats import fake_quant
from effjax.models.config import LMConfig
from effjax.models.layers import apply_rope, linear, rms_norm
from effjax.models.sdpa import Pairs, attention
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


class Projection(TypedDict, total=False):
    """A linear layer's parameters: "kernel" (in, out) array or QArray; optional "bias"
    (out,) and "input_transform" (`effjax.transforms.online.Transform`)."""

    kernel: Any
    bias: Float[Array, " out"]
    input_transform: online.Transform


class Norm(TypedDict):
    """An RMSNorm's weight; a sandwich (output) norm also holds the residual rotation its
    output is multiplied by once `rotate_residual` has rotated the stream."""

    weight: Float[Array, " d"]
    rotation: NotRequired[Float[Array, "d d"]]


class AttentionParams(TypedDict, total=False):
    """q/k/v/o projections, optional q/k norms and an optional kv_rotation (head_dim,
    head_dim)."""

    q_proj: Projection
    k_proj: Projection
    v_proj: Projection
    o_proj: Projection
    q_norm: Norm
    k_norm: Norm
    kv_rotation: Float[Array, "d d"]


class MLPParams(TypedDict):
    gate_proj: Projection
    up_proj: Projection
    down_proj: Projection


class LayerParams(TypedDict, total=False):
    """A decoder layer: input_norm before attention, post_attn_norm before the MLP and,
    with `LMConfig.sandwich_norms`, attn_out_norm / mlp_out_norm on their outputs."""

    input_norm: Norm
    attn: AttentionParams
    post_attn_norm: Norm
    mlp: MLPParams
    attn_out_norm: Norm
    mlp_out_norm: Norm


CAPTURE_KINDS = ("hidden", "inputs", "kv", "qk", "qk_prerope")
"""What `forward(..., capture=...)` can hand back, each a {path: array} dict except hidden:

- "hidden": the final normalized hidden states (b, t, hidden) float32 (the head's input);
- "inputs": each projection's input after its online transform (what its activation
  quantizer sees), at the projection's path ("layers/3/attn/q_proj");
- "kv": the keys and values the KV cache holds before any KV-cache quantization,
  (b, t, kv_heads, head_dim) after RoPE and the kv_rotation, at "layers/3/attn/k" / "/v";
- "qk": queries (b, t, heads, head_dim) and keys (b, s, kv_heads, head_dim) exactly as the
  attention scores them (after q/k norm, RoPE, the kv_rotation and KV-cache quantization;
  with a cache, the keys of every slot), at "layers/3/attn/q" / "/k";
- "qk_prerope": queries and keys after the projections and q/k norm, before RoPE.
"""


class Capture:
    """The arrays a forward pass was asked to hand back, collected while it traces.

    Made by the forward from its `capture` argument and returned by it: it lives for
    one call, nothing global.
    """

    def __init__(self, kinds: Sequence[str]):
        kinds = tuple(kinds)
        bad = [k for k in kinds if k not in CAPTURE_KINDS]
        if bad:
            raise ValueError(f"capture must name kinds from {CAPTURE_KINDS}, got {bad}")
        self.kinds = frozenset(kinds)
        self.found: dict[str, Any] = {k: {} for k in kinds if k != "hidden"}

    def put(self, kind: str, path: str, value: Array) -> None:
        """Keeps value at path if this kind was asked for."""
        if kind in self.kinds:
            self.found[kind][path] = value


def project(p: Projection, x: Float[Array, "... d_in"], *, path: str,
            recipe: Recipe | None = None, token_types: Int[Array, "b t"] | None = None,
            capture: Capture | None = None) -> Float[Array, "... d_out"]:
    """A projection: its online input transform, its activation format from the recipe,
    then `effjax.models.layers.linear`.

    Args:
      p: the projection's parameters.
      x: its input.
      path: its path ("layers/3/attn/q_proj"), matched by the recipe's rules.
      recipe: activation formats and the matmul implementation.
      token_types: for a per-type input transform.
      capture: receives the transformed input as "inputs".

    Returns:
      x's projection, x's dtype.
    """
    transform = p.get(online.INPUT)
    if transform is not None:
        x = transform.apply(x, token_types)
    if capture is not None:
        capture.put("inputs", path, x)
    act = None if recipe is None else recipe.activation_format(path)
    return linear(x, p["kernel"], p.get("bias"), act,
                  impl="auto" if recipe is None else recipe.impl)


def attention_layer(
    p: AttentionParams,
    x: Float[Array, "b t h"],
    *,
    config: LMConfig,
    path: str,
    positions: Int[Array, "b t"] | Int[Array, "b t f"],
    inv_freq: Float[Array, " f"],
    pairs: Pairs,
    cache_kv: tuple[Array, Array] | None = None,
    start: Int[Array, ""] | None = None,
    recipe: Recipe | None = None,
    token_types: Int[Array, "b t"] | None = None,
    capture: Capture | None = None,
    attention_impl: str = "auto",
) -> tuple[Float[Array, "b t h"], tuple[Array, Array]]:
    """Grouped-query attention with RoPE, optional q/k norm and kv_rotation, over the
    (query, key) pairs `pairs` allows, run by `effjax.models.sdpa.attention` with
    `attention_impl`.

    Returns:
      (the output projection (b, t, hidden), the (keys, values) the cache holds now: the
      new ones, or with `cache_kv` every slot, the new ones written at `start`).
    """
    c = config
    b, t, _ = x.shape
    kw = dict(recipe=recipe, token_types=token_types, capture=capture)
    q = project(p["q_proj"], x, path=f"{path}/q_proj", **kw).reshape(b, t, c.num_heads,
                                                                      c.head_dim)
    k = project(p["k_proj"], x, path=f"{path}/k_proj", **kw).reshape(b, t, c.num_kv_heads,
                                                                      c.head_dim)
    v = project(p["v_proj"], x, path=f"{path}/v_proj", **kw).reshape(b, t, c.num_kv_heads,
                                                                      c.head_dim)
    if c.qk_norm:
        q = rms_norm(q, p["q_norm"]["weight"], c.rms_norm_eps)
        k = rms_norm(k, p["k_norm"]["weight"], c.rms_norm_eps)
    if capture is not None:
        capture.put("qk_prerope", f"{path}/q", q)
        capture.put("qk_prerope", f"{path}/k", k)
    q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)
    r = p.get(online.KV)
    if r is not None:
        q, k = online.rotate(q, r), online.rotate(k, r)
    if capture is not None:
        capture.put("kv", f"{path}/k", k)
        capture.put("kv", f"{path}/v", v)
    if recipe is not None and recipe.kv_cache is not None:  # what the cache would hold
        k = fake_quant(k, recipe.kv_cache, axis=-1)
        v = fake_quant(v, recipe.kv_cache, axis=-1)
    if cache_kv is not None:
        ck, cv = cache_kv
        zero = jnp.zeros((), jnp.int32)
        k = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (zero, start, zero, zero))
        v = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (zero, start, zero, zero))
    if capture is not None:
        capture.put("qk", f"{path}/q", q)
        capture.put("qk", f"{path}/k", k.astype(q.dtype))
    if c.query_pre_attn_scalar is not None and c.query_pre_attn_scalar != c.head_dim:
        q = q * jnp.asarray((c.head_dim / c.query_pre_attn_scalar) ** 0.5, q.dtype)
    out = attention(q, k.astype(q.dtype), v.astype(q.dtype), **pairs._asdict(),
                    implementation=attention_impl)
    return project(p["o_proj"], out.reshape(b, t, c.num_heads * c.head_dim),
                   path=f"{path}/o_proj", **kw), (k, v)


def mlp(p: MLPParams, x: Float[Array, "b t h"], *, path: str, recipe: Recipe | None = None,
        token_types: Int[Array, "b t"] | None = None, capture: Capture | None = None,
        activation: str = "silu") -> Float[Array, "b t h"]:
    """A gated MLP: down(act(gate(x)) * up(x)), act silu (SwiGLU) or "gelu_tanh" (GeGLU)."""
    kw = dict(recipe=recipe, token_types=token_types, capture=capture)
    act = jax.nn.silu if activation == "silu" else functools.partial(jax.nn.gelu,
                                                                      approximate=True)
    hidden = (act(project(p["gate_proj"], x, path=f"{path}/gate_proj", **kw))
              * project(p["up_proj"], x, path=f"{path}/up_proj", **kw))
    return project(p["down_proj"], hidden, path=f"{path}/down_proj", **kw)


def layer_forward(p: LayerParams, x: Float[Array, "b t h"], *, config: LMConfig, index: int,
                  **kw) -> tuple[Float[Array, "b t h"], tuple[Array, Array]]:
    """One pre-norm decoder layer (attention then MLP, each added to the residual, each
    output normalized first with `config.sandwich_norms`), with the layer's own window and
    RoPE frequencies (`config.layer_window`, `config.rope_inv_freq`); `kw` are
    `attention_layer`'s keyword arguments (path, inv_freq aside). Returns (x, cache kv)."""
    path = f"layers/{index}"
    eps = config.rms_norm_eps
    window = config.layer_window(index)
    if window is not None:
        kw = {**kw, "pairs": kw["pairs"]._replace(window=window)}
    inv_freq = jnp.asarray(config.rope_inv_freq(index), jnp.float32)
    h, kv = attention_layer(p["attn"], rms_norm(x, p["input_norm"]["weight"], eps),
                            config=config, path=f"{path}/attn", inv_freq=inv_freq, **kw)
    if config.sandwich_norms:
        h = _out_norm(h, p["attn_out_norm"], eps)
    x = x + h
    rest = {k: kw[k] for k in ("recipe", "token_types", "capture") if k in kw}
    h = mlp(p["mlp"], rms_norm(x, p["post_attn_norm"]["weight"], eps), path=f"{path}/mlp",
            activation=config.hidden_act, **rest)
    if config.sandwich_norms:
        h = _out_norm(h, p["mlp_out_norm"], eps)
    return x + h, kv


def _out_norm(h: Float[Array, "b t d"], norm: Norm, eps: float) -> Float[Array, "b t d"]:
    """A sandwich norm on a branch's output, times its `rotation` where it has one."""
    h = rms_norm(h, norm["weight"], eps)
    if "rotation" in norm:
        h = jnp.matmul(h, norm["rotation"].astype(h.dtype))
    return h


def rope_positions(positions: Int[Array, "b t"] | Int[Array, "3 b t"], config: LMConfig):
    """RoPE positions as the layers read them: (b, t), or (b, t, frequencies) for (3, b, t)
    multimodal ids (one position per frequency)."""
    if positions.ndim == 3:
        return jnp.moveaxis(positions, 0, -1)[..., jnp.asarray(config.mrope_axes())]
    return positions


def embed(params: Params, tokens: Int[Array, "b t"], *, config: LMConfig,
          dtype=jnp.float32) -> Float[Array, "b t h"]:
    """The token embeddings: the residual stream entering layer 0.

    Args:
      params: the parameter pytree.
      tokens: int32 token ids.
      config: the model's config (`scale_embeddings`).
      dtype: the residual stream's dtype.

    Returns:
      (b, t, hidden) embeddings, scaled by sqrt(hidden_size) in `dtype` where the config
      says so.

    Raises:
      ValueError: concrete token ids outside [0, vocab) (see `check_token_ids`; traced
        ones embed as NaN).
    """
    table = params["embed"]["embedding"]
    check_token_ids(tokens, table.shape[0])
    return _scaled(embed_tokens(table, tokens).astype(dtype), config)


def _scaled(x: Float[Array, "b t h"], config: LMConfig) -> Float[Array, "b t h"]:
    """Token embeddings times sqrt(hidden_size) in their dtype, where the config says so."""
    if not config.scale_embeddings:
        return x
    return x * jnp.asarray(config.hidden_size**0.5, x.dtype)


def block_forward(
    layer_params: LayerParams,
    x: Float[Array, "b t h"],
    *,
    config: LMConfig,
    index: int,
    recipe: Recipe | None = None,
    positions: Int[Array, "b t"] | Int[Array, "3 b t"] | None = None,
    attn_mask: Bool[Array, "b t t"] | None = None,
    token_types: Int[Array, "b t"] | None = None,
    capture: Sequence[str] = (),
    attention_impl: str = "auto",
):
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
      capture: kinds of `CAPTURE_KINDS` to hand back ("hidden" aside), as in `forward`.
      attention_impl: as in `forward`.

    Returns:
      The residual stream leaving the layer, x's dtype; with `capture`, the pair (that,
      {kind: {path: array}}).

    Raises:
      ValueError: capture names an unknown kind.
    """
    cap = Capture(capture) if capture else None
    b, t, _ = x.shape
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    out, _ = layer_forward(layer_params, x, config=config, index=index,
                           positions=rope_positions(positions, config),
                           pairs=Pairs(causal=attn_mask is None, mask=attn_mask),
                           recipe=recipe, token_types=token_types, capture=cap,
                           attention_impl=attention_impl)
    return out if cap is None else (out, cap.found)


def init_params(config: LMConfig, key: jax.Array, dtype=jnp.float32) -> Params:
    """Randomly initialized parameters (for tests and training from scratch).

    Kernels are N(0, 1 / d_in), the embedding is variance-scaled normal, norms are ones and
    biases zeros; the keys are `fold_in(key, i)` for the i-th random array in model order
    (embedding, then per layer q, k, v, o, gate, up, down, then the head).

    Args:
      config: the model's config.
      key: a PRNG key.
      dtype: the parameters' dtype.

    Returns:
      The parameter pytree (see the module docstring).
    """
    keys = KeyStream(key)
    c = config
    params = {"embed": {"embedding": _EMBED_INIT(keys(), (c.vocab_size, c.hidden_size),
                                                  jnp.float32)},
              "layers": {i: init_layer(c, keys) for i in range(c.num_layers)},
              "norm": {"weight": jnp.ones((c.hidden_size,))}}
    if not c.tie_word_embeddings:
        params["lm_head"] = init_projection(keys, c.hidden_size, c.vocab_size, bias=False)
    return jax.tree.map(lambda a: a.astype(dtype), params)


_EMBED_INIT = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)


class KeyStream:
    """Successive PRNG keys fold_in(key, 0), fold_in(key, 1), ... (a raw uint32 key is
    wrapped first), the keys Flax NNX's `Rngs` hands out, so parameters initialized here
    equal those of the NNX modules this model was once written with."""

    def __init__(self, key: jax.Array):
        if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.wrap_key_data(key)
        self.key, self.count = key, 0

    def __call__(self) -> jax.Array:
        self.count += 1
        return jax.random.fold_in(self.key, self.count - 1)


def init_projection(keys: KeyStream, d_in: int, d_out: int, *, bias: bool) -> Projection:
    """A projection with an N(0, 1 / d_in) (d_in, d_out) kernel and optional zero bias."""
    p: Projection = {"kernel": jax.random.normal(keys(), (d_in, d_out)) * d_in**-0.5}
    if bias:
        p["bias"] = jnp.zeros((d_out,))
    return p


def init_mlp(config, keys: KeyStream) -> MLPParams:
    """SwiGLU parameters for any config with hidden_size, intermediate_size and mlp_bias."""
    h, i, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
    return {"gate_proj": init_projection(keys, h, i, bias=bias),
            "up_proj": init_projection(keys, h, i, bias=bias),
            "down_proj": init_projection(keys, i, h, bias=bias)}


def init_layer(config: LMConfig, keys: KeyStream) -> LayerParams:
    """One decoder layer's parameters."""
    c = config
    kv = c.num_kv_heads * c.head_dim
    attn: AttentionParams = {
        "q_proj": init_projection(keys, c.hidden_size, c.num_heads * c.head_dim,
                                  bias=c.qkv_bias),
        "k_proj": init_projection(keys, c.hidden_size, kv, bias=c.qkv_bias),
        "v_proj": init_projection(keys, c.hidden_size, kv, bias=c.qkv_bias),
        "o_proj": init_projection(keys, c.num_heads * c.head_dim, c.hidden_size,
                                  bias=c.o_bias)}
    if c.qk_norm:
        attn["q_norm"] = {"weight": jnp.ones((c.head_dim,))}
        attn["k_norm"] = {"weight": jnp.ones((c.head_dim,))}
    layer: LayerParams = {"input_norm": {"weight": jnp.ones((c.hidden_size,))}, "attn": attn,
                          "post_attn_norm": {"weight": jnp.ones((c.hidden_size,))},
                          "mlp": init_mlp(c, keys)}
    if c.sandwich_norms:
        layer["attn_out_norm"] = {"weight": jnp.ones((c.hidden_size,))}
        layer["mlp_out_norm"] = {"weight": jnp.ones((c.hidden_size,))}
    return layer


@functools.lru_cache(maxsize=32)
def param_shapes(config: LMConfig) -> Params:
    """The expected shape of every parameter, as a pytree of tuples (no arrays made)."""
    abstract = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0)))
    return jax.tree.map(lambda a: tuple(a.shape), abstract)


SCAN_MIN_TOKENS = 1024
"""`forward(scan_layers=None)` scans the layers from this many tokens per call on."""


_PROJECTIONS = ("attn/q_proj", "attn/k_proj", "attn/v_proj", "attn/o_proj", "mlp/gate_proj",
                "mlp/up_proj", "mlp/down_proj")


def layer_runs(layers: dict[int, LayerParams], *, config: LMConfig,
               recipe: Recipe | None = None,
               capture: Capture | None = None, scan: bool = True) -> list[tuple[int, int]]:
    """How `forward` groups the layers: maximal runs (first index, count) of consecutive
    layers that share their parameter structure (tree, shapes, dtypes, formats), their
    recipe's activation formats and their attention window (`config.layer_window`), each
    run then scanned as one compiled layer. Capturing anything but "hidden" (per-layer
    paths), or `scan=False`, gives every layer its own run.

    Raises:
      ValueError: a layer index in range(config.num_layers) is missing.
    """
    missing = [i for i in range(config.num_layers) if i not in layers]
    if missing:
        raise ValueError(f"params['layers'] lacks layers {missing} of config.num_layers="
                         f"{config.num_layers}")
    unrolled = not scan or (capture is not None and capture.kinds - {"hidden"})

    def signature(i):
        leaves, tree = jax.tree.flatten(layers[i])
        acts = (() if recipe is None else
                tuple(recipe.activation_format(f"layers/{i}/{p}") for p in _PROJECTIONS))
        return tree, tuple((x.shape, x.dtype) for x in leaves), acts, config.layer_window(i)

    runs: list[tuple[int, int]] = []
    last = None
    for i in range(config.num_layers):
        sig = None if unrolled else signature(i)
        if runs and sig is not None and sig == last:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
        last = sig
    return runs


@functools.partial(jax.tree_util.register_dataclass, data_fields=("runs",),
                   meta_fields=("starts",))
@dataclasses.dataclass(frozen=True)
class LayerStack:
    """The layers as `forward` scans them: each run of like layers (`layer_runs`) stacked
    along a new leading axis, made once by `stack_layers` so that no call copies them.

    Attributes:
      runs: per run, its `LayerParams` with every leaf stacked, (count, ...).
      starts: per run, the index of its first layer (static).
    """

    runs: tuple[LayerParams, ...]
    starts: tuple[int, ...]

    def counts(self) -> tuple[int, ...]:
        """Layers per run."""
        return tuple(jax.tree.leaves(r)[0].shape[0] for r in self.runs)

    def layer(self, index: int) -> LayerParams:
        """Layer `index`'s parameters (sliced out of its run)."""
        for start, count, run in zip(self.starts, self.counts(), self.runs, strict=True):
            if start <= index < start + count:
                return jax.tree.map(lambda a, j=index - start: a[j], run)
        raise IndexError(f"no layer {index} in a stack of {sum(self.counts())}")


def stack_layers(params: Params, *, config: LMConfig, recipe: Recipe | None = None) -> Params:
    """`params` with its layers stacked per run (`layer_runs` under `recipe`) into a
    `LayerStack`: `forward` then scans every run without copying the weights on each
    call (as it must when stacking a {index: layer} dict in the trace). For running only:
    the per-layer tools (quantization, calibration, sharding, checkpoints) read the
    {index: layer} form.

    Args:
      params: a parameter pytree with "layers" {index: LayerParams}.
      config: the model's config.
      recipe: the activation formats `forward` will run with (layers whose formats differ
        go to different runs).

    Returns:
      The same pytree with "layers" a `LayerStack` (other entries shared, not copied).

    Raises:
      ValueError: a layer is missing.
    """
    layers = params["layers"]
    runs = layer_runs(layers, config=config, recipe=recipe)
    stacked = tuple(jax.tree.map(lambda *a: jnp.stack(a), *(layers[i] for i in range(f, f + n)))
                    for f, n in runs)
    return {**params, "layers": LayerStack(stacked, tuple(f for f, _ in runs))}


def _layer_groups(layers, *, config, recipe, capture, scan):
    """(first, count, parameters) for each group `forward` runs: one layer's
    `LayerParams` (count 1) or a run's stacked ones."""
    if not isinstance(layers, LayerStack):
        for first, count in layer_runs(layers, config=config, recipe=recipe, capture=capture,
                                       scan=scan):
            run = [layers[i] for i in range(first, first + count)]
            yield first, count, run[0] if count == 1 else jax.tree.map(
                lambda *a: jnp.stack(a), *run)
        return
    per_layer = not scan or (capture is not None and capture.kinds - {"hidden"})
    for first, count, run in zip(layers.starts, layers.counts(), layers.runs, strict=True):
        if recipe is not None:
            acts = {tuple(recipe.activation_format(f"layers/{i}/{p}") for p in _PROJECTIONS)
                    for i in range(first, first + count)}
            if len(acts) > 1:
                raise ValueError(f"layers {first}..{first + count - 1} were stacked together "
                                 "but this recipe gives them different activation formats; "
                                 "stack_layers with this recipe")
        if per_layer or count == 1:
            for j in range(count):
                yield first + j, 1, jax.tree.map(lambda a, j=j: a[j], run)
        else:
            yield first, count, run


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
    attn_mask: Bool[Array, "b t s"] | None = None,
    embeds: Float[Array, "b t h"] | None = None,
    token_types: Int[Array, "b t"] | None = None,
    capture: Sequence[str] = (),
    attention_impl: str = "auto",
    scan_layers: bool | None = None,
):
    """The pure forward pass: parameter pytree and tokens to float32 logits.

    Jittable. With `scan_layers`, runs of consecutive layers with the same parameter
    structure and recipe formats go through one `jax.lax.scan` (one layer compiled per
    run, whatever the depth); capturing anything but "hidden" unrolls the layers. Concrete
    token ids are checked (`check_token_ids`); traced ones (under jit) cannot be: an id
    outside [0, vocab) embeds as NaN, which attention spreads to the logits of its sequence
    (other sequences of the batch are unaffected), so a bad id never passes for a real
    token. `LM.apply` checks the ids before it jits; call `check_token_ids`
    yourself before jitting `forward`.

    Args:
      params: the parameter pytree (see the module docstring); "layers" may also be a
        `LayerStack` (`stack_layers`).
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
      attn_mask: which keys each query may attend to, in place of the causal structure
        ((b, t, t) without a cache, (b, t, cache slots) with one); padding and unwritten
        cache slots stay excluded. All True gives bidirectional attention (masked diffusion).
        A (num_layers, b, t, s) mask gives each layer its own (tokens dropped after a layer,
        as FastV does).
      embeds: the input embeddings in place of the tokens' (image features spliced in by a
        vision-language model); `tokens` still gives the shape.
      token_types: each token's type (int32 in [0, k)), read by per-type input transforms
        (FreeAct: vision / text, or masked / unmasked); traced, so any types, one compile.
      capture: kinds from `CAPTURE_KINDS` to hand back (static: a tuple of names).
      attention_impl: how attention runs, one of `effjax.models.sdpa.IMPLEMENTATIONS`.
      scan_layers: scan runs of like layers (True) or unroll every layer (False; with
        attention_impl="dense", the reference the pinned logits digests check bit for
        bit). None: scan when params["layers"] is a `LayerStack` (`stack_layers`), or from
        `SCAN_MIN_TOKENS` tokens per call (b * t) on, where the compute outweighs stacking
        the {index: layer} dict in the trace (a copy of every layer's weights per call).

    Returns:
      (logits (b, t, vocab) float32, the updated cache or None); with `capture`, the triple
      (logits, cache, captured): captured["hidden"] the (b, t, hidden) float32 final hidden
      states, every other kind a {path: array} dict.

    Raises:
      ValueError: concrete token ids outside [0, config.vocab_size) (not checked when
        `embeds` replaces the lookup); capture names an unknown kind.
    """
    if embeds is None:
        check_token_ids(tokens, config.vocab_size)
    cap = Capture(capture) if capture else None
    c = config
    b, t = tokens.shape
    key_valid = mask
    if mask is None:
        mask = jnp.ones((b, t), bool)
    if positions is None:
        offset = jnp.zeros((), jnp.int32) if cache is None else cache.length
        positions = jnp.broadcast_to(offset + jnp.arange(t, dtype=jnp.int32), (b, t))
    x = (_scaled(embed_tokens(params["embed"]["embedding"], tokens).astype(dtype), c)
         if embeds is None else embeds.astype(dtype))
    per_layer = attn_mask is not None and attn_mask.ndim == 4
    pairs = Pairs(causal=attn_mask is None, key_valid=key_valid,
                  mask=None if per_layer else attn_mask)
    start = None
    if cache is not None:
        start = cache.length
        zero = jnp.zeros((), jnp.int32)
        valid = jax.lax.dynamic_update_slice(cache.valid, mask, (zero, start))
        pairs = pairs._replace(q_offset=start, key_valid=valid)
    kw = dict(config=c, positions=rope_positions(positions, c),
              start=start,
              recipe=recipe, token_types=token_types, capture=cap,
              attention_impl=attention_impl)

    def one_layer(x, layer, index, layer_mask, cache_kv):
        return layer_forward(layer, x, index=index, cache_kv=cache_kv, **kw,
                             pairs=pairs if layer_mask is None else pairs._replace(mask=layer_mask))

    new_k, new_v = [], []
    scan = (b * t >= SCAN_MIN_TOKENS or isinstance(params["layers"], LayerStack)
            if scan_layers is None else scan_layers)
    for first, count, layer in _layer_groups(params["layers"], config=c, recipe=recipe,
                                             capture=cap, scan=scan):
        masks = attn_mask[first:first + count] if per_layer else None
        kvs = None if cache is None else (cache.k[first:first + count],
                                          cache.v[first:first + count])
        if count == 1:
            x, (k, v) = one_layer(x, layer, first, None if masks is None else masks[0],
                                  None if kvs is None else (kvs[0][0], kvs[1][0]))
            new_k.append(k)
            new_v.append(v)
            continue

        def body(x, xs, first=first):
            layer, layer_mask, cache_kv = xs
            x, kv = one_layer(x, layer, first, layer_mask, cache_kv)
            return x, None if cache_kv is None else kv

        xs = (layer, masks, None if kvs is None else (jnp.stack(kvs[0]), jnp.stack(kvs[1])))
        x, kv = jax.lax.scan(body, x, xs)
        if kv is not None:
            new_k.extend(kv[0])
            new_v.extend(kv[1])
    x = rms_norm(x, params["norm"]["weight"], c.rms_norm_eps)
    if c.tie_word_embeddings:
        act = None if recipe is None else recipe.activation_format("lm_head")
        logits = linear(x, params["embed"]["embedding"].T, act=act,
                        impl="auto" if recipe is None else recipe.impl)
    else:
        logits = project(params["lm_head"], x, path="lm_head", recipe=recipe,
                         token_types=token_types, capture=cap)
    new_cache = None
    if cache is not None:
        new_cache = KVCache(tuple(new_k), tuple(new_v), valid, cache.length + t)
    if cap is None:
        return logits.astype(jnp.float32), new_cache
    if "hidden" in cap.kinds:
        cap.found["hidden"] = x.astype(jnp.float32)
    return logits.astype(jnp.float32), new_cache, cap.found

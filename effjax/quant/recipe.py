"""Quantization recipes: which format each parameter, activation and the KV cache get."""

from __future__ import annotations

import dataclasses
import re

import jax

from effjax.formats import QArray, quantize
from effjax.formats.registry import Format, get_format

IMPLS = ("auto", "pallas", "xla")


def _fmt(value: str | Format | None) -> Format | None:
    return None if value is None else get_format(value)


def _dynamic_fmt(value: str | Format | None, what: str) -> Format | None:
    """A format for activations or the KV cache, quantized on the fly.

    A name of a scaled INT/FP8 format means one scale per vector (per token, per head);
    a per-tensor scale is refused: it would tie every token's rounding to the rest of the
    batch and to how a sequence is split between prefill and decoding.
    """
    if isinstance(value, str) and get_format(value).kind in ("int", "fp8"):
        return get_format(value, granularity="channel")
    fmt = _fmt(value)
    if fmt is not None and fmt.granularity == "tensor" and fmt.kind in ("int", "fp8"):
        raise ValueError(f"{what} format {fmt.name} has a per-tensor scale; use "
                         "granularity='channel' (one scale per vector) or 'group'")
    return fmt


@dataclasses.dataclass(frozen=True, kw_only=True)
class Rule:
    """Formats for the linear layers whose path matches `pattern`.

    Attributes:
      pattern: a regular expression searched in the layer path, e.g. "attn/(q|k|v)_proj"
        or "mlp/". The paths are the same for every family (Llama, Qwen, Gemma 3):
        "layers/<i>/attn/{q,k,v,o}_proj", "layers/<i>/mlp/{gate,up,down}_proj" and
        "lm_head" (an untied head); Gemma 3's GeGLU uses the same gate/up/down names, and
        norms (its sandwich norms "attn_out_norm" / "mlp_out_norm" too) are never
        quantized.
      weight: the weight format (quantized along the input axis), or None to keep float.
      activation: the format of the layer's input activations (along the features), or None;
        INT/FP8 names mean one scale per token (see `_dynamic_fmt`).
    """

    pattern: str
    weight: Format | None = None
    activation: Format | None = None

    def __post_init__(self):
        try:
            re.compile(self.pattern)
        except re.error as e:
            raise ValueError(
                f"pattern {self.pattern!r} is not a valid regular expression: {e}") from None
        object.__setattr__(self, "weight", _fmt(self.weight))
        object.__setattr__(self, "activation", _dynamic_fmt(self.activation, "activation"))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    """An ordered list of rules (the first match wins) and a KV-cache format.

    Hashable, so it can be a static argument of jitted functions.

    Attributes:
      rules: `Rule`s, first match wins.
      kv_cache: format of cached keys and values (along head_dim; INT/FP8 names mean one
        scale per head vector), or None.
      impl: how quantized matmuls run: "auto" (the Pallas kernels on TPU, XLA elsewhere:
        on an H200 the Triton kernels ran 1.5-6x slower than XLA), "pallas" (the kernels;
        interpret mode off TPU and GPU) or "xla".
    """

    rules: tuple[Rule, ...] = ()
    kv_cache: Format | None = None
    impl: str = "auto"

    def __post_init__(self):
        if self.impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {self.impl!r}")
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "kv_cache", _dynamic_fmt(self.kv_cache, "kv_cache"))

    def rule_for(self, path: str) -> Rule | None:
        """The first rule whose pattern matches a layer path, or None."""
        return next((r for r in self.rules if re.search(r.pattern, path)), None)

    def activation_format(self, path: str) -> Format | None:
        rule = self.rule_for(path)
        return None if rule is None else rule.activation


def recipe(weight: str | Format | None = None, activation: str | Format | None = None,
           kv_cache: str | Format | None = None, *, pattern: str = r"_proj$|^lm_head$",
           impl: str = "auto") -> Recipe:
    """A one-rule recipe: every projection (not the embedding) gets the same formats.

    Args:
      weight, activation, kv_cache: formats (names or `Format`s) or None.
      pattern: which layers the rule covers (default: all attention/MLP projections and an
        untied output head).
      impl: "auto", "pallas" or "xla" (see `Recipe`).

    Returns:
      A `Recipe`.
    """
    return Recipe(rules=(Rule(pattern=pattern, weight=weight, activation=activation),),
                  kv_cache=kv_cache, impl=impl)


def layer_path(path: tuple) -> str:
    """"layers/3/attn/q_proj" from a pytree key path ending in ("...", "kernel")."""
    keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
    return "/".join(keys[:-1])


def get_layer(params, name: str) -> dict:
    """The projection dict ({"kernel", ...}) at a layer path ("layers/3/attn/q_proj",
    "lm_head") of a decoder parameter pytree."""
    node = params
    for part in name.split("/"):
        try:
            node = node[int(part)] if part.isdigit() and int(part) in node else node[part]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"no layer at path {name!r}: no {part!r} there (paths look like "
                             "'layers/3/attn/q_proj')") from None
    return node


# One compiled quantizer per (shape, format): a model has a handful of kernel shapes.
_quantize_jit = jax.jit(quantize, static_argnums=(1, 2))


def quantize_params(params, recipe: Recipe):
    """Quantizes the kernels that the recipe gives a weight format (round to nearest).

    Args:
      params: a decoder parameter pytree (kernels laid out (in, out)).
      recipe: the `Recipe`.

    Returns:
      The same pytree with `QArray` leaves (quantized along the input axis) in place of
      the matched kernels.
    """
    def visit(path, leaf):
        if isinstance(leaf, QArray) or getattr(path[-1], "key", None) != "kernel":
            return leaf
        rule = recipe.rule_for(layer_path(path))
        if rule is None or rule.weight is None:
            return leaf
        return _quantize_jit(leaf, rule.weight, 0)

    return jax.tree_util.tree_map_with_path(visit, params,
                                            is_leaf=lambda x: isinstance(x, QArray))

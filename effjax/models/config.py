"""Configuration of the decoder LM (Llama, Qwen2, Qwen3 and Gemma 3 text families)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

# Hugging Face `architectures` entries we load, and the family each one belongs to.
SUPPORTED_ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Gemma3ForCausalLM": "gemma3",
}
ACTIVATIONS = ("silu", "gelu_tanh")
# Hugging Face activation names -> ours.
_HF_ACTIVATIONS = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}
ROPE_TYPES = ("default", "linear", "llama3")
LAYER_TYPES = ("full_attention", "sliding_attention")
# config.json fields `LMConfig.from_hf` cannot do without.
_REQUIRED_HF_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                       "num_attention_heads")


def _int_if_whole(x: float | None) -> float | int | None:
    """x as an int where it is whole (`transformers` types some float fields int)."""
    return int(x) if x is not None and float(x).is_integer() else x


@dataclasses.dataclass(frozen=True, kw_only=True)
class RopeScaling:
    """RoPE frequency scaling as found in real configs.

    Attributes:
      rope_type: "linear" (positions divided by `factor`) or "llama3" (Llama 3.1's
        wavelength-dependent interpolation).
      factor: the context extension factor.
      low_freq_factor, high_freq_factor, original_max_position_embeddings: llama3 only.
    """

    rope_type: str
    factor: float
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self):
        if self.rope_type not in ("linear", "llama3"):
            raise ValueError(
                f"rope_type must be one of ('linear', 'llama3'), got {self.rope_type!r}"
            )
        if not self.factor > 0:
            raise ValueError(f"rope scaling factor must be > 0, got {self.factor}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LMConfig:
    """Shape and options of a decoder-only LM.

    Attributes:
      family: "llama", "qwen2", "qwen3" or "gemma3".
      vocab_size, hidden_size, intermediate_size, num_layers: the usual sizes.
      num_heads, num_kv_heads: query and key/value heads (grouped-query attention when
        they differ; num_heads must be a multiple of num_kv_heads).
      head_dim: per-head width; may differ from hidden_size // num_heads.
      rms_norm_eps: epsilon of every RMSNorm.
      rope_theta: RoPE base frequency.
      rope_scaling: optional `RopeScaling`.
      max_position_embeddings: the context length; longer inputs are rejected.
      tie_word_embeddings: the output projection reuses the embedding matrix.
      qkv_bias, o_bias, mlp_bias: which projections carry a bias.
      qk_norm: RMSNorm over head_dim on queries and keys before RoPE (Qwen3).
      bos_token_id, eos_token_id, pad_token_id: special token ids (None when unknown).
      mrope_section: multimodal RoPE (Qwen2.5-VL): how many of the head_dim // 2 rotary
        frequencies follow the temporal, height and width position ids, in that order
        (e.g. (16, 24, 24)); None for one position per token.
      sliding_window: the window of the sliding-attention layers: a query at position i
        attends keys at i - sliding_window + 1 .. i; None for full attention everywhere.
      layer_types: per layer, one of `LAYER_TYPES`; None: every layer "sliding_attention"
        when `sliding_window` is set (Hugging Face's names and rule).
      hidden_act: the gated MLP's activation, one of `ACTIVATIONS` (SwiGLU or GeGLU).
      sandwich_norms: RMSNorms also on the attention and MLP outputs before they join the
        residual (Gemma's post-attention and post-feed-forward norms).
      scale_embeddings: token embeddings multiplied by sqrt(hidden_size) (Gemma).
      query_pre_attn_scalar: scores scaled by its inverse square root in place of
        head_dim ** -0.5 (Gemma); None for head_dim.
      local_rope_theta: the RoPE base of the sliding-window layers (Gemma 3, unscaled);
        None: every layer uses `rope_theta` and `rope_scaling`.
    """

    family: str = "llama"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    mrope_section: tuple[int, ...] | None = None
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None
    hidden_act: str = "silu"
    sandwich_norms: bool = False
    scale_embeddings: bool = False
    query_pre_attn_scalar: float | None = None
    local_rope_theta: float | None = None

    def __post_init__(self):
        if self.family not in SUPPORTED_ARCHITECTURES.values():
            raise ValueError(
                f"family must be one of {sorted(set(SUPPORTED_ARCHITECTURES.values()))}, "
                f"got {self.family!r}"
            )
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                     "num_heads", "num_kv_heads", "head_dim", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads must be a multiple of num_kv_heads, got {self.num_heads=} "
                f"and {self.num_kv_heads=}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim=}")
        if self.mrope_section is not None and (
                len(self.mrope_section) != 3 or min(self.mrope_section) < 0
                or sum(self.mrope_section) != self.head_dim // 2):
            raise ValueError(
                f"mrope_section must be three non-negative counts summing to head_dim // 2 = "
                f"{self.head_dim // 2}, got {self.mrope_section!r}"
            )

        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act must be one of {ACTIVATIONS}, got {self.hidden_act!r}")
        if self.query_pre_attn_scalar is not None and not self.query_pre_attn_scalar > 0:
            raise ValueError(f"query_pre_attn_scalar must be > 0 or None, got "
                             f"{self.query_pre_attn_scalar!r}")
        if self.sliding_window is not None and (
                not isinstance(self.sliding_window, int | np.integer) or self.sliding_window <= 0):
            raise ValueError(f"sliding_window must be a positive integer or None, got "
                             f"{self.sliding_window!r}")
        if self.layer_types is not None and (
                len(self.layer_types) != self.num_layers
                or not set(self.layer_types) <= set(LAYER_TYPES)):
            raise ValueError(f"layer_types must give one of {LAYER_TYPES} for each of the "
                             f"{self.num_layers} layers, got {self.layer_types!r}")
        if (self.layer_types is not None and "sliding_attention" in self.layer_types
                and self.sliding_window is None):
            raise ValueError("layer_types names sliding_attention layers but sliding_window "
                             "is None; expected a positive window")

    def layer_window(self, index: int) -> int | None:
        """Layer `index`'s attention window (`sliding_window`), or None for full attention."""
        if self.layer_types is not None and self.layer_types[index] == "full_attention":
            return None
        return self.sliding_window

    def first_layers(self, n: int) -> LMConfig:
        """The config of this model's first n layers (an early-exit draft, a study's slice):
        `num_layers` and the per-layer `layer_types` cut together.

        Raises:
          ValueError: n outside [1, num_layers].
        """
        if not 1 <= n <= self.num_layers:
            raise ValueError(f"n must be in [1, {self.num_layers}], got {n}")
        types = None if self.layer_types is None else self.layer_types[:n]
        return dataclasses.replace(self, num_layers=int(n), layer_types=types)

    def mrope_axes(self) -> np.ndarray:
        """For each rotary frequency, the position axis (0 = t, 1 = h, 2 = w) it follows.

        Returns:
          int32 array (head_dim // 2,); all zeros without `mrope_section`.
        """
        if self.mrope_section is None:
            return np.zeros(self.head_dim // 2, np.int32)
        return np.repeat(np.arange(3, dtype=np.int32), self.mrope_section)

    @property
    def num_groups(self) -> int:
        """Query heads per key/value head."""
        return self.num_heads // self.num_kv_heads

    def rope_inv_freq(self, layer: int | None = None) -> np.ndarray:
        """Inverse RoPE frequencies, shape (head_dim // 2,), float64 then cast by the caller.

        Args:
          layer: the layer they rotate in; a sliding-window layer takes `local_rope_theta`
            where it is set. None: the global (full-attention) frequencies.
        """
        exponents = np.arange(0, self.head_dim, 2, dtype=np.float64) / self.head_dim
        local = (layer is not None and self.local_rope_theta is not None
                 and self.layer_window(layer) is not None)
        if local:
            return 1.0 / (self.local_rope_theta**exponents)
        inv_freq = 1.0 / (self.rope_theta**exponents)
        scaling = self.rope_scaling
        if scaling is None:
            return inv_freq
        if scaling.rope_type == "linear":
            return inv_freq / scaling.factor
        # llama3: keep high frequencies, divide low ones by `factor`, blend in between.
        old_len = scaling.original_max_position_embeddings
        low_wavelen = old_len / scaling.low_freq_factor
        high_wavelen = old_len / scaling.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
        smooth = (old_len / wavelen - scaling.low_freq_factor) / (
            scaling.high_freq_factor - scaling.low_freq_factor
        )
        blended = (1 - smooth) * scaled / scaling.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return np.where(medium, blended, scaled)

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any]) -> LMConfig:
        """Builds a config from a Hugging Face `config.json` dictionary.

        Args:
          hf: the parsed config.json.

        Returns:
          The matching `LMConfig`.

        Raises:
          ValueError: an unsupported architecture or option, naming what is supported, or
            a missing required field, naming it.
        """
        archs = list(hf.get("architectures") or [])
        family = next((SUPPORTED_ARCHITECTURES[a] for a in archs if a in SUPPORTED_ARCHITECTURES),
                      None)
        if family is None:
            raise ValueError(
                f"unsupported architecture {archs or hf.get('model_type')!r} in config.json; "
                f"supported architectures: {sorted(SUPPORTED_ARCHITECTURES)}"
            )
        missing = [k for k in _REQUIRED_HF_FIELDS if k not in hf]
        if missing:
            raise ValueError(f"config.json lacks the required field(s) {missing}; every "
                             f"config needs {list(_REQUIRED_HF_FIELDS)}")
        for k in _REQUIRED_HF_FIELDS:
            if isinstance(hf[k], bool) or not isinstance(hf[k], int):
                raise ValueError(f"config.json field {k!r} must be an integer, got {hf[k]!r}")
        gemma = family == "gemma3"
        act_key = "hidden_activation" if gemma else "hidden_act"
        act = hf.get(act_key, "gelu_pytorch_tanh" if gemma else "silu")
        if act not in _HF_ACTIVATIONS:
            raise ValueError(f"{act_key} must be one of {sorted(_HF_ACTIVATIONS)}, got {act!r}")
        for key in ("attn_logit_softcapping", "final_logit_softcapping"):
            if hf.get(key) is not None:
                raise ValueError(f"{key}={hf[key]!r} is not supported; expected None")
        if hf.get("use_bidirectional_attention"):
            raise ValueError("use_bidirectional_attention=True is not supported; expected False")
        n = hf["num_hidden_layers"]
        window, layer_types = None, None
        if gemma and hf.get("sliding_window"):
            pattern = hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern", 6))
            window = hf["sliding_window"]
            layer_types = hf.get("layer_types") or [
                "full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                for i in range(n)]
        elif hf.get("use_sliding_window"):
            window = hf.get("sliding_window")
            layer_types = hf.get("layer_types") or [
                "sliding_attention" if i >= hf.get("max_window_layers", 0) else "full_attention"
                for i in range(n)]
        if layer_types is not None:
            layer_types = tuple(layer_types)
        num_heads = hf["num_attention_heads"]
        rope = dict(hf.get("rope_parameters") or {})
        local_theta = hf.get("rope_local_base_freq") if gemma else None
        if "full_attention" in rope or "sliding_attention" in rope:  # per layer type
            local = rope.get("sliding_attention") or {}
            if local.get("rope_type", "default") != "default":
                raise ValueError(f"sliding-attention RoPE must be 'default', got "
                                 f"{local.get('rope_type')!r}")
            local_theta = local.get("rope_theta", local_theta)
            rope = dict(rope.get("full_attention") or {})
        rope.update(hf.get("rope_scaling") or {})
        rope_theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ROPE_TYPES:
            raise ValueError(f"rope_type must be one of {ROPE_TYPES}, got {rope_type!r}")
        scaling = None
        if rope_type != "default":
            extra = {k: rope[k] for k in ("low_freq_factor", "high_freq_factor",
                                          "original_max_position_embeddings") if k in rope}
            if "factor" not in rope:
                raise ValueError(f"rope scaling of type {rope_type!r} lacks its 'factor'")
            scaling = RopeScaling(rope_type=rope_type, factor=float(rope["factor"]), **extra)
        attention_bias = bool(hf.get("attention_bias", False))
        eos = hf.get("eos_token_id")
        if isinstance(eos, list):
            eos = eos[0] if eos else None
        return cls(
            family=family,
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=hf.get("num_key_value_heads") or num_heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // num_heads,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope_theta),
            rope_scaling=scaling,
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", gemma)),
            qkv_bias=True if family == "qwen2" else attention_bias,
            o_bias=False if family == "qwen2" else attention_bias,
            mlp_bias=bool(hf.get("mlp_bias", False)),
            qk_norm=family in ("qwen3", "gemma3"),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=eos,
            pad_token_id=hf.get("pad_token_id"),
            sliding_window=window,
            layer_types=layer_types,
            hidden_act=_HF_ACTIVATIONS[act],
            sandwich_norms=gemma,
            scale_embeddings=gemma,
            query_pre_attn_scalar=(float(hf.get("query_pre_attn_scalar", 256)) if gemma
                                   else None),
            local_rope_theta=None if local_theta is None else float(local_theta),
        )

    def to_hf(self) -> dict[str, Any]:
        """The Hugging Face `config.json` dictionary of this config (inverse of `from_hf`).

        Returns:
          A dict `transformers` builds the same model from (its `rope_parameters` layout).

        Raises:
          ValueError: the family's Hugging Face config cannot express this one (e.g. a
            llama with `qkv_bias` != `o_bias`, or multimodal RoPE), naming the fields that
            would read back different.
        """
        gemma = self.family == "gemma3"
        arch = next(a for a, f in SUPPORTED_ARCHITECTURES.items() if f == self.family)
        rope: dict[str, Any] = {"rope_type": "default", "rope_theta": self.rope_theta}
        if self.rope_scaling is not None:
            s = self.rope_scaling
            rope.update(rope_type=s.rope_type, factor=s.factor)
            if s.rope_type == "llama3":
                rope.update(low_freq_factor=s.low_freq_factor, high_freq_factor=s.high_freq_factor,
                            original_max_position_embeddings=s.original_max_position_embeddings)
        act = next(k for k, v in _HF_ACTIVATIONS.items() if v == self.hidden_act)
        hf: dict[str, Any] = {
            "architectures": [arch],
            "model_type": "gemma3_text" if gemma else self.family,
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim, "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.o_bias if self.family == "qwen2" else self.qkv_bias,
            "mlp_bias": self.mlp_bias,
            "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            ("hidden_activation" if gemma else "hidden_act"): act,
        }
        if gemma:
            local = {"rope_type": "default", "rope_theta": self.local_rope_theta or self.rope_theta}
            hf.update(rope_parameters={"full_attention": rope, "sliding_attention": local},
                      query_pre_attn_scalar=_int_if_whole(self.query_pre_attn_scalar),
                      sliding_window=self.sliding_window,
                      attn_logit_softcapping=None, final_logit_softcapping=None)
        else:
            hf.update(rope_parameters=rope, use_sliding_window=self.sliding_window is not None,
                      sliding_window=self.sliding_window)
        if self.layer_types is not None:
            hf["layer_types"] = list(self.layer_types)
            if not gemma:
                hf["max_window_layers"] = 0
        try:
            back = LMConfig.from_hf(hf)
        except ValueError as e:
            raise ValueError(f"{self.family}'s Hugging Face config cannot express this config: "
                             f"{e}") from e
        diff = [f.name for f in dataclasses.fields(self)
                if getattr(back, f.name) != getattr(self, f.name)]
        if diff:
            raise ValueError(f"{self.family}'s Hugging Face config cannot express this config's "
                             f"{diff}: they would read back as "
                             f"{ {k: getattr(back, k) for k in diff} }")
        return hf

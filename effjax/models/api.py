"""`effjax.models.load`: a decoder LM by zoo name, Hugging Face directory or GGUF file."""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from effjax.formats import QArray
from effjax.models.ct_loader import is_compressed, read_compressed
from effjax.models.gguf_loader import load_gguf
from effjax.models.hf import load_hf_params, read_config
from effjax.models.records import LM


def load(name_or_path: str | pathlib.Path, *, dtype=jnp.float32, tokenizer: bool = True,
         quantized: bool = False) -> LM:
    """Loads a decoder LM.

    Args:
      name_or_path: a zoo name of a decoder LM (`effjax.zoo.NAMES`, e.g. "smollm2-135m"),
        a Hugging Face checkpoint directory (config.json + safetensors, float or
        compressed-tensors) or a llama / gemma3 `.gguf` file.
      dtype: dtype of the returned float parameters.
      tokenizer: also load the tokenizer.
      quantized: keep stored quantized kernels that an effjax format holds bit for bit as
        `QArray`s (compressed-tensors schemes, GGUF MXFP4 / Q8_0); else dequantize them.

    Returns:
      An `LM`.

    Raises:
      ValueError: name_or_path is none of those, or what it names cannot be read.
    """
    from effjax import zoo  # noqa: PLC0415 (the zoo loads models through this module)

    key = str(name_or_path)
    path = pathlib.Path(key)
    if key in zoo.NAMES:
        lm = zoo.load(key, tokenizer=tokenizer)
        if not isinstance(lm, LM):
            raise ValueError(f"name_or_path: zoo model {key!r} is a {type(lm).__name__}, not a "
                             "decoder LM; load it with effjax.zoo.load")
    elif path.is_dir():
        extras = {}
        if is_compressed(path):
            config, params, qc = read_compressed(path, quantized=quantized)
            extras = {"quantization_config": qc}
        else:
            config = read_config(path)
            params = load_hf_params(path, config, dtype=np.float32)
        tok = None
        if tokenizer and any((path / f).is_file() for f in ("tokenizer.json",
                                                             "tokenizer_config.json")):
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(path))
        lm = LM(config=config, params=params, tokenizer=tok, source=str(path), extras=extras)
    elif path.suffix == ".gguf":
        lm = load_gguf(path, tokenizer=tokenizer, quantized=quantized)
    else:
        raise ValueError(
            f"name_or_path must be one of the zoo names {sorted(zoo.NAMES)}, a Hugging Face "
            f"checkpoint directory or a .gguf file, got {key!r}"
        )
    cast = jax.tree.map(lambda a: a if isinstance(a, QArray) else a.astype(dtype), lm.params,
                        is_leaf=lambda a: isinstance(a, QArray))
    return dataclasses.replace(lm, params=cast)

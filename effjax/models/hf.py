"""Loading Hugging Face checkpoint directories (config.json + safetensors) into effjax params."""

from __future__ import annotations

import functools
import json
import pathlib
import re

import jax
import numpy as np
from safetensors import SafetensorError, safe_open

from effjax.formats import QArray
from effjax.models.config import LMConfig
from effjax.models.decoder import Params, param_shapes

# Hugging Face name of a layer's tensor -> effjax path inside params["layers"][i].
_LAYER_NAMES = {
    "input_layernorm.weight": ("input_norm", "weight"),
    "post_attention_layernorm.weight": ("post_attn_norm", "weight"),
    "self_attn.q_norm.weight": ("attn", "q_norm", "weight"),
    "self_attn.k_norm.weight": ("attn", "k_norm", "weight"),
    **{f"self_attn.{p}.{w}": ("attn", p, "kernel" if w == "weight" else "bias")
       for p in ("q_proj", "k_proj", "v_proj", "o_proj") for w in ("weight", "bias")},
    **{f"mlp.{p}.{w}": ("mlp", p, "kernel" if w == "weight" else "bias")
       for p in ("gate_proj", "up_proj", "down_proj") for w in ("weight", "bias")},
}
_TOP_NAMES = {
    "model.embed_tokens.weight": ("embed", "embedding"),
    "model.norm.weight": ("norm", "weight"),
    "lm_head.weight": ("lm_head", "kernel"),
}
_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")
# Gemma 3's four norms per layer: its post_attention_layernorm normalizes the attention
# output (our attn_out_norm); its pre_feedforward_layernorm is our post_attn_norm.
_GEMMA_LAYER_NAMES = {
    **_LAYER_NAMES,
    "post_attention_layernorm.weight": ("attn_out_norm", "weight"),
    "pre_feedforward_layernorm.weight": ("post_attn_norm", "weight"),
    "post_feedforward_layernorm.weight": ("mlp_out_norm", "weight"),
}


def hf_name_to_path(name: str, *, family: str = "llama") -> tuple | None:
    """Maps a Hugging Face tensor name to its path in the effjax parameter pytree.

    Args:
      name: e.g. "model.layers.3.self_attn.q_proj.weight".
      family: the config's family ("gemma3" names its norms differently).

    Returns:
      e.g. ("layers", 3, "attn", "q_proj", "kernel"), or None for tensors effjax does not use.
    """
    if name in _TOP_NAMES:
        return _TOP_NAMES[name]
    names = _GEMMA_LAYER_NAMES if family == "gemma3" else _LAYER_NAMES
    m = _LAYER_RE.fullmatch(name)
    if m and m.group(2) in names:
        return ("layers", int(m.group(1)), *names[m.group(2)])
    return None


def _offset_norms(params: Params, offset: float) -> Params:
    """Every RMSNorm weight (a "weight" under a key ending in "norm") plus `offset`: Gemma
    scales by (1 + w), stored here as the weight itself, so Hugging Face's w loads with
    offset 1."""
    def shift(path, a):
        parent = getattr(path[-2], "key", "") if len(path) > 1 else ""
        return a + offset if isinstance(parent, str) and parent.endswith("norm") else a
    return jax.tree_util.tree_map_with_path(shift, params)


def read_json(file: pathlib.Path) -> dict:
    """Reads a JSON object from a file.

    Raises:
      ValueError: the file is not valid JSON or holds something other than an object,
        naming the file.
    """
    try:
        value = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(file)!r} is not valid JSON: {e}") from e
    if not isinstance(value, dict):
        raise ValueError(f"{str(file)!r} must hold a JSON object, got a "
                         f"{type(value).__name__}")
    return value


def read_config(path: str | pathlib.Path) -> LMConfig:
    """Reads `config.json` from a checkpoint directory into an `LMConfig`.

    Raises:
      ValueError: config.json is missing, not valid JSON, lacks a required field or holds
        an unsupported option; the message starts with the file's path.
    """
    path = pathlib.Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ValueError(f"expected a config.json in the checkpoint directory {str(path)!r}")
    hf = read_json(cfg_file)
    try:
        return LMConfig.from_hf(hf)
    except ValueError as e:
        raise ValueError(f"{str(cfg_file)!r}: {e}") from e


def _weight_files(path: pathlib.Path) -> list[pathlib.Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{str(index)!r} must map tensor names to files in a "
                             f"'weight_map' object, got {weight_map!r:.80}")
        names = sorted(set(weight_map.values()))
        files = [path / n for n in names]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"the safetensors index names weight files that are missing: "
                             f"{missing}")
        return files
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    found = sorted(path.glob("*.safetensors"))
    if not found:
        raise ValueError(
            f"no weight files in {str(path)!r}: expected model.safetensors or "
            "model.safetensors.index.json with its shards"
        )
    return found


def set_path(tree: dict, path: tuple, value) -> None:
    """Sets `tree[path[0]][path[1]]...` creating intermediate dicts."""
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def check_shapes(params: Params, expected: Params, source: str) -> None:
    """Raises ValueError when params miss a tensor of `expected` or one has the wrong shape.

    Args:
      params: the loaded pytree.
      expected: the expected shape of every tensor, as a pytree of tuples.
      source: where the params came from, for the message.
    """
    expected = dict(jax.tree_util.tree_flatten_with_path(
        expected, is_leaf=lambda x: isinstance(x, tuple))[0])
    given = dict(jax.tree_util.tree_flatten_with_path(
        params, is_leaf=lambda x: isinstance(x, QArray))[0])  # a QArray: its .shape
    missing = [jax.tree_util.keystr(k) for k in expected if k not in given]
    if missing:
        raise ValueError(f"{source}: missing weights for {missing[:8]}"
                         + (f" and {len(missing) - 8} more" if len(missing) > 8 else ""))
    for k, shape in expected.items():
        if tuple(given[k].shape) != shape:
            raise ValueError(f"{source}: weight {jax.tree_util.keystr(k)} has shape "
                             f"{tuple(given[k].shape)}, expected {shape}")


def check_params(params: Params, source: str, *, config: LMConfig) -> None:
    """`check_shapes` against the decoder of `config`."""
    check_shapes(params, param_shapes(config), source)


def read_tensors(path: pathlib.Path, name_to_path, dtype=np.float32) -> Params:
    """Reads a checkpoint's safetensors into a nested dict through a tensor-name map.

    Args:
      path: the checkpoint directory.
      name_to_path: tensor name -> effjax path (None for tensors to skip). The ".weight"
        of a projection or convolution maps to a "kernel" path and is laid out (in, out):
        (out, ...) flattened to (out, in) and transposed.
      dtype: dtype of the returned arrays.

    Returns:
      The unchecked nested dict of NumPy arrays.

    Raises:
      ValueError: a weight file is truncated or not a safetensors file, naming the file.
    """
    params: Params = {}
    for file in _weight_files(path):
        try:
            with safe_open(str(file), framework="flax") as f:
                for name in f.keys():
                    target = name_to_path(name)
                    if target is None:
                        continue
                    value = np.asarray(f.get_tensor(name), dtype=dtype)
                    if target[-1] == "kernel":
                        value = value.reshape(value.shape[0], -1).T
                    set_path(params, target, value)
        except SafetensorError as e:
            raise ValueError(f"{str(file)!r} is not a readable safetensors file (truncated "
                             f"or corrupt?): {e}") from e
    return params


def read_weights(path: pathlib.Path, name_to_path, config: LMConfig, dtype=np.float32) -> Params:
    """Reads a decoder checkpoint through a tensor-name map (`read_tensors`), drops a tied
    head and checks every shape against `config`.

    Args:
      path: the checkpoint directory.
      name_to_path: tensor name -> effjax path, as in `read_tensors`.
      config: the config the weights must match.
      dtype: dtype of the returned arrays.

    Returns:
      The checked parameter pytree.
    """
    params = read_tensors(path, name_to_path, dtype)
    if config.tie_word_embeddings:
        params.pop("lm_head", None)
    check_params(params, source=str(path), config=config)
    return jax.tree.map(jax.numpy.asarray, params)


def load_hf_params(path: str | pathlib.Path, config: LMConfig, dtype=np.float32) -> Params:
    """Loads safetensors weights (single file or sharded index) into an effjax pytree.

    Args:
      path: the checkpoint directory.
      config: its config (from `read_config`).
      dtype: dtype of the returned arrays.

    Returns:
      The parameter pytree with (in, out) kernels (Gemma's norms as 1 + w).
    """
    names = functools.partial(hf_name_to_path, family=config.family)
    params = read_weights(pathlib.Path(path), names, config, dtype)
    return _offset_norms(params, 1.0) if config.family == "gemma3" else params

"""A Qwen2.5-VL-compatible vision-language model as plain functions over its parameters.

The vision transformer turns an image into patch tokens (a linear patch embedding over
`temporal_patch_size` x `patch_size`^2 pixels per channel), runs blocks of window attention
(each token sees the tokens of its window of `window_size` pixels) and, at
`fullatt_block_indexes`, full attention over the frame, all with a 2D rotary embedding of
each patch's (row, column); the patch merger folds each `spatial_merge_size`^2 block of
patches into one token of the language model's width. The language model is the decoder of
`effjax.models.decoder` with multimodal RoPE: every token carries (t, h, w) position ids;
text tokens count up on all three axes together, an image's tokens take
(start, start + row, start + column) and the text after it continues from one past the
largest id (`rope_index`). The ids are explicit inputs, so a pruned sequence keeps each kept
token's original position.

Parameters are one pytree, {"vision": ..., "lm": <decoder params>}:

    {"patch_embed": {"kernel": (channels * temporal_patch * patch^2, hidden)},
     "blocks": {i: {"norm1", "attn": {"qkv", "proj"}, "norm2",
                    "mlp": {"gate_proj", "up_proj", "down_proj"}}},
     "merger": {"ln_q", "fc1": (hidden * merge^2, hidden * merge^2), "fc2": (.., out_hidden)}}

Patches are laid out as Hugging Face's Qwen2-VL image processor lays them out
(`patchify`): merge blocks row-major, the patches of a block row-major inside it, each patch
flattened (channel, time, row, column).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from effjax.models.config import LMConfig
from effjax.models.decoder import (
    Capture,
    KeyStream,
    Params,
    forward,
    init_mlp,
    init_params,
    init_projection,
    mlp,
    param_shapes,
    project,
)
from effjax.models.hf import check_shapes, hf_name_to_path, read_json, read_tensors
from effjax.models.layers import apply_rope, rms_norm
from effjax.models.records import VLM
from effjax.models.sdpa import attention
from effjax.quant.recipe import Recipe

Grid = tuple[int, int, int]  # (frames, patch rows, patch columns) of one image


@dataclasses.dataclass(frozen=True, kw_only=True)
class VisionConfig:
    """Shape of the Qwen2.5-VL vision transformer.

    Attributes:
      depth, hidden_size, intermediate_size, num_heads: the transformer's sizes.
      out_hidden_size: width of the merged tokens (the language model's hidden size).
      patch_size: pixels per patch side.
      temporal_patch_size: frames per patch (a still image is repeated to fill them).
      in_channels: image channels.
      spatial_merge_size: patches per side of a merged token.
      window_size: window side in pixels (a multiple of patch_size * spatial_merge_size).
      fullatt_block_indexes: blocks with full attention over the frame; the rest attend
        within windows.
      rope_theta: base of the 2D rotary embedding.
      rms_norm_eps: epsilon of the RMSNorms.
    """

    depth: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    out_hidden_size: int
    patch_size: int = 14
    temporal_patch_size: int = 2
    in_channels: int = 3
    spatial_merge_size: int = 2
    window_size: int = 112
    fullatt_block_indexes: tuple[int, ...] = ()
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6

    def __post_init__(self):
        for name in ("depth", "hidden_size", "intermediate_size", "num_heads", "out_hidden_size",
                     "patch_size", "temporal_patch_size", "in_channels", "spatial_merge_size",
                     "window_size"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 4:
            raise ValueError(
                f"hidden_size / num_heads must be a multiple of 4 (2D RoPE over rows and "
                f"columns), got {self.hidden_size=} and {self.num_heads=}"
            )
        if self.window_size % (self.patch_size * self.spatial_merge_size):
            raise ValueError(
                f"window_size must be a multiple of patch_size * spatial_merge_size = "
                f"{self.patch_size * self.spatial_merge_size}, got {self.window_size}"
            )
        bad = [i for i in self.fullatt_block_indexes if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"fullatt_block_indexes must lie in [0, depth={self.depth}), "
                             f"got {bad}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        """Values per flattened patch: channels * temporal_patch_size * patch_size^2."""
        return self.in_channels * self.temporal_patch_size * self.patch_size**2

    @property
    def mlp_bias(self) -> bool:  # read by the decoder's MLP, which the blocks share
        return True

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any]) -> VisionConfig:
        """From the `vision_config` of a Qwen2.5-VL config.json."""
        act = hf.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"vision_config.hidden_act must be 'silu', got {act!r}")
        rope = hf.get("rope_parameters") or {}
        return cls(
            depth=hf["depth"], hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"], num_heads=hf["num_heads"],
            out_hidden_size=hf["out_hidden_size"], patch_size=hf.get("patch_size", 14),
            temporal_patch_size=hf.get("temporal_patch_size", 2),
            in_channels=hf.get("in_channels", hf.get("in_chans", 3)),
            spatial_merge_size=hf.get("spatial_merge_size", 2),
            window_size=hf.get("window_size", 112),
            fullatt_block_indexes=tuple(hf.get("fullatt_block_indexes", (7, 15, 23, 31))),
            rope_theta=float(rope.get("rope_theta", 10000.0)),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class VLMConfig:
    """A Qwen2.5-VL model: its language model, vision transformer and special tokens.

    Attributes:
      text: the language model (a Qwen2 decoder with `mrope_section`).
      vision: the vision transformer.
      image_token_id: the placeholder token each merged image token replaces.
      vision_start_token_id, vision_end_token_id: the tokens around an image's placeholders.
    """

    text: LMConfig
    vision: VisionConfig
    image_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int

    def __post_init__(self):
        if self.text.mrope_section is None:
            raise ValueError("text.mrope_section must be set (multimodal RoPE), got None")
        if self.vision.out_hidden_size != self.text.hidden_size:
            raise ValueError(
                f"vision.out_hidden_size must equal text.hidden_size = {self.text.hidden_size}, "
                f"got {self.vision.out_hidden_size}"
            )
        for name in ("image_token_id", "vision_start_token_id", "vision_end_token_id"):
            value = getattr(self, name)
            if not 0 <= value < self.text.vocab_size:
                raise ValueError(f"{name} must be a token id in [0, {self.text.vocab_size}), "
                                 f"got {value}")

    @classmethod
    def from_hf(cls, hf: Mapping[str, Any]) -> VLMConfig:
        """From a Qwen2.5-VL config.json (nested `text_config` or the original flat layout).

        Args:
          hf: the parsed config.json.

        Returns:
          The matching `VLMConfig`.
        """
        archs = list(hf.get("architectures") or [])
        if "Qwen2_5_VLForConditionalGeneration" not in archs:
            raise ValueError(f"expected architecture Qwen2_5_VLForConditionalGeneration in "
                             f"config.json, got {archs or hf.get('model_type')!r}")
        text = {k: v for k, v in hf.items() if k not in ("text_config", "vision_config")}
        text.update(hf.get("text_config") or {})
        rope = {**(text.pop("rope_parameters", None) or {}), **(text.pop("rope_scaling", None)
                                                                 or {})}
        section = rope.get("mrope_section")
        if section is None:
            raise ValueError("config.json has no mrope_section in rope_parameters / "
                             "rope_scaling; expected e.g. [16, 24, 24]")
        text["rope_parameters"] = {"rope_type": "default",
                                   "rope_theta": rope.get("rope_theta",
                                                          text.get("rope_theta", 1e6))}
        text["architectures"] = ["Qwen2ForCausalLM"]
        text_config = dataclasses.replace(LMConfig.from_hf(text),
                                          mrope_section=tuple(int(s) for s in section))
        return cls(text=text_config, vision=VisionConfig.from_hf(hf["vision_config"]),
                   image_token_id=hf["image_token_id"],
                   vision_start_token_id=hf["vision_start_token_id"],
                   vision_end_token_id=hf["vision_end_token_id"])


def vision_attention(p: Params, x: Float[Array, "b n h"], *, config: VisionConfig, path: str,
                     positions: Int[Array, "b n f"], inv_freq: Float[Array, " f"],
                     allowed: Bool[Array, "1 n n"], recipe: Recipe | None = None,
                     capture: Capture | None = None,
                     attention_impl: str = "auto") -> Float[Array, "b n h"]:
    """A vision block's attention: fused qkv, 2D RoPE, attention within `allowed` (run by
    `effjax.models.attention` with `attention_impl`), proj. Captures "qk" (after RoPE) and
    "qk_prerope" at f"{path}/q" and f"{path}/k"."""
    c = config
    b, n, _ = x.shape
    qkv = project(p["qkv"], x, path=f"{path}/qkv", recipe=recipe, capture=capture).reshape(
        b, n, 3, c.num_heads, c.head_dim)
    q, k = qkv[:, :, 0], qkv[:, :, 1]
    if capture is not None:
        capture.put("qk_prerope", f"{path}/q", q)
        capture.put("qk_prerope", f"{path}/k", k)
    q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)
    if capture is not None:
        capture.put("qk", f"{path}/q", q)
        capture.put("qk", f"{path}/k", k)
    out = attention(q, k, qkv[:, :, 2], mask=allowed, implementation=attention_impl)
    return project(p["proj"], out.reshape(b, n, c.hidden_size), path=f"{path}/proj",
                   recipe=recipe, capture=capture)


def vision_block(p: Params, x: Float[Array, "b n h"], *, config: VisionConfig, path: str,
                 recipe: Recipe | None = None, capture: Capture | None = None,
                 **geometry) -> Float[Array, "b n h"]:
    """A pre-norm vision block (`geometry`: `vision_attention`'s positions, inv_freq,
    allowed and attention_impl)."""
    eps = config.rms_norm_eps
    x = x + vision_attention(p["attn"], rms_norm(x, p["norm1"]["weight"], eps), config=config,
                             path=f"{path}/attn", recipe=recipe, capture=capture, **geometry)
    return x + mlp(p["mlp"], rms_norm(x, p["norm2"]["weight"], eps), path=f"{path}/mlp",
                   recipe=recipe, capture=capture)


def patch_merger(p: Params, x: Float[Array, "b n h"], *, config: VisionConfig,
                 recipe: Recipe | None = None,
                 capture: Capture | None = None) -> Float[Array, "b n_merged out_hidden"]:
    """Folds each spatial_merge_size^2 block of patches into one token: norm, then a GELU
    MLP over the concatenated patches."""
    wide = config.hidden_size * config.spatial_merge_size**2
    b, n, _ = x.shape
    x = rms_norm(x, p["ln_q"]["weight"], config.rms_norm_eps)
    x = x.reshape(b, n * x.shape[-1] // wide, wide)
    kw = dict(recipe=recipe, capture=capture)
    return project(p["fc2"], jax.nn.gelu(project(p["fc1"], x, path="vision/merger/fc1", **kw),
                                         approximate=False), path="vision/merger/fc2", **kw)


def _vision_inv_freq(config: VisionConfig) -> np.ndarray:
    """The head_dim // 4 inverse frequencies shared by the row and column rotations."""
    half = config.head_dim // 2
    return 1.0 / config.rope_theta ** (np.arange(0, half, 2, dtype=np.float64) / half)


def check_grid(grid: Sequence[int], config: VisionConfig) -> Grid:
    """Validates an image's (frames, patch rows, patch columns) grid.

    Args:
      grid: the grid.
      config: the vision config.

    Returns:
      The grid as a tuple of ints.

    Raises:
      ValueError: a non-positive entry, or rows / columns not a multiple of
        spatial_merge_size.
    """
    grid = tuple(int(g) for g in grid)
    m = config.spatial_merge_size
    if len(grid) != 3 or min(grid) <= 0 or grid[1] % m or grid[2] % m:
        raise ValueError(f"grid must be (frames, rows, columns) of positive patch counts with "
                         f"rows and columns multiples of spatial_merge_size={m}, got {grid}")
    return grid


@functools.lru_cache(maxsize=64)
def vision_geometry(grid: Grid, config: VisionConfig) -> tuple[np.ndarray, np.ndarray,
                                                                np.ndarray]:
    """Where each patch of an image sits, in the merge-block-major patch order.

    Args:
      grid: (frames, patch rows, patch columns).
      config: the vision config.

    Returns:
      (rope positions (n, head_dim // 2): each frequency's row or column, window id (n,),
      frame (n,)), n = frames * rows * columns.
    """
    t, h, w = check_grid(grid, config)
    m = config.spatial_merge_size
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    block = lambda a: a.reshape(h // m, m, w // m, m).transpose(0, 2, 1, 3).reshape(-1)
    rows, cols = np.tile(block(rows), t), np.tile(block(cols), t)
    frame = np.repeat(np.arange(t), h * w)
    units = config.window_size // (config.patch_size * m)  # merged tokens per window side
    win_rows, win_cols = -(-(h // m) // units), -(-(w // m) // units)
    window = (frame * win_rows + (rows // m) // units) * win_cols + (cols // m) // units
    quarter = config.head_dim // 4
    positions = np.concatenate([np.repeat(rows[:, None], quarter, 1),
                                np.repeat(cols[:, None], quarter, 1)], axis=1)
    return positions.astype(np.int32), window, frame


def encode_images(
    params: Params,
    patches: Float[Array, "k n patch_dim"],
    *,
    config: VisionConfig,
    grid: Grid,
    dtype=jnp.float32,
    recipe: Recipe | None = None,
    capture: Sequence[str] = (),
    attention_impl: str = "auto",
):
    """Runs the vision transformer over k images of one size.

    Args:
      params: the vision parameters (`params["vision"]`).
      patches: `patchify`'s output for each image.
      config: the vision config.
      grid: the images' (frames, patch rows, patch columns); n = frames * rows * columns.
      dtype: compute dtype; the result is float32.
      recipe: optional activation formats (paths "vision/blocks/<i>/...").
      capture: kinds to hand back, as `effjax.models.forward`'s ("inputs", "qk",
        "qk_prerope"; paths "vision/blocks/<i>/attn/q" and so on).
      attention_impl: how attention runs, one of `effjax.models.sdpa.IMPLEMENTATIONS`.

    Returns:
      The merged image tokens (k, n / spatial_merge_size^2, out_hidden) float32, in the
      order the placeholders take them; with `capture`, the pair (those, {kind: {path:
      array}}).

    Raises:
      ValueError: a bad grid, patches of the wrong shape, or an unknown capture kind.
    """
    positions, window, frame = vision_geometry(check_grid(grid, config), config)
    if patches.shape[1:] != (len(frame), config.patch_dim):
        raise ValueError(f"patches must be (images, {len(frame)}, {config.patch_dim}) for "
                         f"grid {grid}, got {tuple(patches.shape)}")
    cap = Capture(capture) if capture else None
    pos = jnp.broadcast_to(jnp.asarray(positions), (patches.shape[0], *positions.shape))
    win = jnp.asarray(window[:, None] == window[None, :])[None]
    full = jnp.asarray(frame[:, None] == frame[None, :])[None]
    quarter = jnp.asarray(_vision_inv_freq(config), jnp.float32)
    inv_freq = jnp.concatenate([quarter, quarter])
    x = project(params["patch_embed"], patches.astype(dtype), path="vision/patch_embed",
                recipe=recipe, capture=cap)
    for i in range(config.depth):
        x = vision_block(params["blocks"][i], x, config=config, path=f"vision/blocks/{i}",
                         recipe=recipe, capture=cap, positions=pos, inv_freq=inv_freq,
                         allowed=full if i in config.fullatt_block_indexes else win,
                         attention_impl=attention_impl)
    out = patch_merger(params["merger"], x, config=config, recipe=recipe,
                       capture=cap).astype(jnp.float32)
    return out if cap is None else (out, cap.found)


def patchify(images: Float[Array, "k height width channels"],
             config: VisionConfig) -> tuple[Float[Array, "k n patch_dim"], Grid]:
    """Cuts still images into the vision transformer's flattened patches.

    Each image is repeated over `temporal_patch_size` frames, as Hugging Face's Qwen2-VL
    image processor does (normalization and resizing are the caller's).

    Args:
      images: channels-last images, height and width multiples of
        patch_size * spatial_merge_size.
      config: the vision config.

    Returns:
      (patches, grid) with grid = (1, height / patch_size, width / patch_size).
    """
    if images.ndim != 4 or images.shape[-1] != config.in_channels:
        raise ValueError(f"images must be (images, height, width, {config.in_channels}), got "
                         f"shape {tuple(images.shape)}")
    k, height, width, ch = images.shape
    p, m, tp = config.patch_size, config.spatial_merge_size, config.temporal_patch_size
    if height % (p * m) or width % (p * m):
        raise ValueError(f"image height and width must be multiples of patch_size * "
                         f"spatial_merge_size = {p * m}, got {height}x{width}")
    gh, gw = height // p, width // p
    x = images.reshape(k, gh // m, m, p, gw // m, m, p, ch)
    x = x.transpose(0, 1, 4, 2, 5, 7, 3, 6)  # blocks, patches in a block, channel, rows, cols
    x = jnp.broadcast_to(x[..., None, :, :], (*x.shape[:6], tp, p, p))
    return x.reshape(k, gh * gw, config.patch_dim), (1, gh, gw)


def image_token_count(grid: Grid, config: VisionConfig) -> int:
    """Placeholder tokens an image of `grid` takes in the prompt."""
    t, h, w = check_grid(grid, config)
    return t * h * w // config.spatial_merge_size**2


def rope_index(
    tokens: Int[np.ndarray, "b t"],
    grids: Sequence[Grid],
    config: VLMConfig,
    mask: Bool[np.ndarray, "b t"] | None = None,
) -> tuple[Int[np.ndarray, "3 b t"], Int[np.ndarray, " b"]]:
    """Multimodal RoPE position ids of a batch of prompts (host-side NumPy).

    Args:
      tokens: token ids; each image is a run of `image_token_id` placeholders.
      grids: one grid per image, in the order the images appear (row by row).
      config: the model config.
      mask: True for real tokens (padding gets id 0 and is skipped when counting).

    Returns:
      (position ids (3, b, t) int32, rope_deltas (b,): the largest id + 1 minus the number
      of real tokens; new tokens continue from the largest id + 1).

    Raises:
      ValueError: a placeholder run whose length does not match its grid, or more / fewer
        runs than grids.
    """
    tokens = np.asarray(tokens)
    b, t = tokens.shape
    mask = np.ones((b, t), bool) if mask is None else np.asarray(mask, bool)
    m = config.vision.spatial_merge_size
    out = np.zeros((3, b, t), np.int32)
    deltas = np.zeros(b, np.int32)
    grid_iter = iter(grids)
    for row in range(b):
        ids = tokens[row][mask[row]]
        is_img = ids == config.image_token_id
        pieces, pos, i = [], 0, 0
        while i < len(ids):
            j = i
            while j < len(ids) and is_img[j] == is_img[i]:
                j += 1
            if not is_img[i]:
                pieces.append(np.broadcast_to(np.arange(pos, pos + j - i), (3, j - i)))
                pos += j - i
            else:
                grid = next(grid_iter, None)
                if grid is None:
                    raise ValueError(f"grids: row {row} has more image placeholder runs than "
                                     f"the {len(grids)} grids given")
                gt, gh, gw = check_grid(grid, config.vision)
                if j - i != image_token_count(grid, config.vision):
                    raise ValueError(
                        f"tokens: row {row} has a run of {j - i} image placeholders, but its "
                        f"grid {grid} takes {image_token_count(grid, config.vision)}")
                tt, hh, ww = np.meshgrid(np.arange(gt), np.arange(gh // m), np.arange(gw // m),
                                         indexing="ij")
                pieces.append(pos + np.stack([tt.ravel(), hh.ravel(), ww.ravel()]))
                pos += max(gh, gw) // m
            i = j
        ids3 = np.concatenate(pieces, axis=1) if pieces else np.zeros((3, 0), np.int64)
        out[:, row, mask[row]] = ids3
        deltas[row] = (ids3.max() + 1 if ids3.size else 0) - len(ids)
    if next(grid_iter, None) is not None:
        raise ValueError(f"grids: {len(grids)} grids given for fewer image placeholder runs")
    return out, deltas


def splice_images(
    params: Params,
    tokens: Int[Array, "b t"],
    image_features: Float[Array, "n_image_tokens hidden"],
    dtype=jnp.float32, *, config: VLMConfig,
) -> Float[Array, "b t hidden"]:
    """The language model's input embeddings: token embeddings with the image features
    written, in order, over the placeholder tokens (row-major over the batch)."""
    embeds = jnp.take(params["lm"]["embed"]["embedding"], tokens, axis=0).astype(dtype)
    if image_features.shape[0] == 0:
        return embeds
    is_img = (tokens == config.image_token_id).reshape(-1)
    index = jnp.clip(jnp.cumsum(is_img) - 1, 0, image_features.shape[0] - 1)
    flat = jnp.where(is_img[:, None], image_features.astype(dtype)[index],
                     embeds.reshape(-1, embeds.shape[-1]))
    return flat.reshape(embeds.shape)


def vlm_forward(
    params: Params,
    tokens: Int[Array, "b t"],
    image_features: Float[Array, "n_image_tokens hidden"],
    positions: Int[Array, "3 b t"],
    *,
    config: VLMConfig,
    mask: Bool[Array, "b t"] | None = None,
    dtype=jnp.float32,
    recipe: Recipe | None = None,
    token_types: Int[Array, "b t"] | None = None,
    capture: Sequence[str] = (),
):
    """The language model over a prompt with its images' features spliced in.

    Args:
      params: the VLM pytree.
      tokens: token ids with image placeholders.
      image_features: `encode_images` outputs, flattened over images in prompt order.
      positions: `rope_index`'s ids (or a pruned subset of them).
      config: the model config.
      mask: True for real tokens.
      dtype: compute dtype.
      recipe: optional formats for the language model.
      token_types: as in `effjax.models.forward` (per-type input transforms).
      capture: as in `effjax.models.forward`.

    Returns:
      As `effjax.models.forward` without a cache: (logits (b, t, vocab) float32, None),
      and with `capture` the captured arrays third.
    """
    embeds = splice_images(params, tokens, image_features, dtype, config=config)
    return forward(params["lm"], tokens, config=config.text, positions=positions, mask=mask,
                   dtype=dtype, recipe=recipe, embeds=embeds, token_types=token_types,
                   capture=capture)


def init_vlm_params(config: VLMConfig, key: jax.Array, dtype=jnp.float32) -> Params:
    """Randomly initialized VLM parameters."""
    k_vis, k_lm = jax.random.split(key)
    return {"vision": jax.tree.map(lambda a: a.astype(dtype), init_vision(config.vision, k_vis)),
            "lm": init_params(config.text, k_lm, dtype)}


def init_vision(config: VisionConfig, key: jax.Array) -> Params:
    """Random float32 vision parameters (kernels N(0, 1 / d_in), keys drawn as in
    `effjax.models.decoder.init_params`: patch_embed, each block's qkv, proj, gate, up,
    down, then the merger's fc1, fc2)."""
    keys = KeyStream(key)
    c = config
    h, wide = c.hidden_size, c.hidden_size * c.spatial_merge_size**2
    ones = lambda d: {"weight": jnp.ones((d,))}
    patch_embed = init_projection(keys, c.patch_dim, h, bias=False)
    blocks = {i: {"norm1": ones(h),
                  "attn": {"qkv": init_projection(keys, h, 3 * h, bias=True),
                           "proj": init_projection(keys, h, h, bias=True)},
                  "norm2": ones(h), "mlp": init_mlp(c, keys)} for i in range(c.depth)}
    merger = {"ln_q": ones(h), "fc1": init_projection(keys, wide, wide, bias=True),
              "fc2": init_projection(keys, wide, c.out_hidden_size, bias=True)}
    return {"patch_embed": patch_embed, "blocks": blocks, "merger": merger}


def vlm_param_shapes(config: VLMConfig) -> Params:
    """The expected shape of every VLM parameter, as a pytree of tuples."""
    vision = jax.eval_shape(lambda: init_vision(config.vision, jax.random.PRNGKey(0)))
    return {"vision": jax.tree.map(lambda a: tuple(a.shape), vision),
            "lm": param_shapes(config.text)}


_VISION_RE = re.compile(r"(?:model\.)?visual\.(.+)")
_VISION_BLOCK_RE = re.compile(r"blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|"
                              r"mlp\.gate_proj|mlp\.up_proj|mlp\.down_proj)\.(weight|bias)")
_VISION_TOP = {
    "patch_embed.proj.weight": ("patch_embed", "kernel"),
    "merger.ln_q.weight": ("merger", "ln_q", "weight"),
    "merger.mlp.0.weight": ("merger", "fc1", "kernel"),
    "merger.mlp.0.bias": ("merger", "fc1", "bias"),
    "merger.mlp.2.weight": ("merger", "fc2", "kernel"),
    "merger.mlp.2.bias": ("merger", "fc2", "bias"),
}


def qwen2_5_vl_name_to_path(name: str) -> tuple | None:
    """Maps a Qwen2.5-VL tensor name (hub layout "visual.*" / "model.layers.*", or
    transformers' "model.visual.*" / "model.language_model.*") to its effjax path."""
    m = _VISION_RE.fullmatch(name)
    if m:
        rest = m.group(1)
        if rest in _VISION_TOP:
            return ("vision", *_VISION_TOP[rest])
        b = _VISION_BLOCK_RE.fullmatch(rest)
        if b is None:
            return None
        module = tuple(b.group(2).split("."))
        leaf = ("weight",) if module[0].startswith("norm") else (
            "kernel" if b.group(3) == "weight" else "bias",)
        return ("vision", "blocks", int(b.group(1)), *module, *leaf)
    lm = hf_name_to_path(name.replace("model.language_model.", "model.", 1))
    return None if lm is None else ("lm", *lm)


def load_qwen2_5_vl(path: str | pathlib.Path, *, dtype=np.float32) -> VLM:
    """Loads a Hugging Face Qwen2.5-VL checkpoint directory.

    Args:
      path: the directory (config.json + safetensors).
      dtype: dtype of the returned arrays.

    Returns:
      A `VLM` (no tokenizer).

    Raises:
      ValueError: no config.json, or weights that do not fit the config.
    """
    path = pathlib.Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ValueError(f"expected a config.json in the checkpoint directory {str(path)!r}")
    config = VLMConfig.from_hf(read_json(cfg_file))
    params = read_tensors(path, qwen2_5_vl_name_to_path, dtype)
    if config.text.tie_word_embeddings:
        params.get("lm", {}).pop("lm_head", None)
    check_shapes(params, vlm_param_shapes(config), source=str(path))
    return VLM(config=config, params=jax.tree.map(jnp.asarray, params), tokenizer=None,
               source=str(path))

"""The small trained VLM: a Qwen2.5-VL-shaped model trained on `effjax.data.shapes_vqa`.

`load_shapes_vlm()` reads the weights shipped in `effjax/data/zoo/shapes_vlm/` (trained
here by `train_shapes_vlm`, so nothing is downloaded). The vision transformer has two
blocks (window attention, then full attention) over 4-pixel patches merged 2x2, so a 64x64
image is 64 visual tokens; the language model is a 3-layer Qwen2 decoder with multimodal
RoPE.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int
from tqdm.auto import tqdm

from effjax import checkpoint, zoo
from effjax.checkpoint import load_weights, save_weights
from effjax.data import shapes_vqa
from effjax.models.config import LMConfig
from effjax.models.decoder import Params, forward
from effjax.models.records import VLM
from effjax.models.vlm import (
    VisionConfig,
    VLMConfig,
    encode_images,
    init_vlm_params,
    patchify,
    rope_index,
    splice_images,
)

SHAPES_VLM_CONFIG = VLMConfig(
    text=LMConfig(family="qwen2", vocab_size=shapes_vqa.VOCAB_SIZE, hidden_size=128,
                  intermediate_size=256, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=32,
                  max_position_embeddings=128, qkv_bias=True, mrope_section=(4, 6, 6),
                  bos_token_id=shapes_vqa.BOS_ID, eos_token_id=shapes_vqa.EOS_ID,
                  pad_token_id=shapes_vqa.PAD_ID),
    vision=VisionConfig(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                        out_hidden_size=128, patch_size=4, temporal_patch_size=2,
                        spatial_merge_size=2, window_size=32, fullatt_block_indexes=(1,)),
    image_token_id=shapes_vqa.IMAGE_ID, vision_start_token_id=shapes_vqa.VISION_START_ID,
    vision_end_token_id=shapes_vqa.VISION_END_ID)
GRID = (1, shapes_vqa.IMAGE_SIZE // 4, shapes_vqa.IMAGE_SIZE // 4)


def normalize(images: Float[Array, "b h w 3"]) -> Float[Array, "b h w 3"]:
    """Pixel values in [0, 1] to the encoder's input scale."""
    return (images - 0.5) / 0.25


def image_features(params: Params, images: Float[Array, "b h w 3"], *,
                   config: VLMConfig = SHAPES_VLM_CONFIG) -> Float[Array, "b n hidden"]:
    """The merged visual tokens of a batch of 64x64 images (64 per image)."""
    patches, grid = patchify(normalize(images), config.vision)
    return encode_images(params["vision"], patches, config=config.vision, grid=grid)


def positions_of(batch: dict[str, np.ndarray], config: VLMConfig = SHAPES_VLM_CONFIG
                 ) -> Int[np.ndarray, "3 b t"]:
    """`rope_index` of a right-padded `shapes_vqa.batch` (one image per row)."""
    return rope_index(batch["tokens"], [GRID] * len(batch["tokens"]), config, batch["mask"])[0]


def lm_inputs(params: Params, batch: dict, *, config: VLMConfig = SHAPES_VLM_CONFIG,
              feats: Float[Array, "b n hidden"] | None = None
              ) -> tuple[Float[Array, "b t hidden"], Int[Array, "3 b t"], Bool[Array, "b t"]]:
    """The language model's unpruned inputs: (embeddings with the image spliced in,
    position ids, mask); `feats` are the batch's `image_features` when already computed."""
    if feats is None:
        feats = image_features(params, jnp.asarray(batch["images"]), config=config)
    tokens = jnp.asarray(batch["tokens"])
    embeds = splice_images(params, tokens, feats.reshape(-1, feats.shape[-1]), config=config)
    return embeds, jnp.asarray(batch["positions"]), jnp.asarray(batch["mask"])


def _tag_loss(tagger, feats, batch):
    """Cross-entropy of a linear read-out of each merged visual token's colour and shape."""
    ncol = len(shapes_vqa.COLORS) + 1
    logits = feats @ tagger["kernel"] + tagger["bias"][None, None]
    nll = 0.0
    for part, labels in ((logits[..., :ncol], batch["cell_color"]),
                         (logits[..., ncol:], batch["cell_shape"])):
        logp = jax.nn.log_softmax(part, axis=-1)
        nll = nll - jnp.mean(jnp.take_along_axis(logp, labels[..., None], axis=-1))
    return nll


def _loss(trainable, batch, config, tag_weight):
    params, tagger = trainable
    feats = image_features(params, batch["images"], config=config)
    embeds, positions, mask = lm_inputs(params, batch, config=config, feats=feats)
    logits, _ = forward(params["lm"], batch["tokens"], config=config.text, positions=positions,
                        mask=mask, embeds=embeds)
    rows = jnp.arange(logits.shape[0])[:, None]
    # Every answer, then <eos> after the last one.
    at = jnp.concatenate([batch["answer_at"], batch["answer_at"][:, -1:] + 1], axis=1)
    logp = jax.nn.log_softmax(logits[rows, at], axis=-1)
    targets = batch["tokens"][rows, at + 1]
    nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    correct = jnp.argmax(logits[rows, batch["answer_at"]], -1) == targets[:, :-1]
    loss = jnp.mean(nll)
    return (loss + tag_weight * _tag_loss(tagger, feats, batch),
            (loss, jnp.mean(correct.astype(jnp.float32))))


def _curve_array(curve: list, steps: int) -> np.ndarray:
    """The learning curve as a fixed-shape checkpoint array (NaN rows after the last)."""
    out = np.full((steps // 100 + 1, 3), np.nan)
    out[:len(curve)] = np.asarray(curve, np.float64).reshape(-1, 3)
    return out


def training_batch(step: int, batch_size: int, seed: int, split: str = "train",
                   questions: int = 4) -> dict:
    """The `step`-th training batch (deterministic; `shapes_vqa.training_batch` of scenes
    step * batch_size ...), with its position ids."""
    batch = shapes_vqa.training_batch(split, range(step * batch_size, (step + 1) * batch_size),
                                      seed, questions)
    batch["positions"] = positions_of(batch)
    return batch


def train_shapes_vlm(
    *,
    steps: int = 1200,
    batch_size: int = 32,
    questions: int = 8,
    learning_rate: float = 2e-3,
    tag_weight: float = 1.0,
    seed: int = 0,
    config: VLMConfig = SHAPES_VLM_CONFIG,
    path: str | os.PathLike | None = "zoo",
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    progress: bool = True,
) -> tuple[Params, dict]:
    """Trains the VLM from scratch with optax (AdamW, warm-up then cosine decay).

    The loss is the answers' cross-entropy plus `tag_weight` times an auxiliary one: a linear
    read-out of every merged visual token must give its cell's colour and shape (or empty),
    standing in for the vision encoder's pre-training; the read-out is dropped afterwards.

    Args:
      steps, batch_size, learning_rate, seed: the run.
      questions: questions per training image (`shapes_vqa.training_batch`).
      tag_weight: weight of the auxiliary per-token read-out loss (0: answers only).
      config: the architecture.
      path: where to write the final weights and info ("zoo":
        `effjax.zoo.trained_dir("shapes_vlm")` in the user cache; None: do not write).
      checkpoint_dir: resumable training state, written every `checkpoint_every` steps; a
        run restarted with the same directory continues from its last checkpoint.
      checkpoint_every: steps between checkpoints.
      progress: progress bar.

    Returns:
      (params, info) with info = {"steps", "seconds", "curve": [(step, loss, train acc)]}.
    """
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(1, steps // 30),
                                                  steps, learning_rate * 0.05)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                            optax.adamw(schedule, weight_decay=0.01))

    @jax.jit
    def step_fn(params, opt_state, batch):
        (_, (loss, acc)), grads = jax.value_and_grad(
            functools.partial(_loss, config=config, tag_weight=tag_weight),
            has_aux=True)(params, batch)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes int step counts
            updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, acc

    k_vlm, k_tag = jax.random.split(jax.random.PRNGKey(seed))
    width = config.vision.out_hidden_size
    classes = len(shapes_vqa.COLORS) + len(shapes_vqa.SHAPES) + 2
    tagger = {"kernel": jax.random.normal(k_tag, (width, classes)) / np.sqrt(width),
              "bias": jnp.zeros(classes)}
    params = (init_vlm_params(config, k_vlm), tagger)
    state = {"params": params, "opt_state": optimizer.init(params), "step": 0, "curve": []}
    ckpt = None if checkpoint_dir is None else pathlib.Path(checkpoint_dir) / "state"
    if ckpt is not None and checkpoint.is_complete(ckpt):
        saved = checkpoint.restore(ckpt, {**state, "curve": _curve_array([], steps)})
        rows = np.asarray(saved["curve"])
        state = {**saved, "step": int(saved["step"]),
                 "curve": rows[~np.isnan(rows[:, 0])].tolist()}
    t0, window = time.perf_counter(), []
    start = state["step"]
    params, opt_state, curve = state["params"], state["opt_state"], state["curve"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the next batch renders meanwhile
        upcoming = pool.submit(training_batch, start, batch_size, seed, "train", questions)
        bar = tqdm(range(start, steps), desc="shapes-vlm", disable=not progress,
                   initial=start, total=steps)
        for i in bar:
            batch = upcoming.result()
            if i + 1 < steps:
                upcoming = pool.submit(training_batch, i + 1, batch_size, seed, "train",
                                           questions)
            params, opt_state, loss, acc = step_fn(params, opt_state,
                                                   jax.tree.map(jnp.asarray, batch))
            window.append((loss, acc))
            if (i + 1) % 100 == 0 or i + 1 == steps:
                mean = np.mean(np.asarray(jax.device_get(window)), axis=0)
                curve.append([i + 1, float(mean[0]), float(mean[1])])
                window = []
                bar.set_postfix(loss=f"{mean[0]:.3f}", acc=f"{mean[1]:.3f}")
            if ckpt is not None and ((i + 1) % checkpoint_every == 0 or i + 1 == steps):
                checkpoint.save(ckpt, {"params": params, "opt_state": opt_state, "step": i + 1,
                                       "curve": _curve_array(curve, steps)},
                                overwrite=True)
    params = params[0]
    info = {"steps": steps, "batch_size": batch_size, "questions": questions,
            "learning_rate": learning_rate, "tag_weight": tag_weight,
            "seed": seed, "seconds_this_run": time.perf_counter() - t0, "resumed_at": start,
            "curve": curve}
    if path is not None:
        save_weights(params, info, zoo.trained_dir("shapes_vlm") if path == "zoo" else path)
    return params, info


def load_shapes_vlm(path: str | os.PathLike | None = None, *,
                    config: VLMConfig = SHAPES_VLM_CONFIG) -> VLM:
    """The shapes VLM.

    Args:
      path: its folder; default `effjax.zoo.weights_dir("shapes_vlm")` (a retrained copy in
        the user cache, else the shipped one).
      config: its architecture.

    Returns:
      A `VLM` (no tokenizer: `shapes_vqa.encode` makes its ids) with extras {"info": its
      info.json}.

    Raises:
      ValueError: no weights there, or weights of other shapes.
    """
    folder = pathlib.Path(zoo.weights_dir("shapes_vlm") if path is None else path)
    like = jax.eval_shape(lambda: init_vlm_params(config, jax.random.PRNGKey(0)))
    params, info = load_weights(folder, like, hint="train it with effjax.pruning."
                                "train_shapes_vlm() (about 18 minutes on 2 CPU cores)")
    return VLM(config=config, params=params, tokenizer=None, source=str(folder),
               extras={"info": info})

"""The Qwen2.5-VL-compatible VLM against transformers' PyTorch forward on tiny random
checkpoints written offline."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from effjax.decoding import vlm_generate
from effjax.models import (
    VisionConfig,
    VLMConfig,
    encode_images,
    image_token_count,
    init_vlm_params,
    load_qwen2_5_vl,
    patchify,
    qwen2_5_vl_name_to_path,
    rope_index,
    splice_images,
    vision_geometry,
    vlm_forward,
    vlm_param_shapes,
)
from tests.models.hf_tiny import VL_END, VL_IMAGE, VL_START, write_tiny_vl

GRIDS = [(1, 8, 12), (1, 6, 10), (1, 6, 10)]  # 4x6 merged tokens in 2x3 windows; 3x5, ragged


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_vl")
    model = write_tiny_vl(path)
    vlm = load_qwen2_5_vl(path)
    params, config = vlm.params, vlm.config
    return path, model, params, config


def _prompts(config):
    n = [image_token_count(g, config.vision) for g in GRIDS]
    img = lambda k: [VL_START] + [VL_IMAGE] * n[k] + [VL_END]
    rows = [[5, 6, *img(0), 7, 8, *img(1), 9], [11, *img(2), 12, 13, 14]]
    width = max(map(len, rows))
    tokens = np.array([[0] * (width - len(r)) + r for r in rows], np.int64)
    mask = np.array([[False] * (width - len(r)) + [True] * len(r) for r in rows])
    return tokens, mask


def _patches(config, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(g[0] * g[1] * g[2], config.vision.patch_dim)).astype(np.float32)
            for g in GRIDS]


def _ours(params, config, tokens, mask, patches):
    feats = jnp.concatenate([encode_images(params["vision"], jnp.asarray(p)[None],
                                           config=config.vision, grid=g)[0]
                             for p, g in zip(patches, GRIDS, strict=True)])
    positions, deltas = rope_index(tokens, GRIDS, config, mask)
    logits, _ = vlm_forward(params, jnp.asarray(tokens), feats, jnp.asarray(positions),
                            config=config, mask=jnp.asarray(mask))
    return np.asarray(logits), positions, deltas, feats


def _torch_inputs(tokens, mask, patches):
    ids = torch.tensor(tokens)
    return dict(input_ids=ids, attention_mask=torch.tensor(mask.astype(np.int64)),
                pixel_values=torch.tensor(np.concatenate(patches)),
                image_grid_thw=torch.tensor(GRIDS), mm_token_type_ids=(ids == VL_IMAGE).long())


def test_logits_match_transformers(tiny):
    _, model, params, config = tiny
    tokens, mask = _prompts(config)
    patches = _patches(config)
    ours, positions, deltas, feats = _ours(params, config, tokens, mask, patches)
    with torch.no_grad():
        ref = model(**_torch_inputs(tokens, mask, patches)).logits.float().numpy()
        ref_pos, ref_deltas = model.model.get_rope_index(
            torch.tensor(tokens), image_grid_thw=torch.tensor(GRIDS),
            attention_mask=torch.tensor(mask.astype(np.int64)),
            mm_token_type_ids=torch.tensor((tokens == VL_IMAGE).astype(np.int64)))
        ref_feats = torch.cat(model.model.get_image_features(
            torch.tensor(np.concatenate(patches)), torch.tensor(GRIDS)).pooler_output).numpy()
    np.testing.assert_array_equal(positions[:, mask], ref_pos.numpy()[:, mask])
    np.testing.assert_array_equal(deltas, ref_deltas.numpy().ravel())
    assert np.abs(np.asarray(feats) - ref_feats).max() <= 1e-4
    assert np.abs(ours[mask] - ref[mask]).max() <= 1e-4


def test_generation_matches_transformers(tiny):
    _, model, params, config = tiny
    tokens, mask = _prompts(config)
    patches = _patches(config, seed=1)
    _, positions, _, feats = _ours(params, config, tokens, mask, patches)
    ours = vlm_generate(params, tokens, feats, positions, mask=mask, max_new_tokens=6,
                        eos_id=-1, config=config)
    with torch.no_grad():
        ref = model.generate(**_torch_inputs(tokens, mask, patches), max_new_tokens=6,
                             do_sample=False, eos_token_id=None, pad_token_id=0)
    assert ours == ref[:, tokens.shape[1]:].tolist()


def test_both_tensor_name_layouts_load(tiny, tmp_path):
    path, _, params, _ = tiny
    tensors = load_file(str(path / "model.safetensors"))
    renamed = {(k.replace("visual.", "model.visual.", 1) if k.startswith("visual.")
                else k.replace("model.", "model.language_model.", 1)): v
               for k, v in tensors.items()}
    save_file(renamed, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    again = load_qwen2_5_vl(tmp_path).params
    jax.tree.map(np.testing.assert_array_equal, again, params)
    assert qwen2_5_vl_name_to_path("visual.merger.mlp.2.bias") == ("vision", "merger", "fc2",
                                                                    "bias")
    assert qwen2_5_vl_name_to_path("visual.blocks.3.norm2.weight") == (
        "vision", "blocks", 3, "norm2", "weight")


def test_patchify_matches_hf_image_processor():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    vision = VisionConfig(depth=1, hidden_size=16, intermediate_size=16, num_heads=1,
                          out_hidden_size=8, patch_size=4, window_size=16)
    image = np.random.default_rng(0).normal(size=(16, 24, 3)).astype(np.float32)
    ours, grid = patchify(jnp.asarray(image)[None], vision)
    ref, gh, gw = Qwen2VLImageProcessorPil().patchify(
        image.transpose(2, 0, 1), patch_size=4, merge_size=2, temporal_patch_size=2)
    assert grid == (1, gh, gw) == (1, 4, 6)
    np.testing.assert_array_equal(np.asarray(ours[0]), np.asarray(ref).reshape(ours.shape[1:]))


def test_geometry_windows_and_rows():
    vision = VisionConfig(depth=1, hidden_size=16, intermediate_size=16, num_heads=1,
                          out_hidden_size=8, patch_size=4, window_size=16)
    positions, window, frame = vision_geometry((2, 6, 10), vision)
    assert positions.shape == (120, 8) and np.all(frame == np.repeat([0, 1], 60))
    # A merge block's four patches are consecutive and share a window.
    assert np.all(window.reshape(-1, 4) == window[::4, None])
    rows, cols = positions[:60, 0], positions[:60, 4]  # head_dim 16: 4 row, 4 column freqs
    assert np.all(positions[:, :4] == positions[:, :1])
    assert np.all(positions[:, 4:] == positions[:, 4:5])
    # Windows are 2x2 merged tokens (4x4 patches): 2 x 3 windows per frame, ragged at the edge.
    assert len(np.unique(window[:60])) == 6
    expect = (rows // 4) * 3 + cols // 4
    np.testing.assert_array_equal(window[:60], expect)
    np.testing.assert_array_equal(window[60:], expect + 6)


@pytest.fixture(scope="module")
def small():
    config = _small_config()
    return config, init_vlm_params(config, jax.random.PRNGKey(1))


def test_splice_images_in_placeholder_order(small):
    config, params = small
    tokens = jnp.array([[3, VL_IMAGE, VL_IMAGE, 4], [VL_IMAGE, 5, 6, VL_IMAGE]])
    feats = jnp.arange(4 * 64, dtype=jnp.float32).reshape(4, 64)
    embeds = splice_images(params, tokens, feats, config=config)
    table = params["lm"]["embed"]["embedding"]
    np.testing.assert_array_equal(embeds[0, 1], feats[0])
    np.testing.assert_array_equal(embeds[1, 3], feats[3])
    np.testing.assert_array_equal(embeds[1, 1], table[5])
    np.testing.assert_array_equal(splice_images(params, tokens[:, :1] * 0 + 3,
                                                jnp.zeros((0, 64)), config=config)[0, 0], table[3])


def _small_config():
    from effjax.models import LMConfig

    text = LMConfig(family="qwen2", vocab_size=128, hidden_size=64, intermediate_size=96,
                    num_layers=1, num_heads=4, num_kv_heads=2, head_dim=16, qkv_bias=True,
                    mrope_section=(2, 3, 3))
    vision = VisionConfig(depth=1, hidden_size=32, intermediate_size=48, num_heads=2,
                          out_hidden_size=64, patch_size=4, window_size=16,
                          fullatt_block_indexes=(0,))
    return VLMConfig(text=text, vision=vision, image_token_id=VL_IMAGE,
                     vision_start_token_id=VL_START, vision_end_token_id=VL_END)


def test_init_matches_shapes(small):
    config, params = small
    shapes = jax.tree.map(lambda a: tuple(a.shape), params)
    assert shapes == vlm_param_shapes(config)
    assert shapes["vision"]["patch_embed"]["kernel"] == (96, 32)


def test_bad_input_is_named(tiny):
    _, _, params, config = tiny
    with pytest.raises(ValueError, match="multiples of patch_size"):
        patchify(jnp.zeros((1, 12, 16, 3)), config.vision)
    with pytest.raises(ValueError, match="images must be"):
        patchify(jnp.zeros((12, 16, 3)), config.vision)
    with pytest.raises(ValueError, match="multiples of spatial_merge_size"):
        encode_images(params["vision"], jnp.zeros((1, 15, 96)), config=config.vision,
                      grid=(1, 3, 5))
    with pytest.raises(ValueError, match="patches must be"):
        encode_images(params["vision"], jnp.zeros((1, 10, 96)), config=config.vision,
                      grid=(1, 4, 4))
    tokens = np.array([[5, VL_START, *[VL_IMAGE] * 5, VL_END]])
    with pytest.raises(ValueError, match="run of 5 image placeholders"):
        rope_index(tokens, [(1, 4, 4)], config)
    with pytest.raises(ValueError, match="more image placeholder runs"):
        rope_index(tokens, [], config)
    with pytest.raises(ValueError, match="fewer image placeholder runs"):
        rope_index(np.array([[5, 6]]), [(1, 4, 4)], config)
    with pytest.raises(ValueError, match="mrope_section"):
        VLMConfig.from_hf({"architectures": ["Qwen2_5_VLForConditionalGeneration"],
                           "text_config": {}, "vision_config": {}})
    with pytest.raises(ValueError, match="window_size must be a multiple"):
        VisionConfig(depth=1, hidden_size=16, intermediate_size=16, num_heads=1,
                     out_hidden_size=8, patch_size=4, window_size=12)
    with pytest.raises(ValueError, match="out_hidden_size must equal"):
        VLMConfig(text=config.text, vision=VisionConfig(
            depth=1, hidden_size=16, intermediate_size=16, num_heads=1, out_hidden_size=8,
            patch_size=4, window_size=16), image_token_id=1, vision_start_token_id=2,
            vision_end_token_id=3)


def test_text_only_positions_are_plain_rope(tiny):
    _, _, params, config = tiny
    tokens = np.array([[5, 6, 7, 8, 9]])
    positions, deltas = rope_index(tokens, [], config)
    assert deltas.tolist() == [0] and np.all(positions == np.arange(5))
    from effjax.models import forward

    ours, _ = vlm_forward(params, jnp.asarray(tokens), jnp.zeros((0, 64)),
                          jnp.asarray(positions), config=config)
    plain, _ = forward(params["lm"], jnp.asarray(tokens), config=config.text)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(plain), atol=1e-6)
    assert json.loads((tiny[0] / "config.json").read_text())["text_config"]["hidden_size"] == 64

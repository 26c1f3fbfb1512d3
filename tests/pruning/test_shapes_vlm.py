"""The shapes VLM: its inputs, its training loop (resumable) and the shipped weights."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.data import shapes_vqa
from effjax.models import VisionConfig
from effjax.pruning import hawk, shapes_vlm

SMALL = dataclasses.replace(
    shapes_vlm.SHAPES_VLM_CONFIG,
    text=dataclasses.replace(shapes_vlm.SHAPES_VLM_CONFIG.text, hidden_size=32,
                             intermediate_size=32, num_layers=1, head_dim=8,
                             mrope_section=(2, 1, 1)),
    vision=VisionConfig(depth=2, hidden_size=16, intermediate_size=16, num_heads=2,
                        out_hidden_size=32, patch_size=4, temporal_patch_size=2,
                        spatial_merge_size=2, window_size=32, fullatt_block_indexes=(1,)))


def test_training_batch_positions_follow_the_grid():
    b = shapes_vlm.training_batch(3, 4, seed=0)
    again = shapes_vlm.training_batch(3, 4, seed=0)
    np.testing.assert_array_equal(b["tokens"], again["tokens"])
    pos = b["positions"]
    assert pos.shape == (3, 4, b["tokens"].shape[1])
    img = np.arange(2, 2 + shapes_vqa.IMAGE_TOKENS)
    for r in range(4):
        t, h, w = (pos[a, r, img] - pos[a, r, 2] for a in range(3))
        assert (t == 0).all()
        np.testing.assert_array_equal(h, np.arange(64) // 8)
        np.testing.assert_array_equal(w, np.arange(64) % 8)
        after = pos[:, r, 2 + shapes_vqa.IMAGE_TOKENS]  # <vision_end>: one past the image
        assert (after == pos[:, r, 2].max() + 8).all()


def test_training_resumes_bit_identically(tmp_path, monkeypatch):
    kw = dict(steps=4, batch_size=2, config=SMALL, checkpoint_every=2, progress=False)
    ref, info = shapes_vlm.train_shapes_vlm(path=tmp_path / "ref", **kw)
    assert info["resumed_at"] == 0 and len(info["curve"]) == 1
    real = shapes_vlm.training_batch

    def dies_at_3(step, *a, **k):
        if step == 3:
            raise KeyboardInterrupt("killed")
        return real(step, *a, **k)

    monkeypatch.setattr(shapes_vlm, "training_batch", dies_at_3)
    with pytest.raises(KeyboardInterrupt):
        shapes_vlm.train_shapes_vlm(path=None, checkpoint_dir=tmp_path / "ck", **kw)
    monkeypatch.setattr(shapes_vlm, "training_batch", real)
    back, info2 = shapes_vlm.train_shapes_vlm(path=tmp_path / "out",
                                              checkpoint_dir=tmp_path / "ck", **kw)
    assert info2["resumed_at"] == 2
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(ref), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    loaded = shapes_vlm.load_shapes_vlm(tmp_path / "out", config=SMALL)
    assert loaded.config == SMALL and loaded.extras["info"]["steps"] == 4
    with pytest.raises(ValueError, match="no trained weights.*train_shapes_vlm"):
        shapes_vlm.load_shapes_vlm(tmp_path / "none", config=SMALL)


def test_shipped_model_answers_test_questions():
    """The shipped weights (trained by train_shapes_vlm) answer held-out questions better
    than the best image-blind guess (each question kind's most common training answer)."""
    vlm = shapes_vlm.load_shapes_vlm()
    params, config, info = vlm.params, vlm.config, vlm.extras["info"]
    b = shapes_vqa.batch([shapes_vqa.example("test", i) for i in range(256)])
    b["positions"] = shapes_vlm.positions_of(b)
    embeds, positions, mask = shapes_vlm.lm_inputs(params, b)
    visual, query = hawk.token_roles(b["tokens"], b["mask"], shapes_vqa.IMAGE_ID)
    out = hawk.prune(hawk.PruneConfig(method="none"), params["lm"], jnp.asarray(b["tokens"]),
                     embeds, positions, mask, jnp.asarray(visual), jnp.asarray(query),
                     jnp.asarray(b["last"]), config=config.text, num_visual=64)
    pred = np.argmax(np.asarray(hawk.answer_logits(params["lm"], out, config=config.text)), -1)
    guess = shapes_vqa.blind_answers()
    tests = [shapes_vqa.example("test", i) for i in range(256)]
    blind = np.mean([guess[e.kind] == e.answer for e in tests])
    acc = np.mean(pred == b["answer"])
    assert acc >= 0.8 and acc >= blind + 0.3, (acc, blind)  # measured: 0.855 vs 0.395
    assert info["steps"] == 1200 and info["seconds_this_run"] < 20 * 60

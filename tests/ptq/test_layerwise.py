"""The layer-wise trainers' shared pieces: the clipping ratio, the learned groups, the
calibration context and the type-balanced loss weights."""

import jax
import jax.numpy as jnp
import numpy as np

import effjax.formats as F
from effjax.ptq.layerwise import (
    CLIP_INIT,
    LayerContext,
    clip_ratio,
    clipped_kernel,
    learned_groups,
    token_weights,
    weight_format,
)
from effjax.quant import Recipe, Rule
from tests.transforms.helpers import tiny


def test_clip_ratio_starts_at_exactly_one_and_learns_below():
    assert float(clip_ratio(jnp.float32(CLIP_INIT))) == 1.0
    assert float(clip_ratio(jnp.float32(CLIP_INIT + 3))) == 1.0  # never above 1
    low = clip_ratio(jnp.float32(1.0))
    assert float(low) == np.float32(jax.nn.sigmoid(1.0) / jax.nn.sigmoid(CLIP_INIT))
    assert float(jax.grad(clip_ratio)(jnp.float32(1.0))) > 0


def test_learned_groups_need_every_projection_quantized():
    _, params = tiny()
    r = Recipe(rules=(Rule(pattern=r"q_proj|k_proj|o_proj|mlp/", weight="int4"),))
    groups = learned_groups(params["layers"][0], r, 0)
    assert [g[0] for g in groups] == ["o", "gate_up", "down"]  # v_proj is float: no "qkv"
    assert weight_format(r, 0, "attn", "v_proj") is None
    assert weight_format(r, 1, "mlp", "up_proj").name == "int4"


def test_clipped_kernel_fake_and_real_agree():
    w = jax.random.normal(jax.random.PRNGKey(0), (64, 8))
    ratio = jnp.full((64, 8), 0.8)
    fake = clipped_kernel(w, ratio, "mxfp4", fake=True)
    real = clipped_kernel(w, ratio, "mxfp4", fake=False)
    assert isinstance(real, F.QArray) and real.axis == 0
    np.testing.assert_array_equal(F.dequantize(real), fake)
    assert float(jnp.max(jnp.abs(fake))) < float(jnp.max(jnp.abs(w)))  # clipped
    g = jax.grad(lambda r: jnp.sum(clipped_kernel(w, r, "mxfp4", fake=True)))(ratio)
    assert float(jnp.sum(jnp.abs(g))) > 0  # the ratio learns


def test_token_weights_give_each_present_type_an_equal_share():
    types = np.array([[0, 0, 0, 1], [0, 0, 1, 0]])
    w = np.asarray(token_weights(types, types.shape))
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(w[types == 0].sum(), 0.5, rtol=1e-6)
    np.testing.assert_allclose(w[types == 1], 0.25, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(token_weights(None, (2, 4))), 1 / 8)


def test_layer_context_rows_slice_every_field():
    ctx = LayerContext(positions=jnp.arange(3 * 4 * 2).reshape(3, 4, 2),
                       attn_mask=jnp.ones((4, 2, 2), bool), token_types=jnp.arange(8).reshape(4, 2))
    sub = ctx.rows(np.array([3, 1]))
    assert sub.embeds is None and sub.positions.shape == (3, 2, 2)
    np.testing.assert_array_equal(sub.positions[:, 0], ctx.positions[:, 3])
    np.testing.assert_array_equal(sub.token_types, [[6, 7], [2, 3]])
    assert sub.attn_mask.shape == (2, 2, 2)
    flat = LayerContext(positions=jnp.arange(8).reshape(4, 2)).rows(np.array([2]))
    np.testing.assert_array_equal(flat.positions, [[4, 5]])

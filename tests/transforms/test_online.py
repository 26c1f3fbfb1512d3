"""Online transforms against dense float64 references; block-diagonal transforms keep each
block's energy in its block, a global rotation does not."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import effjax.transforms as T

RNG = np.random.RandomState(0)


def block_diag(*blocks):
    out = np.zeros((sum(b.shape[0] for b in blocks),) * 2)
    i = 0
    for b in blocks:
        out[i:i + len(b), i:i + len(b)] = b
        i += len(b)
    return out


def test_block_and_gpk_apply_equal_the_dense_block_diagonal_matrix():
    x = RNG.randn(5, 96).astype(np.float32)
    blocks = RNG.randn(3, 32, 32).astype(np.float32)
    dense = block_diag(*blocks.astype(np.float64))
    np.testing.assert_allclose(T.block_apply(x, blocks), x.astype(np.float64) @ dense,
                               rtol=1e-5, atol=1e-5)
    g, priv = RNG.randn(4, 4).astype(np.float32), RNG.randn(3, 8, 8).astype(np.float32)
    dense = block_diag(*[np.kron(g, p) for p in priv.astype(np.float64)])
    np.testing.assert_allclose(T.gpk_apply(x, g, priv), x.astype(np.float64) @ dense,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(T.GPK(g, priv).apply(x), T.gpk_apply(x, g, priv))
    np.testing.assert_array_equal(T.BlockDiag(blocks).apply(x), T.block_apply(x, blocks))
    ratio = np.array([1.0, 0.5, 0.25], np.float32)
    np.testing.assert_array_equal(T.GPK(g, priv, clip=ratio).apply(x),
                                  T.clip_blocks(T.gpk_apply(x, g, priv), ratio))
    with pytest.raises(ValueError, match="3 blocks of 32 need 96 features"):
        T.block_apply(x[:, :64], blocks)
    with pytest.raises(ValueError, match="3 blocks of 4 x 8 need 96 features"):
        T.gpk_apply(x[:, :64], g, priv)


def test_clip_blocks_clips_each_block_at_its_ratio_and_passes_gradient_to_the_ratio():
    x = jnp.asarray([[1.0, -4.0, 1.5, 0.5, 8.0, -1.0, 3.0, 2.0]])
    ratio = jnp.asarray([0.5, 0.75])
    np.testing.assert_array_equal(T.clip_blocks(x, ratio),
                                  [[1.0, -2.0, 1.5, 0.5, 6.0, -1.0, 3.0, 2.0]])
    grad = jax.grad(lambda r: jnp.sum(T.clip_blocks(x, r)))(ratio)
    np.testing.assert_allclose(grad, [-4.0, 8.0])  # d/dr of clip(v, -r a, r a) at the max


def test_block_transforms_keep_an_outlier_in_its_mx_block_and_a_rotation_spreads_it():
    x = np.zeros((1, 128), np.float32)
    x[0, 70] = 100.0  # an outlier in MX block 2 (features 64..95)
    x[0, ::7] += 0.1
    blocks = np.stack([np.asarray(T.random_orthogonal(32, k)) for k in
                       jax.random.split(jax.random.PRNGKey(0), 4)])
    energy = lambda y: np.sum(np.asarray(y, np.float64).reshape(4, 32) ** 2, axis=1)  # noqa: E731
    before, after = energy(x), energy(T.block_apply(x, blocks))
    np.testing.assert_allclose(after, before, rtol=1e-5)  # every block keeps its energy
    priv = np.stack([np.asarray(T.random_orthogonal(8, k)) for k in
                     jax.random.split(jax.random.PRNGKey(3), 4)])
    gpk = T.gpk_apply(x, np.asarray(T.random_orthogonal(4, jax.random.PRNGKey(1))), priv)
    np.testing.assert_allclose(energy(gpk), before, rtol=1e-5)
    rotated = energy(x @ np.asarray(T.random_hadamard(128, jax.random.PRNGKey(2))))
    assert rotated[2] < 0.3 * before[2] and rotated.min() > 0.2 * before[2]  # spread out


def test_per_type_apply_gives_each_token_its_types_matrix():
    x = RNG.randn(2, 5, 6).astype(np.float32)
    types = RNG.randint(0, 3, (2, 5)).astype(np.int32)
    mats = RNG.randn(3, 6, 6).astype(np.float32)
    want = np.einsum("btd,btde->bte", x.astype(np.float64), mats[types].astype(np.float64))
    got = T.per_type_apply(jnp.asarray(x), jnp.asarray(types), jnp.asarray(mats))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="types of x's leading shape"):
        T.per_type_apply(jnp.asarray(x), jnp.asarray(types[:, :4]), jnp.asarray(mats))
    with pytest.raises(ValueError, match="needs the tokens' types"):
        T.PerType(jnp.asarray(mats)).apply(jnp.asarray(x))
    np.testing.assert_array_equal(T.PerType(jnp.asarray(mats)).apply(jnp.asarray(x),
                                                                      jnp.asarray(types)), got)


def test_find_lists_every_stored_transform():
    stored = T.Kron(jnp.eye(2), jnp.eye(3))
    params = {"layers": {0: {"attn": {"kv_rotation": jnp.eye(4),
                                      "q_proj": {"kernel": jnp.ones((6, 6)),
                                                 "input_transform": stored}},
                             "mlp": {"down_proj": {"kernel": jnp.ones((6, 6))}}}}}
    found = T.online.find(params)
    assert list(found) == ["layers/0/attn/kv_rotation", "layers/0/attn/q_proj/input_transform"]
    assert found["layers/0/attn/q_proj/input_transform"] is stored
    assert T.online.find({"embed": {"embedding": jnp.ones((3, 2))}}) == {}

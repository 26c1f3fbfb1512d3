"""HAWK and the pruning baselines on a tiny random Qwen2.5-VL written offline by
transformers, against float64 NumPy computations of their formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.models import (
    encode_images,
    forward,
    image_token_count,
    load_qwen2_5_vl,
    rope_index,
    splice_images,
)
from effjax.pruning import hawk
from tests.models.hf_tiny import VL_END, VL_IMAGE, VL_START, write_tiny_vl

GRID = (1, 8, 12)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = tmp_path_factory.mktemp("vl")
    write_tiny_vl(path)
    vlm = load_qwen2_5_vl(path)
    params, config = vlm.params, vlm.config
    n = image_token_count(GRID, config.vision)
    rows = [[5, VL_START, *[VL_IMAGE] * n, VL_END, 7, 8, 9],
            [6, 6, VL_START, *[VL_IMAGE] * n, VL_END, 10, 11]]
    width = max(map(len, rows))
    tokens = np.array([r + [0] * (width - len(r)) for r in rows])  # right-padded
    mask = np.array([[True] * len(r) + [False] * (width - len(r)) for r in rows])
    rng = np.random.default_rng(0)
    patches = jnp.asarray(rng.normal(size=(2, 96, 96)).astype(np.float32))
    feats = encode_images(params["vision"], patches, config=config.vision, grid=GRID)
    embeds = splice_images(params, jnp.asarray(tokens), feats.reshape(-1, 64), config=config)
    positions = jnp.asarray(rope_index(tokens, [GRID, GRID], config, mask)[0])
    visual, query = hawk.token_roles(tokens, mask, VL_IMAGE)
    last = jnp.asarray(mask.sum(1) - 1)
    return dict(params=params, config=config, tokens=tokens, mask=jnp.asarray(mask),
                embeds=embeds, positions=positions, visual=jnp.asarray(visual),
                query=jnp.asarray(query), last=last, n=n, patches=patches)


def _rms(x, w, eps):
    return w * x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps)


def test_hawk_scores_equal_float64_formula(setup):
    s, c = setup, setup["config"].text
    w = np.array([0.4, -0.1, 0.3, 0.2])
    ours = np.asarray(hawk.hawk_scores(s["params"]["lm"], s["embeds"], s["visual"], s["query"],
                                       jnp.asarray(w, jnp.float32), config=c))
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), s["params"]["lm"]["layers"][0])
    x = _rms(np.asarray(s["embeds"], np.float64), p["input_norm"]["weight"], c.rms_norm_eps)
    for b in range(2):
        q = (x[b] @ p["attn"]["q_proj"]["kernel"] + p["attn"]["q_proj"]["bias"]).reshape(
            -1, c.num_heads, c.head_dim)
        k = (x[b] @ p["attn"]["k_proj"]["kernel"] + p["attn"]["k_proj"]["bias"]).reshape(
            -1, c.num_kv_heads, c.head_dim)
        vis = np.flatnonzero(np.asarray(s["visual"][b]))
        qi = np.flatnonzero(np.asarray(s["query"][b]))
        total = np.zeros(len(vis))
        for h in range(c.num_heads):
            kh = k[:, h // c.num_groups]
            sh = np.array([np.mean([q[i, h] @ kh[j] / np.sqrt(c.head_dim) for i in qi])
                           for j in vis])
            total += w[h] * sh / np.linalg.norm(sh)
        np.testing.assert_allclose(ours[b, vis], total, rtol=1e-4, atol=1e-5)
        assert np.all(np.isneginf(np.delete(ours[b], vis)))


def test_keep_all_is_the_unpruned_model(setup):
    s = setup
    c = s["config"].text
    ref, _ = forward(s["params"]["lm"], jnp.asarray(s["tokens"]), config=c,
                          positions=s["positions"], mask=s["mask"], embeds=s["embeds"])
    ref = np.asarray(ref)[np.arange(2), np.asarray(s["last"])]
    for method in hawk.METHODS:
        cfg = hawk.PruneConfig(method=method, keep_ratio=1.0, fastv_layer=0)
        out = hawk.prune(cfg, s["params"]["lm"], s["tokens"], s["embeds"], s["positions"],
                         s["mask"],
                         s["visual"], s["query"], s["last"], config=c, num_visual=s["n"],
                         vision_scores=jnp.ones((2, s["n"])))
        got = np.asarray(hawk.answer_logits(s["params"]["lm"], out, config=c))
        np.testing.assert_allclose(got, ref, atol=2e-5, err_msg=method)
    # Left-padded (the generation layout), compaction with everything kept is the identity.
    left = hawk.compact(s["embeds"], s["tokens"], s["positions"], s["mask"], s["mask"],
                        s["mask"].shape[1])
    again = hawk.compact(*left, left[3], left[3].shape[1])
    for a, b in zip(left, again, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_pruned_tokens_keep_their_positions(setup):
    s = setup
    c = s["config"].text
    out = hawk.prune(hawk.PruneConfig(method="hawk", keep_ratio=0.25), s["params"]["lm"],
                     s["tokens"], s["embeds"], s["positions"], s["mask"], s["visual"], s["query"],
                     s["last"],
                     config=c, num_visual=s["n"])
    k = hawk.keep_count(s["n"], 0.25)
    assert out.embeds.shape[1] == s["mask"].shape[1] - (s["n"] - k) and k == 6
    for b in range(2):
        kept = np.flatnonzero(np.asarray(out.keep[b]))
        assert (np.asarray(out.keep[b]) & np.asarray(s["visual"][b])).sum() == k
        m = np.asarray(out.mask[b])
        np.testing.assert_array_equal(np.asarray(out.positions)[:, b, m],
                                      np.asarray(s["positions"])[:, b, kept])
        np.testing.assert_array_equal(np.asarray(out.embeds)[b, m],
                                      np.asarray(s["embeds"])[b, kept])
        assert m[-1] and not m[: (~m).sum()].any()  # left padding


def test_fastv_scores_are_last_token_attention(setup):
    s, c = setup, setup["config"].text
    scores = np.asarray(hawk.fastv_scores(s["params"]["lm"], s["embeds"], s["positions"],
                                          s["mask"], s["visual"], s["last"], config=c, layer=0))
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), s["params"]["lm"]["layers"][0]["attn"])
    norm_w = np.asarray(s["params"]["lm"]["layers"][0]["input_norm"]["weight"], np.float64)
    x = _rms(np.asarray(s["embeds"], np.float64), norm_w, c.rms_norm_eps)
    inv = c.rope_inv_freq()
    axes = c.mrope_axes()
    pos = np.asarray(s["positions"], np.float64)

    def rope(v, b, i):
        ang = pos[axes, b, i] * inv
        v1, v2 = v[..., : c.head_dim // 2], v[..., c.head_dim // 2:]
        return np.concatenate([v1 * np.cos(ang) - v2 * np.sin(ang),
                               v2 * np.cos(ang) + v1 * np.sin(ang)], -1)

    for b in range(2):
        last = int(s["last"][b])
        q = (x[b, last] @ p["q_proj"]["kernel"] + p["q_proj"]["bias"]).reshape(c.num_heads, -1)
        k = (x[b] @ p["k_proj"]["kernel"] + p["k_proj"]["bias"]).reshape(-1, c.num_kv_heads,
                                                                        c.head_dim)
        q = rope(q, b, last)
        k = np.stack([rope(k[i], b, i) for i in range(k.shape[0])])
        probs = []
        for h in range(c.num_heads):
            logit = k[: last + 1, h // c.num_groups] @ q[h] / np.sqrt(c.head_dim)
            e = np.exp(logit - logit.max())
            probs.append(e / e.sum())
        want = np.mean(probs, 0)
        vis = np.flatnonzero(np.asarray(s["visual"][b]))
        np.testing.assert_allclose(scores[b, vis], want[vis], rtol=1e-4, atol=1e-7)


def test_fastv_mask_drops_tokens_after_layer_k():
    keep = jnp.array([[True, False, True, True]])
    visual = jnp.array([[False, True, True, False]])
    m = np.asarray(hawk.fastv_attn_mask(keep, visual, num_layers=3, layer=1))
    assert m.shape == (3, 1, 4, 4)
    assert m[0, 0, 3, 1] and not m[1, 0, 3, 1] and not m[2, 0, 3, 1] and m[2, 0, 3, 2]
    assert not m[0, 0, 0, 1]  # still causal


def test_visionzip_scores_are_received_attention(setup):
    s, v = setup, setup["config"].vision
    scores = np.asarray(hawk.visionzip_scores(s["params"]["vision"], s["patches"], config=v,
                                              grid=GRID))
    assert scores.shape == (2, s["n"])
    # The last block is full attention over one frame: every query's weights sum to one, so
    # the received attention, averaged over queries, sums to one over the image.
    np.testing.assert_allclose(scores.sum(1), 1.0, rtol=1e-5)
    assert np.all(scores > 0)


def test_dart_keeps_pivots_then_least_duplicated():
    e = np.zeros((1, 5, 3), np.float32)
    e[0, 0] = [10, 0, 0]     # the pivot (largest norm)
    e[0, 1] = [1, 0.01, 0]   # a duplicate of it
    e[0, 2] = [0, 1, 0]      # distinct
    e[0, 3] = [0.5, 0.5, 0]
    visual = jnp.array([[True, True, True, True, False]])
    s = np.asarray(hawk.dart_scores(jnp.asarray(e), visual, num_pivots=1))
    assert np.argmax(s[0]) == 0 and s[0, 2] > s[0, 3] > s[0, 1] and np.isneginf(s[0, 4])
    keep = np.asarray(hawk.keep_mask(jnp.asarray(s), visual, jnp.ones((1, 5), bool), 2))
    assert keep.tolist() == [[True, False, True, False, True]]


def test_random_and_keep_counts():
    visual = jnp.array([[False] + [True] * 10 + [False]] * 3)
    s = hawk.random_scores(jax.random.PRNGKey(0), visual)
    keep = np.asarray(hawk.keep_mask(s, visual, jnp.ones(visual.shape, bool), 3))
    assert (keep & np.asarray(visual)).sum(1).tolist() == [3, 3, 3] and keep[:, 0].all()
    assert [hawk.keep_count(64, r) for r in (0.1, 0.2, 0.5, 1.0)] == [7, 13, 32, 64]


def test_head_importance_ablates_each_head(setup):
    s, c = setup, setup["config"].text

    def accuracy(lm):  # depends on head 2's slice of o_proj only
        rows = lm["layers"][0]["attn"]["o_proj"]["kernel"][2 * c.head_dim:3 * c.head_dim]
        return float(jnp.abs(rows).sum() > 0)

    weights, drops = hawk.head_importance(accuracy, s["params"]["lm"], config=c)
    assert drops.tolist() == [0, 0, 1, 0] and weights.tolist() == [0, 0, 1, 0]
    uniform, _ = hawk.head_importance(lambda lm: 0.5, s["params"]["lm"], config=c)
    assert uniform.tolist() == [0.25] * 4


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="keep_ratio must be in"):
        hawk.PruneConfig(keep_ratio=0.0)
    with pytest.raises(ValueError, match="keep_ratio must be in"):
        hawk.keep_count(10, 1.5)
    with pytest.raises(ValueError, match="method must be one of"):
        hawk.PruneConfig(method="best")
    with pytest.raises(ValueError, match="no image tokens"):
        hawk.token_roles(np.array([[5, 6, 7]]), np.ones((1, 3), bool), VL_IMAGE)
    with pytest.raises(ValueError, match="no text after the image"):
        hawk.token_roles(np.array([[5, VL_IMAGE, VL_IMAGE, 0]]),
                         np.array([[True, True, True, False]]), VL_IMAGE)


def test_pruned_generation(setup):
    """vlm_generate on the pruned prompt: keep-all equals unpruned generation; pruned rows
    continue from the original largest position (their first token equals the prefill's)."""
    from effjax.decoding import vlm_generate

    s = setup
    c = s["config"]

    def generate(out):
        feats = out.embeds[out.tokens == VL_IMAGE]
        return vlm_generate(s["params"], out.tokens, feats, out.positions, max_new_tokens=4,
                            mask=out.mask, eos_id=-1, config=c)

    args = (s["params"]["lm"], s["tokens"], s["embeds"], s["positions"], s["mask"], s["visual"],
            s["query"], s["last"])
    full = hawk.prune(hawk.PruneConfig(method="hawk", keep_ratio=1.0), *args, config=c.text,
                      num_visual=s["n"])
    left = hawk.compact(s["embeds"], s["tokens"], s["positions"], s["mask"], s["mask"],
                        s["mask"].shape[1])
    unpruned = vlm_generate(s["params"], left[1], left[0][left[1] == VL_IMAGE], left[2],
                            max_new_tokens=4, mask=left[3], eos_id=-1, config=c)
    assert generate(full) == unpruned
    pruned = hawk.prune(hawk.PruneConfig(method="hawk", keep_ratio=0.3), *args, config=c.text,
                        num_visual=s["n"])
    first = np.argmax(np.asarray(hawk.answer_logits(s["params"]["lm"], pruned, config=c.text)),
                      -1)
    assert [g[0] for g in generate(pruned)] == first.tolist()


def test_scores_are_unchanged_by_function_preserving_transforms(setup):
    """QuaRot's rotation (norms fused, the residual stream times Q, every value head times R
    with the online query/key rotation after RoPE) and a Hadamard input transform before
    q/k/v keep the model's function, and so HAWK's and FastV's scores: the scorers read the
    queries and keys of the model's own attention, not a copy of its arithmetic."""
    from effjax.transforms import (
        add_input_transform,
        fuse_norms,
        hadamard_pair,
        random_orthogonal,
        rotate_residual,
        rotate_values,
    )

    s, c = setup, setup["config"].text
    lm = s["params"]["lm"]
    fused, c2 = fuse_norms(lm, config=c)
    q = random_orthogonal(c.hidden_size, jax.random.PRNGKey(0))
    rotated = rotate_values(rotate_residual(fused, q),
                            random_orthogonal(c.head_dim, jax.random.PRNGKey(1)), online_kv=True,
                            config=c2)
    rotated = add_input_transform(rotated, r"attn/(q|k|v)_proj$", *hadamard_pair(c.hidden_size))
    embeds = jnp.matmul(s["embeds"], q, precision=jax.lax.Precision.HIGHEST)
    run = lambda p, e, cfg: forward(p, s["tokens"], config=cfg, positions=s["positions"],
                                    mask=s["mask"], embeds=e)[0]
    ref = np.asarray(run(lm, s["embeds"], c))
    assert np.max(np.abs(np.asarray(run(rotated, embeds, c2)) - ref)) <= 1e-4 * np.abs(ref).max()
    w = jnp.asarray([0.4, -0.1, 0.3, 0.2], jnp.float32)
    visual = np.asarray(s["visual"])
    want = np.asarray(hawk.hawk_scores(lm, s["embeds"], s["visual"], s["query"], w, config=c))
    got = np.asarray(hawk.hawk_scores(rotated, embeds, s["visual"], s["query"], w, config=c2))
    np.testing.assert_allclose(got[visual], want[visual], rtol=1e-4, atol=1e-5)
    for layer in range(c.num_layers):
        args = (s["positions"], s["mask"], s["visual"], s["last"])
        want = np.asarray(hawk.fastv_scores(lm, s["embeds"], *args, config=c, layer=layer))
        got = np.asarray(hawk.fastv_scores(rotated, embeds, *args, config=c2, layer=layer))
        np.testing.assert_allclose(got[visual], want[visual], rtol=1e-4, atol=1e-6)

"""effjax.models.sdpa: the blocked (flash-style) XLA path against the dense reference,
values and gradients, for every kind of pair rule; the decoder's fast paths (blocked
attention, layers under scan, stacked layers) against its reference path on the test
models."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import effjax
from effjax.models import LMConfig, forward, init_params, layer_runs, stack_layers
from effjax.models.sdpa import (
    allowed_pairs,
    attention,
    block_size,
    blocked_attention,
    dense_attention,
    single_query_attention,
)
from effjax.quant import Recipe, Rule, quantize_params

RNG = np.random.default_rng(0)
REFERENCE = dict(attention_impl="dense", scan_layers=False)


def qkv(b, t, s, h, kv, d):
    return tuple(jnp.asarray(RNG.standard_normal(shape), jnp.float32)
                 for shape in ((b, t, h, d), (b, s, kv, d), (b, s, kv, d)))


@pytest.mark.parametrize("implementation", ["dense", "xla"])
def test_grouped_query_attention_matches_float64_repeated_heads(implementation):
    """Against a float64 NumPy oracle that repeats each kv head over its query heads."""
    b, t, h, kv, d = 2, 5, 6, 2, 4
    q, k, v = RNG.standard_normal((b, t, h, d)), *RNG.standard_normal((2, b, t, kv, d))
    valid = np.ones((b, t), bool)
    valid[1, 0] = False  # a padded first key in the second sequence
    allowed = np.tril(np.ones((t, t), bool))[None] & valid[:, None, :]
    kr, vr = np.repeat(k, h // kv, axis=2), np.repeat(v, h // kv, axis=2)
    s = np.where(allowed[:, None], np.einsum("bthd,bshd->bhts", q, kr) / np.sqrt(d), -np.inf)
    with np.errstate(invalid="ignore"):  # rows with no allowed key become NaN, dropped below
        p = np.exp(s - s.max(-1, keepdims=True))
        p = p / p.sum(-1, keepdims=True)
    ref = np.einsum("bhts,bshd->bthd", p, vr)
    out = np.asarray(attention(*(jnp.asarray(a, jnp.float32) for a in (q, k, v)), causal=True,
                               key_valid=jnp.asarray(valid), implementation=implementation))
    rows = allowed.any(-1)
    np.testing.assert_allclose(out[rows], ref[rows], atol=1e-5)
    assert np.isfinite(out).all()


CASES = list(itertools.product([True, False], [None, 5], [False, True], [False, True], [0, 3]))


@pytest.mark.parametrize("causal, window, padded, masked, offset", CASES)
def test_blocked_matches_dense_values_and_gradients(causal, window, padded, masked, offset):
    """Small blocks (4 queries x 3 keys) so that skipped, partial and full blocks, padded
    tails and queries with no allowed key (padding) all occur."""
    b, h, kv, d = 2, 4, 2, 8
    t, s = (7, 10) if offset else (13, 13)
    q, k, v = qkv(b, t, s, h, kv, d)
    spec = dict(causal=causal, q_offset=offset, window=window,
                key_valid=jnp.asarray(RNG.random((b, s)) > 0.3) if padded else None,
                mask=jnp.asarray(RNG.random((b, t, s)) > 0.2) if masked else None)

    def loss(fn):
        return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))

    def dense(q, k, v):
        return dense_attention(q, k, v, allowed_pairs(t, s, batch=b, **spec))

    def blocked(q, k, v):
        return blocked_attention(q, k, v, block_q=4, block_k=3, **spec)

    np.testing.assert_allclose(blocked(q, k, v), dense(q, k, v), atol=1e-5, rtol=0)
    grads = [jax.grad(loss(f), argnums=(0, 1, 2))(q, k, v) for f in (dense, blocked)]
    for want, got in zip(*grads, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("padded, window", [(False, None), (True, 4)])
def test_single_query_matches_dense(dtype, padded, window):
    """A decoding step (one query per sequence, a cache with unwritten slots) through
    "xla"'s single-query path against the dense reference, values and gradients."""
    b, h, kv, d, s = 3, 6, 2, 8, 11
    q, k, v = (a.astype(dtype) for a in qkv(b, 1, s, h, kv, d))
    valid = jnp.asarray(RNG.random((b, s)) > 0.3) if padded else None
    allowed = allowed_pairs(1, s, batch=b, causal=True, q_offset=7, window=window,
                            key_valid=valid)
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    got = attention(q, k, v, causal=True, q_offset=7, window=window, key_valid=valid,
                    implementation="xla")
    assert got.dtype == dtype
    np.testing.assert_allclose(np.asarray(got, np.float32),
                               np.asarray(dense_attention(q, k, v, allowed), np.float32),
                               atol=tol, rtol=0)
    grads = [jax.grad(lambda *a, f=f: jnp.sum(jnp.sin(f(*a, allowed).astype(jnp.float32))),
                      argnums=(0, 1, 2))(q, k, v)
             for f in (dense_attention, single_query_attention)]
    for want, got in zip(*grads, strict=True):
        np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32),
                                   atol=tol, rtol=0)


def test_block_size_rule():
    assert [block_size(n) for n in (1, 100, 128, 511, 512, 2047, 2048, 8192)] == [
        1, 100, 128, 128, 256, 256, 512, 512]


def test_traced_offset_and_no_allowed_key():
    """Under jit the query offset is traced; a query whose keys are all invalid gets the
    average of all values, as the dense path gives it."""
    q, k, v = qkv(1, 3, 8, 2, 1, 4)
    valid = jnp.asarray([[True, True, False, False, True, True, True, True]])
    got = jax.jit(lambda o: blocked_attention(q, k, v, causal=True, q_offset=o, key_valid=valid,
                                              block_q=2, block_k=2))(jnp.int32(1))
    want = dense_attention(q, k, v, allowed_pairs(3, 8, batch=1, causal=True, q_offset=1,
                                                  key_valid=valid))
    np.testing.assert_allclose(got, want, atol=1e-6)
    # Query 1 sits at key 2, whose only allowed keys 0..2 include invalid key 2 and 0, 1.
    lone = blocked_attention(q, k, v, key_valid=jnp.zeros((1, 8), bool), block_q=2, block_k=2)
    np.testing.assert_allclose(lone, jnp.broadcast_to(v.mean(1, keepdims=True), lone.shape),
                               atol=1e-6)


def test_causal_blocks_above_the_diagonal_are_skipped():
    """Keys that no query may attend cannot change the output: NaN keys beyond the last
    query stay out of it (a skipped block is never computed, a masked one would give NaN
    only through 0 * NaN)."""
    q, k, v = qkv(1, 8, 16, 2, 2, 4)
    k = k.at[:, 8:].set(jnp.nan)
    v = v.at[:, 8:].set(jnp.nan)
    out = blocked_attention(q, k, v, causal=True, block_q=4, block_k=4)
    assert np.isfinite(np.asarray(out)).all()


def test_auto_picks_dense_for_short_blocked_for_long_and_single_query(monkeypatch):
    calls = []
    import effjax.models.sdpa as A
    for name in ("blocked_attention", "dense_attention", "single_query_attention"):
        monkeypatch.setattr(A, name, lambda *a, name=name, **k: calls.append(name) or a[0])
    q, k, v = qkv(1, 4, 4, 2, 1, 4)
    attention(q, k, v)
    long_q = jnp.zeros((1, 256, 2, 4))
    attention(long_q, jnp.zeros((1, 256, 1, 4)), jnp.zeros((1, 256, 1, 4)), causal=True)
    attention(q[:, :1], k, v, causal=True, q_offset=3)
    assert calls == ["dense_attention", "blocked_attention", "single_query_attention"]


def test_attention_rejects_bad_arguments():
    q, k, v = qkv(1, 4, 4, 3, 2, 4)
    with pytest.raises(ValueError, match="multiple of k's"):
        attention(q, k, v)
    q, k, v = qkv(1, 4, 4, 2, 1, 4)
    with pytest.raises(ValueError, match="implementation must be one of"):
        attention(q, k, v, implementation="flash")


TINY = LMConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_layers=4, num_heads=4,
                num_kv_heads=2, head_dim=8, qk_norm=True)
WINDOWED = dataclasses.replace(TINY, sliding_window=7, layer_types=(
    "full_attention", "sliding_attention", "sliding_attention", "full_attention"))


def test_layer_runs_group_like_layers():
    params = init_params(TINY, jax.random.PRNGKey(0))
    assert layer_runs(params["layers"], config=TINY) == [(0, 4)]
    mixed = quantize_params(params, Recipe(rules=(Rule(pattern=r"layers/[12]/", weight="int4"),)))
    assert layer_runs(mixed["layers"], config=TINY) == [(0, 1), (1, 2), (3, 1)]
    act = Recipe(rules=(Rule(pattern=r"layers/0/", activation="int8"),))
    assert layer_runs(params["layers"], config=TINY, recipe=act) == [(0, 1), (1, 3)]
    assert layer_runs(params["layers"], config=TINY, scan=False) == [(i, 1) for i in range(4)]
    assert layer_runs(params["layers"], config=WINDOWED) == [(0, 1), (1, 2), (3, 1)]
    with pytest.raises(ValueError, match="lacks layers"):
        layer_runs({0: params["layers"][0]}, config=TINY)


def _close(got, want, tol=1e-5):
    """Within tol of the reference, relative to its largest magnitude."""
    got, want = np.asarray(got), np.asarray(want)
    assert np.max(np.abs(got - want)) <= tol * max(1.0, np.max(np.abs(want)))


@pytest.mark.parametrize("config, recipe", [
    (TINY, None), pytest.param(WINDOWED, None, marks=pytest.mark.slow),
    pytest.param(TINY, Recipe(rules=(Rule(pattern=r"layers/[12]/", weight="mxfp4"),)),
                 marks=pytest.mark.slow)],
    ids=["float", "sliding-window", "mixed-quantized"])
def test_fast_paths_match_the_reference(config, recipe):
    """Blocked attention, scanned runs and a LayerStack against dense + unrolled: prefill,
    prefill into a cache then a decode step, per-layer masks, and the gradient. (Weights
    only are quantized: an activation quantizer turns a reordered sum's last-bit change
    into a step of its grid, so there the paths agree only where no rounding flips.)"""
    params = init_params(config, jax.random.PRNGKey(1))
    params = params if recipe is None else quantize_params(params, recipe)
    tokens = jnp.asarray(RNG.integers(0, 64, (2, 40)), jnp.int32)
    mask = jnp.asarray(np.arange(40)[None] >= np.array([[0], [5]]))  # row 1 left-padded
    kw = dict(config=config, recipe=recipe, mask=mask)
    want = forward(params, tokens, **kw, **REFERENCE)[0]
    stacked = stack_layers(params, config=config, recipe=recipe)
    _close(forward(params, tokens, **kw, attention_impl="xla", scan_layers=True)[0], want)
    _close(forward(stacked, tokens, **kw, attention_impl="xla")[0], want)  # scanned
    _close(forward(stacked, tokens, **kw, scan_layers=False)[0], want)  # sliced per layer
    if recipe is not None:  # the quantized runs: prefill above is what differs
        return
    cache = effjax.models.init_cache(config, 2, 48)
    outs = []
    for fast in (REFERENCE, dict(attention_impl="xla", scan_layers=True)):
        _, c1 = forward(params, tokens, **kw, cache=cache, **fast)
        step, c2 = forward(params, tokens[:, :1], config=config, recipe=recipe, cache=c1, **fast)
        outs.append((step, c2))
    _close(outs[1][0], outs[0][0])
    for a, b in zip(outs[1][1].k, outs[0][1].k, strict=True):
        _close(a, b)
    layer_masks = (jnp.asarray(RNG.random((4, 2, 40, 40)) > 0.3)
                   | jnp.eye(40, dtype=bool)[None, None])
    _close(forward(params, tokens, **kw, attn_mask=layer_masks, attention_impl="xla",
                   scan_layers=True)[0],
           forward(params, tokens, **kw, attn_mask=layer_masks, **REFERENCE)[0])

    def loss(p, **fast):
        return jnp.mean(forward(p, tokens, **kw, **fast)[0] ** 2)

    g_ref = jax.grad(lambda p: loss(p, **REFERENCE))(params)
    g_fast = jax.grad(lambda p: loss(p, attention_impl="xla", scan_layers=True))(params)
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_ref), strict=True):
        _close(a, b, 1e-4)


def test_stack_layers_refuses_a_recipe_that_splits_a_run():
    params = init_params(TINY, jax.random.PRNGKey(2))
    stacked = stack_layers(params, config=TINY)
    assert stacked["layers"].starts == (0,) and stacked["layers"].counts() == (4,)
    np.testing.assert_array_equal(stacked["layers"].layer(2)["mlp"]["up_proj"]["kernel"],
                                  params["layers"][2]["mlp"]["up_proj"]["kernel"])
    act = Recipe(rules=(Rule(pattern=r"layers/0/", activation="int8"),))
    with pytest.raises(ValueError, match="stack_layers with this recipe"):
        forward(stacked, jnp.zeros((1, 4), jnp.int32), config=TINY, recipe=act)


XLA = dict(attention_impl="xla", scan_layers=True)


@pytest.mark.slow
def test_smollm2_fast_paths_match_the_reference(smollm2, monkeypatch):
    """SmolLM2-135M (Q4_1 GGUF, dequantized), 300 tokens: blocked attention with two query
    blocks and 30 layers under one scan against dense attention, unrolled."""
    import effjax.models.sdpa as sdpa

    tokens = jnp.asarray(RNG.integers(0, smollm2.config.vocab_size, (1, 300)), jnp.int32)
    want = forward(smollm2.params, tokens, config=smollm2.config, **REFERENCE)[0]
    calls = []
    blocked = sdpa.blocked_attention

    def small_blocks(*args, **kw):
        calls.append(1)
        return blocked(*args, **kw, block_q=128, block_k=128)

    monkeypatch.setattr(sdpa, "blocked_attention", small_blocks)
    got = forward(smollm2.params, tokens, config=smollm2.config, **XLA)[0]
    assert calls  # the scanned layer traced once
    _close(got, want)


def test_diffusion_agent_with_span_masks_matches_the_reference():
    from effjax.agents import episodes
    from effjax.agents.train import AGENT_CONFIG, AgentTraining, load_agent
    from effjax.models import bidirectional_forward

    params = load_agent(AgentTraining()).params
    batch = episodes.training_batch(0, 0, 2)
    spans = episodes.span_attention_mask(jnp.asarray(batch["turn"]),
                                         jnp.asarray(batch["is_action"]))
    kw = dict(config=AGENT_CONFIG, mask=jnp.asarray(batch["valid"]), attn_mask=spans)
    tokens = jnp.asarray(batch["tokens"])
    _close(bidirectional_forward(params, tokens, **kw, **XLA),
           bidirectional_forward(params, tokens, **kw, **REFERENCE))


@pytest.mark.slow
def test_shapes_vlm_and_minilm_match_the_reference(monkeypatch):
    """The VLM (vision tower's window masks, spliced image features) and the MiniLM
    encoder (key padding) with every attention forced onto the blocked path."""
    import functools

    import effjax.memory.encoder as encoder_module
    import effjax.models.vlm as vlm_module
    from effjax.data import shapes_vqa
    from effjax.models.sdpa import attention as attend
    from effjax.pruning import shapes_vlm

    vlm = shapes_vlm.load_shapes_vlm()
    batch = shapes_vqa.batch([shapes_vqa.example("test", i) for i in range(2)])
    batch["positions"] = shapes_vlm.positions_of(batch, vlm.config)
    texts = ["Caroline went to the LGBTQ support group on 7 May.", "What did Melanie paint?"]

    def run(**kw):
        embeds, positions, mask = shapes_vlm.lm_inputs(vlm.params, batch, config=vlm.config)
        logits = forward(vlm.params["lm"], jnp.asarray(batch["tokens"]), config=vlm.config.text,
                         positions=positions, mask=mask, embeds=embeds, **kw)[0]
        return logits, encoder_module.Encoder().encode(texts)

    want = run(**REFERENCE)
    forced = functools.partial(attend, implementation="xla")
    monkeypatch.setattr(vlm_module, "attention", forced)
    monkeypatch.setattr(encoder_module, "attention", forced)
    got = run(**XLA)
    for a, b in zip(got, want, strict=True):
        _close(a, b)

"""The jitted masked-diffusion sampler against a step-by-step float64 reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.decoding.diffusion import (
    DiffusionSampling,
    confidence_scores,
    diffusion_generate,
    sample,
    transfer_schedule,
)
from effjax.models import LMConfig, forward, init_params

CFG = LMConfig(vocab_size=48, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
               num_kv_heads=2, head_dim=8, max_position_embeddings=64)
MASK = 47


@pytest.fixture(scope="module")
def params():
    # Large weights so the toy model's predictions are confident and distinct.
    p = init_params(CFG, jax.random.PRNGKey(0))
    return jax.tree.map(lambda a: a * 2.0 if a.ndim == 2 else a, p)


def _np_confidence(probs, tok, kind):
    if kind == "max_prob":
        return probs[np.arange(len(tok)), tok]
    if kind == "margin":
        top = np.sort(probs, axis=-1)
        return top[:, -1] - top[:, -2]
    return np.sum(probs * np.log(np.maximum(probs, 1e-300)), axis=-1)


def _reference(params, prompt, gen, kind, cfg_scale):
    """One token per step, one block, greedy: a numpy float64 loop over float64 logits."""
    x = np.asarray(list(prompt) + [MASK] * gen, np.int64)
    p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    with jax.enable_x64(True):
        def logits_of(tokens):
            t = jnp.asarray(tokens[None], jnp.int64)
            full = jnp.ones((1, len(tokens), len(tokens)), bool)
            return np.asarray(forward(jax.tree.map(jnp.asarray, p64), t, config=CFG,
                                      attn_mask=full, dtype=jnp.float64)[0][0], np.float64)

        for _ in range(gen):
            logits = logits_of(x)
            if cfg_scale:
                un = logits_of(np.where(np.arange(len(x)) < len(prompt), MASK, x))
                logits = un + (cfg_scale + 1) * (logits - un)
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            pred = probs.argmax(-1)
            conf = np.where(x == MASK, _np_confidence(probs, pred, kind), -np.inf)
            i = int(np.argmax(conf))
            x[i] = pred[i]
    return x[len(prompt):].tolist()


@pytest.mark.parametrize("kind,cfg_scale", [("max_prob", 0.0), ("margin", 0.0),
                                            ("neg_entropy", 0.0), ("max_prob", 1.5)])
def test_one_token_per_step_matches_the_float64_reference(params, kind, cfg_scale):
    prompt = [3, 9, 14, 2, 30]
    s = DiffusionSampling(gen_length=8, block_length=8, steps=8, confidence=kind,
                          cfg_scale=cfg_scale)
    out, nfe = diffusion_generate(params, [prompt], sampling=s, mask_id=MASK, eos_id=-1,
                                  pad_to_multiple=1, config=CFG)
    assert out[0] == _reference(params, prompt, 8, kind, cfg_scale)
    assert nfe == 8


def test_fixed_schedule_fills_every_block_in_its_steps(params):
    s = DiffusionSampling(gen_length=16, block_length=8, steps=6)
    tokens = jnp.asarray([[0, 0, 5, 6], [1, 2, 3, 4]], jnp.int32)
    mask = jnp.asarray([[False, False, True, True], [True] * 4])
    out, nfe, order = sample(params, tokens, mask, jax.random.PRNGKey(0), config=CFG,
                             sampling=s, mask_id=MASK)
    assert not bool(jnp.any(out == MASK)) and int(nfe) == 6
    np.testing.assert_array_equal(transfer_schedule(jnp.asarray([8, 7, 2]), 3),
                                  [[3, 3, 2], [3, 2, 2], [1, 1, 0]])
    # each block of 8 is revealed 3, 3, 2 tokens per forward pass (passes 1-3, then 4-6)
    for row in np.asarray(order):
        np.testing.assert_array_equal(np.bincount(row, minlength=7)[1:], [3, 3, 2, 3, 3, 2])
        assert row[:8].max() <= 3 < row[8:].min()


def test_threshold_decoding_reveals_at_least_one_token_a_step(params):
    tokens = jnp.asarray([[1, 2, 3, 4]], jnp.int32)
    mask = jnp.ones((1, 4), bool)
    run = lambda thr: sample(params, tokens, mask, jax.random.PRNGKey(0), config=CFG,
                             sampling=DiffusionSampling(gen_length=16, block_length=8, steps=2,
                                                        threshold=thr), mask_id=MASK)
    strict, nfe_strict, order = run(1.0)  # nothing passes: exactly the most confident one
    loose, nfe_loose, _ = run(0.01)
    assert int(nfe_strict) == 16 and not bool(jnp.any(strict == MASK))
    assert int(nfe_loose) < 16 and not bool(jnp.any(loose == MASK))
    np.testing.assert_array_equal(np.sort(np.asarray(order[0])), np.arange(1, 17))


def test_order_replays_the_canvas_pass_by_pass(params):
    """Rerunning the sampler's reveal rule by hand (cache "none": one full forward a pass)
    reveals, at each pass, exactly the tokens `order` names, with the final tokens."""
    s = DiffusionSampling(gen_length=8, block_length=8, steps=8, threshold=0.3)
    tokens, mask = jnp.asarray([[3, 1, 4, 1]], jnp.int32), jnp.ones((1, 4), bool)
    out, nfe, order = sample(params, tokens, mask, jax.random.PRNGKey(0), config=CFG,
                             sampling=s, mask_id=MASK)
    x = jnp.concatenate([tokens, jnp.full((1, 8), MASK, jnp.int32)], 1)
    for n in range(1, int(nfe) + 1):
        logits = forward(params, x, config=CFG, attn_mask=jnp.ones((1, 12, 12), bool))[0]
        pred = jnp.argmax(logits[:, 4:], -1)
        masked = x[:, 4:] == MASK
        conf = jnp.where(masked, jnp.max(jax.nn.softmax(logits[:, 4:]), -1), -jnp.inf)
        reveal = masked & ((conf > 0.3) | (jnp.arange(8)[None] == jnp.argmax(conf)))
        np.testing.assert_array_equal(reveal, order == n)
        x = x.at[:, 4:].set(jnp.where(reveal, pred, x[:, 4:]))
    np.testing.assert_array_equal(x[:, 4:], out)


def test_the_jitted_sampler_does_not_recompile(params):
    s = DiffusionSampling(gen_length=8, block_length=4, steps=4, threshold=0.5)
    tokens, mask = jnp.asarray([[1, 2, 3, 4]], jnp.int32), jnp.ones((1, 4), bool)
    sample(params, tokens, mask, jax.random.PRNGKey(0), config=CFG, sampling=s, mask_id=MASK)
    size = sample._cache_size()
    for seed in range(3):
        sample(params, tokens + seed, mask, jax.random.PRNGKey(seed), config=CFG, sampling=s,
               mask_id=MASK)
    assert sample._cache_size() == size


def test_prefix_cache_is_exact_when_the_prompt_does_not_read_the_canvas(params):
    p, g = 6, 12
    rows = jnp.arange(p + g)[:, None]
    cols = jnp.arange(p + g)[None, :]
    attn = ((rows >= p) | (cols < p))[None]  # prompt sees prompt, canvas sees all
    tokens, mask = jnp.asarray([[4, 8, 15, 16, 23, 42 - 2]], jnp.int32), jnp.ones((1, p), bool)
    outs = {}
    for cache in ("none", "prefix", "dual"):
        s = DiffusionSampling(gen_length=g, block_length=4, steps=12, cache=cache)
        outs[cache] = np.asarray(sample(params, tokens, mask, jax.random.PRNGKey(0), attn,
                                        config=CFG, sampling=s, mask_id=MASK)[0])
    np.testing.assert_array_equal(outs["prefix"], outs["none"])
    assert not (outs["dual"] == MASK).any()


def test_gumbel_sampling_draws_from_the_tempered_distribution(params):
    prompt = jnp.tile(jnp.asarray([[5, 6, 7]], jnp.int32), (4000, 1))
    s = DiffusionSampling(gen_length=1, block_length=1, steps=1, temperature=2.0)
    out, _, _ = sample(params, prompt, jnp.ones_like(prompt, bool), jax.random.PRNGKey(1),
                       config=CFG, sampling=s, mask_id=MASK)
    logits = forward(params, jnp.asarray([[5, 6, 7, MASK]]), config=CFG,
                     attn_mask=jnp.ones((1, 4, 4), bool))[0][0, -1]
    want = np.asarray(jax.nn.softmax(logits / 2.0))
    got = np.bincount(np.asarray(out[:, 0]), minlength=CFG.vocab_size) / 4000
    assert np.abs(got - want).max() < 0.03  # about 4 standard errors at p = 0.5


def test_confidence_scores_against_numpy():
    logits = jax.random.normal(jax.random.PRNGKey(0), (5, 11)) * 3
    tok = jnp.argmax(logits, -1)
    probs = np.asarray(jax.nn.softmax(logits), np.float64)
    for kind in ("max_prob", "margin", "neg_entropy"):
        np.testing.assert_allclose(confidence_scores(logits, tok, kind),
                                   _np_confidence(probs, np.asarray(tok), kind), atol=1e-6)
    with pytest.raises(ValueError, match="confidence"):
        confidence_scores(logits, tok, "entropy")


@pytest.mark.parametrize("kwargs,match", [
    (dict(gen_length=16, block_length=5), "block_length must divide gen_length"),
    (dict(gen_length=16, block_length=8, steps=3), "steps must be a multiple"),
    (dict(confidence="top"), "confidence must be"),
    (dict(cache="kv"), "cache must be"),
    (dict(threshold=1.5), "threshold"),
    (dict(cfg_scale=1.0, cache="dual"), "cfg_scale > 0 needs cache='none'"),
    (dict(temperature=-1.0), "temperature"),
])
def test_sampling_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiffusionSampling(**kwargs)


def test_generate_bad_input(params):
    s = DiffusionSampling(gen_length=32, block_length=8, steps=32)
    with pytest.raises(ValueError, match="past the context length"):
        diffusion_generate(params, [[1] * 40], sampling=s, mask_id=MASK, config=CFG)
    with pytest.raises(ValueError, match="mask_id"):
        diffusion_generate(params, [[1, 2]], sampling=s, mask_id=48, config=CFG)
    with pytest.raises(ValueError, match="non-empty"):
        diffusion_generate(params, [[]], sampling=s, mask_id=MASK, config=CFG)

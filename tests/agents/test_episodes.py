"""Agent episodes: span layout, the aligned mask, training batches, policies, the loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.agents.episodes import (
    ACTION_LEN,
    FILL_ID,
    MALFORMED_OUTPUT,
    MASK_ID,
    ARPolicy,
    Context,
    DiffusionPolicy,
    question_context,
    run_episodes,
    span_attention_mask,
    training_batch,
    trajectory_context,
)
from effjax.agents.tools import solve, tasks
from effjax.decoding.diffusion import DiffusionSampling
from effjax.models import LMConfig, init_params
from effjax.models.diffusion import bidirectional_forward

CFG = LMConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
               num_kv_heads=2, head_dim=8, max_position_embeddings=256, eos_token_id=10)


@pytest.fixture(scope="module")
def params():
    return init_params(CFG, jax.random.PRNGKey(0))


def _arrays(ctx):
    return (jnp.asarray([ctx.tokens], jnp.int32), jnp.asarray([ctx.turn], jnp.int32),
            jnp.asarray([ctx.is_action]))


@pytest.mark.parametrize("aligned", [True, False])
def test_context_is_blind_to_noised_future_actions_only_when_aligned(params, aligned):
    task = next(t for t in tasks(0, 50) if t.calls == 3)
    ctx, _ = trajectory_context(task)
    tokens, turn, action = _arrays(ctx)
    j = 2  # noise the actions of turn 2 and later; look at the context of turn 2
    noised = jnp.where(action & (turn >= j), MASK_ID, tokens)
    attn = span_attention_mask(turn, action, aligned=aligned)
    clean = bidirectional_forward(params, tokens, config=CFG, attn_mask=attn)
    noisy = bidirectional_forward(params, noised, config=CFG, attn_mask=attn)
    context = np.asarray(~action[0] & (turn[0] <= j))
    diff = float(jnp.max(jnp.abs(clean[0][context] - noisy[0][context])))
    if aligned:
        assert diff == 0.0
    else:
        assert diff > 1e-4
    # An action token of turn j does see the noise in its own span, aligned or not.
    own = np.asarray(action[0] & (turn[0] == j))
    assert float(jnp.max(jnp.abs(clean[0][own] - noisy[0][own]))) > 1e-4


def test_span_mask_structure():
    turn = jnp.asarray([[0, 0, 0, 1, 1, 1]])
    action = jnp.asarray([[False, True, True, False, True, True]])
    m = np.asarray(span_attention_mask(turn, action))[0].astype(int)
    np.testing.assert_array_equal(m, [[1, 0, 0, 0, 0, 0],   # context 0: own context only
                                      [1, 1, 1, 0, 0, 0],   # action 0: turn 0
                                      [1, 1, 1, 0, 0, 0],
                                      [1, 1, 1, 1, 0, 0],   # context 1: turn 0 + itself
                                      [1, 1, 1, 1, 1, 1],   # action 1: everything
                                      [1, 1, 1, 1, 1, 1]])
    assert bool(jnp.all(span_attention_mask(turn, action, aligned=False)))


def test_trajectory_layout_and_training_batch():
    task = tasks(0, 1)[0]
    ctx, is_call = trajectory_context(task)
    assert sum(ctx.is_action) == ACTION_LEN * (task.calls + 1)
    assert sum(is_call) == ACTION_LEN * task.calls
    text = "".join(chr(t) for t in ctx.tokens if t != FILL_ID)
    assert text.startswith(f"Q:{task.question}\n") and text.endswith(f"{solve(task)[-1][0]}\n")
    b = training_batch(0, 5, 8, call_focus=0.5)
    assert b["tokens"].shape == (8, 256)
    assert not (b["noisable"] & ~b["is_action"]).any()
    assert not (b["targets"] & (b["tokens"] == FILL_ID)).any()
    np.testing.assert_array_equal(b["noisable"][4:], b["is_action"][4:])
    assert (b["noisable"][:4].sum(1) < b["is_action"][:4].sum(1)).all()  # answers left clean
    np.testing.assert_array_equal(training_batch(0, 5, 8, call_focus=0.5)["tokens"], b["tokens"])
    with pytest.raises(ValueError, match="call_focus"):
        training_batch(0, 0, 2, call_focus=2.0)
    with pytest.raises(ValueError, match="seq_len"):
        training_batch(0, 0, 2, seq_len=64)


class Scripted:
    """A policy that replays each task's reference actions (or garbage)."""

    def __init__(self, items, garbage=False):
        self.items, self.garbage, self.calls = items, garbage, 0

    def act(self, contexts):
        self.calls += 1
        out = []
        for c in contexts:
            text = "".join(chr(t) for t in c.tokens)
            task = next(t for t in self.items if text.startswith(f"Q:{t.question}\n"))
            rnd = sum(c.is_action) // ACTION_LEN
            out.append('{"tool":"kb"' if self.garbage else solve(task)[rnd][0])
        return out, 3


def _unique(items):
    """Tasks with distinct questions (the scripted policy finds its task by the question)."""
    return list({t.question: t for t in items}.values())


def test_run_episodes_with_the_reference_policy_succeeds():
    items = _unique(tasks(1, 12, split="test"))
    results = run_episodes(Scripted(items), items, batch_size=4)
    assert all(r.success and r.end == "answer" for r in results)
    assert [r.rounds for r in results] == [t.calls + 1 for t in items]
    assert [r.tool_calls for r in results] == [t.calls for t in items]
    assert all(r.forward_passes == 3 * r.rounds and not r.malformed for r in results)


def test_malformed_calls_are_counted_and_never_crash_the_loop():
    items = _unique(tasks(1, 3, split="test"))
    results = run_episodes(Scripted(items, garbage=True), items, max_rounds=4)
    for r in results:
        assert not r.success and r.end == "max_rounds" and r.malformed["not_json"] == 4
        assert MALFORMED_OUTPUT in r.transcript
    short = run_episodes(Scripted(items, garbage=True), items, max_rounds=9, context_length=128)
    assert all(r.end == "overflow" for r in short)
    with pytest.raises(ValueError, match="max_rounds"):
        run_episodes(Scripted(items), items, max_rounds=0)


def test_policies_with_a_random_model(params):
    contexts = [question_context(t) for t in tasks(2, 3, split="test")]
    texts, nfe = ARPolicy(params, CFG).act(contexts)
    assert len(texts) == 3 and 1 < nfe <= ACTION_LEN and all("\n" not in t for t in texts)
    sampling = DiffusionSampling(gen_length=ACTION_LEN, block_length=ACTION_LEN // 2,
                                 steps=ACTION_LEN // 2, threshold=0.9)
    policy = DiffusionPolicy(params, CFG, sampling)
    texts, nfe = policy.act(contexts)
    assert len(texts) == 3 and 2 <= nfe <= ACTION_LEN
    tokens, mask, attn = policy.inputs(contexts)
    width = tokens.shape[1]
    assert width % 32 == 0 and attn.shape == (3, width + ACTION_LEN, width + ACTION_LEN)
    assert [int(m) for m in mask.sum(1)] == [len(c.tokens) for c in contexts]
    assert bool(attn[:, width:, width:].all())          # the canvas sees all of itself
    assert all(chr(MASK_ID) not in t and "\n" not in t for t in texts)
    with pytest.raises(ValueError, match="gen_length"):
        DiffusionPolicy(params, CFG, DiffusionSampling(gen_length=16, block_length=16, steps=16))
    long = Context()
    long.add_context("Q:" + "x" * 230 + "\n", 0)
    with pytest.raises(ValueError, match="max_new_tokens=36 is past the context length 256"):
        DiffusionPolicy(params, CFG, sampling).act([long])

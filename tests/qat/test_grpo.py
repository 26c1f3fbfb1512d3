import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax import qat
from effjax.data import arithmetic as ar
from effjax.formats import get_format
from effjax.qat import grpo as grpo_module
from effjax.quant import recipe

INT4 = recipe(get_format("int4", granularity="group", group_size=32), pattern="_proj$")


def test_group_advantages():
    r = np.array([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    a = np.asarray(qat.group_advantages(r))
    np.testing.assert_allclose(a[0], [1, -1, -1, 1], rtol=1e-5)
    np.testing.assert_array_equal(a[1], 0)


def test_sequences_layout():
    b = qat.sequences([[5, 6], [7]], [[1, 2, 3], [4]], prompt_width=3, completion_width=4)
    np.testing.assert_array_equal(b["tokens"], [[0, 5, 6, 1, 2, 3, 0], [0, 0, 7, 4, 0, 0, 0]])
    np.testing.assert_array_equal(b["mask"][1], [0, 0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(b["completion"][0], [0, 0, 0, 1, 1, 1, 0])
    with pytest.raises(ValueError, match="exceed"):
        qat.sequences([[1, 2]], [[1]], prompt_width=1, completion_width=4)


def test_token_logprobs_are_the_forward(tiny):
    config, params = tiny
    b = qat.sequences([[65, 66, 67]], [[68, 69]], prompt_width=4, completion_width=3)
    g = qat.GRPOConfig(recipe=None, total_steps=2)
    lp = qat.token_logprobs(params, b, config=config, grpo=g)
    # the unpadded row through the plain forward
    from effjax.models import forward

    logits = forward(params, jnp.asarray([[65, 66, 67, 68]]), config=config)[0]
    want = jax.nn.log_softmax(logits, -1)[0, np.arange(4), [66, 67, 68, 69]]
    np.testing.assert_allclose(lp[0, 1:5], want, atol=1e-5)


def test_loss_at_ratio_one(tiny):
    config, params = tiny
    g = qat.GRPOConfig(recipe=INT4, kl_coef=0.0, total_steps=2)
    b = qat.sequences([[65, 66], [65, 66]], [[67, 68, 10], [69]], prompt_width=2,
                      completion_width=3)
    b["old_logp"] = qat.token_logprobs(params, b, config=config, grpo=g)
    b["advantages"] = jnp.asarray([1.0, -1.0])
    loss, aux = qat.grpo_loss(params, params, b, config=config, grpo=g)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)  # -mean(A) with the ratio at 1
    assert float(aux["clip_fraction"]) == 0.0
    # the reference runs through the same quantizer: no KL to itself, some to another policy
    g_kl = dataclasses.replace(g, kl_coef=0.1)
    assert float(qat.grpo_loss(params, params, b, config=config, grpo=g_kl)[1]["kl"]) < 1e-6
    other = jax.tree.map(lambda a: a * 1.5, params)
    assert float(qat.grpo_loss(params, other, b, config=config, grpo=g_kl)[1]["kl"]) > 1e-3


def _two_completions():
    """One prompt, two completions of different lengths, advantages +1 and -1."""
    b = qat.sequences([[65, 66], [65, 66]], [[67, 68, 10], [69]], prompt_width=2,
                      completion_width=3)
    b["advantages"] = jnp.asarray([1.0, -1.0])
    return b


def _sequence_logprobs(params, batch, config, g):
    """Each completion's summed log-probability under the policy."""
    lp = qat.token_logprobs(params, batch, config=config, grpo=g)
    return jnp.sum(lp * batch["completion"][:, 1:].astype(jnp.float32), axis=1)


def test_grpo_gradient_at_ratio_one_is_the_advantage_weighted_logprob_gradient(tiny):
    """At ratio 1 the clipped objective's gradient is the policy gradient
    -mean_seq A sum_tok grad logp / len (the code normalizes per sequence); the KL to a
    reference equal to the policy is at its minimum, so it adds no gradient."""
    config, params = tiny
    g = qat.GRPOConfig(recipe=INT4, kl_coef=0.1, total_steps=2)
    b = _two_completions()
    b["old_logp"] = qat.token_logprobs(params, b, config=config, grpo=g)
    lengths = b["completion"].sum(axis=1).astype(jnp.float32)  # 3 and 1: a per-token
    # (not per-sequence) mean would weigh the rows 3:1 and fail the comparison

    def policy_gradient(p):
        return -jnp.mean(b["advantages"] * _sequence_logprobs(p, b, config, g) / lengths)

    got = jax.grad(lambda p: qat.grpo_loss(p, params, b, config=config, grpo=g)[0])(params)
    want = jax.grad(policy_gradient)(params)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):  # observed: equal
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(y))))


def test_grpo_step_raises_the_positive_completion_and_lowers_the_negative(tiny):
    """One small SGD step on grpo_loss (a float policy: a small step moves every logit, no
    quantizer rounding it away) with fixed completions: the log-probability of the
    completion with advantage +1 goes up, the one with -1 goes down."""
    config, params = tiny
    g = qat.GRPOConfig(recipe=None, kl_coef=0.0, total_steps=2)
    b = _two_completions()
    b["old_logp"] = qat.token_logprobs(params, b, config=config, grpo=g)
    grads = jax.grad(lambda p: qat.grpo_loss(p, params, b, config=config, grpo=g)[0])(params)
    stepped = jax.tree.map(lambda p, d: p - 1e-3 * d, params, grads)
    change = (_sequence_logprobs(stepped, b, config, g)
              - _sequence_logprobs(params, b, config, g))
    # observed +0.36 and -0.20 (deterministic: fixed weights and completions); float32 noise
    # in a sum of four log-probabilities is ~1e-5
    assert float(change[0]) > 0.05 and float(change[1]) < -0.05, change


def test_grpo_iteration_runs_the_loop(tiny, monkeypatch):
    """The full loop (sampling, rewards, advantages, inner steps) end to end, checked only
    for what holds whatever is sampled: one compile, finite metrics, the steps counted, the
    parameters moved (the reward alternates within each group, so no advantage is zero)."""
    config, params = tiny
    g = qat.GRPOConfig(recipe=INT4, group_size=4, max_new_tokens=4, learning_rate=3e-3,
                       total_steps=2, kl_coef=0.04, inner_steps=2)
    state = qat.init_state(params, g.optimizer_config(), jax.random.PRNGKey(0), config=config)
    traces = []  # the step's loss is traced once per compile (a count no cache eviction hides)
    loss = grpo_module.grpo_loss
    monkeypatch.setattr(grpo_module, "grpo_loss",
                        lambda *a, **k: traces.append(1) or loss(*a, **k))
    step = qat.make_grpo_step(config, g)
    prompts = [ar.CharTokenizer().encode(p.prompt) for p in ar.problems(0, 2)]
    calls = []

    def reward(i, completion):
        calls.append(i)
        return float(len(calls) % 2)

    rng = np.asarray(state.rng)
    for _ in range(2):
        state, m = qat.grpo_iteration(step, state, params, prompts, config=config, grpo=g,
                                      reward=reward, eos_id=ar.EOS_ID)
        assert m["reward"] == 0.5
        assert all(np.isfinite(v) for v in m.values()), m
    assert calls == [0, 0, 0, 0, 1, 1, 1, 1] * 2  # each prompt's group, in order
    assert int(state.step) == 4  # 2 iterations x 2 inner steps
    assert len(traces) == 1
    assert not np.array_equal(np.asarray(state.rng), rng)
    moved = [not np.array_equal(a, b)
             for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(params), strict=True)]
    assert all(moved), moved


def test_config_checked():
    with pytest.raises(ValueError, match="group_size"):
        qat.GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match="temperature"):
        qat.GRPOConfig(temperature=0.0)
    with pytest.raises(ValueError, match="clip_eps"):
        qat.GRPOConfig(clip_eps=1.5)

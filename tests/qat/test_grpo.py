import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax import qat
from effjax.data import arithmetic as ar
from effjax.formats import get_format
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


def test_grpo_raises_reward(tiny):
    """A verifiable reward (the completion starts with '7') goes up under GRPO."""
    config, params = tiny
    g = qat.GRPOConfig(recipe=INT4, group_size=8, max_new_tokens=4, learning_rate=3e-3,
                       total_steps=12, kl_coef=0.0, inner_steps=2)
    state = qat.init_state(params, g.optimizer_config(), jax.random.PRNGKey(0), config=config)
    step = qat.make_grpo_step(config, g)
    prompts = [ar.CharTokenizer().encode(p.prompt) for p in ar.problems(0, 4)]
    target = ord("7")

    def reward(i, completion):
        return float(bool(completion) and completion[0] == target)

    rewards = []
    for _ in range(12):
        state, m = qat.grpo_iteration(step, state, params, prompts, config=config, grpo=g,
                                      reward=reward, eos_id=ar.EOS_ID)
        rewards.append(m["reward"])
    assert np.mean(rewards[-3:]) > np.mean(rewards[:3]) + 0.3, rewards
    assert step._cache_size() == 1


def test_config_checked():
    with pytest.raises(ValueError, match="group_size"):
        qat.GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match="temperature"):
        qat.GRPOConfig(temperature=0.0)
    with pytest.raises(ValueError, match="clip_eps"):
        qat.GRPOConfig(clip_eps=1.5)

"""Jitted generation with the KV cache against step-by-step full forwards; sampling filters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import effjax
from effjax.decoding import SamplingConfig, generate, sample_logits
from effjax.models import forward
from tests.models.hf_tiny import torch_logits, write_tiny


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    model = write_tiny("llama_gqa4_llama3_rope_tied", path)
    return effjax.load(path), model


@pytest.fixture(scope="module")
def lm(tiny):
    return tiny[0]


def _torch_greedy(model, prompt, n):
    """Greedy decoding by the PyTorch reference: argmax of a full forward, no cache."""
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(np.argmax(torch_logits(model, [seq])[0, -1])))
    return seq[len(prompt):]


def test_greedy_batch_of_different_lengths_matches_reference(tiny):
    lm, model = tiny
    prompts = [[5, 9, 14], [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3], [42]]
    out = generate(lm.params, prompts, max_new_tokens=12, eos_id=-1, config=lm.config)
    for prompt, got in zip(prompts, out, strict=True):
        assert got == _torch_greedy(model, prompt, 12)


def test_gemma3_greedy_past_the_window_matches_reference(tmp_path):
    """Gemma 3 (a window of 6 in layer 0): prompts and continuations longer than the window,
    decoded with the KV cache, against PyTorch's full recompute."""
    model = write_tiny("gemma3_local_global", tmp_path)
    lm = effjax.load(tmp_path)
    prompts = [[5, 9, 14], [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]]
    out = generate(lm.params, prompts, max_new_tokens=12, eos_id=-1, config=lm.config)
    for prompt, got in zip(prompts, out, strict=True):
        assert got == _torch_greedy(model, prompt, 12)


def test_eos_stops_a_sequence(lm):
    prompt = [5, 9, 14]
    free = generate(lm.params, [prompt], max_new_tokens=10, eos_id=-1, config=lm.config)[0]
    eos = free[3]
    stopped = generate(lm.params, [prompt], max_new_tokens=10, eos_id=eos, config=lm.config)[0]
    assert stopped == free[: free.index(eos) + 1]


def test_sampling_is_seeded_and_respects_top_k(lm):
    prompts = [[7, 8, 9]] * 4
    s = SamplingConfig(temperature=1.0, top_k=3)
    a = generate(lm.params, prompts, max_new_tokens=8, sampling=s,
                 key=jax.random.PRNGKey(1), eos_id=-1, config=lm.config)
    b = generate(lm.params, prompts, max_new_tokens=8, sampling=s,
                 key=jax.random.PRNGKey(1), eos_id=-1, config=lm.config)
    assert a == b
    assert len({tuple(r) for r in a}) > 1  # rows draw different samples
    logits, _ = forward(lm.params, np.array([prompts[0]], np.int32), config=lm.config)
    top3 = set(np.argsort(np.asarray(logits[0, -1]))[-3:].tolist())
    assert all(r[0] in top3 for r in a)


def test_sample_logits_filters():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]] * 2000))
    keys = jax.random.PRNGKey(0)
    greedy = sample_logits(logits, keys, SamplingConfig())
    assert (np.asarray(greedy) == 0).all()
    top_p = np.asarray(sample_logits(logits, keys, SamplingConfig(temperature=1.0, top_p=0.7)))
    assert set(top_p.tolist()) == {0, 1}  # 0.5 < 0.7 needs the second token, not the third
    frac = (top_p == 0).mean()
    assert abs(frac - 0.5 / 0.8) < 0.05
    top_k = np.asarray(sample_logits(logits, keys, SamplingConfig(temperature=1.0, top_k=3)))
    assert set(top_k.tolist()) == {0, 1, 2}
    cold = np.asarray(sample_logits(logits, keys, SamplingConfig(temperature=0.05)))
    assert (cold == 0).mean() > 0.99


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=-1.0), "temperature"), (dict(top_k=-2), "top_k"), (dict(top_p=0.0), "top_p")])
def test_sampling_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingConfig(**kwargs)


def test_generate_bad_input(lm):
    with pytest.raises(ValueError, match="non-empty"):
        generate(lm.params, [[1], []], max_new_tokens=2, config=lm.config)
    with pytest.raises(ValueError, match="max_new_tokens must be positive"):
        generate(lm.params, [[1]], max_new_tokens=0, config=lm.config)
    with pytest.raises(ValueError, match="past the context length"):
        generate(lm.params, [[1] * 100], max_new_tokens=40, config=lm.config)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 97\)"):
        generate(lm.params, [[1, 500]], max_new_tokens=2, config=lm.config)


def test_prepare_prompts_and_cut_at_eos(lm):
    from effjax.decoding.generate import cut_at_eos, prepare_prompts

    tokens, mask, eos, key = prepare_prompts([[5, 6, 7], [9]], lm.config, max_new_tokens=4,
                                             context=128, pad_to_multiple=4, eos_id=None,
                                             key=None)
    np.testing.assert_array_equal(tokens, [[0, 5, 6, 7], [0, 0, 0, 9]])
    np.testing.assert_array_equal(mask, [[False, True, True, True], [False, False, False, True]])
    assert eos == (lm.config.eos_token_id if lm.config.eos_token_id is not None else -1)
    np.testing.assert_array_equal(key, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"prompt length 100 \+ max_new_tokens=20 \+ 9 reserved "
                                         r"is past the context length 128"):
        prepare_prompts([[1] * 100], lm.config, max_new_tokens=20, context=128,
                        pad_to_multiple=16, eos_id=-1, key=None, reserve=9)
    assert cut_at_eos([[1, 2, 3, 2, 5], [4, 4]], 2) == [[1, 2], [4, 4]]

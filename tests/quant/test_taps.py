"""Taps: a collector sees every linear layer's input, only inside `collecting`."""

import jax
import numpy as np
import pytest

import effjax
from effjax.models import forward
from effjax.quant import taps


def test_collector_sees_every_projection_once():
    config = effjax.models.LMConfig(vocab_size=61, hidden_size=64, intermediate_size=128,
                                    num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32)
    params = effjax.models.init_params(config, jax.random.PRNGKey(0))
    tokens = np.ones((2, 5), np.int32)
    seen = []
    with taps.collecting(lambda path, x: seen.append((path, x.shape))):
        forward(params, tokens, config=config)
    assert len(seen) == 2 * 7 + 1 and ("layers/1/mlp/down_proj", (2, 5, 128)) in seen
    assert ("lm_head", (2, 5, 64)) in seen  # the untied output head
    assert len({p for p, _ in seen}) == len(seen)
    seen.clear()
    forward(params, tokens, config=config)  # no collector: nothing recorded
    taps.record("x", np.ones(3))
    assert not seen


def test_kv_taps_see_the_cached_keys_and_values_only_when_asked():
    config = effjax.models.LMConfig(vocab_size=61, hidden_size=64, intermediate_size=128,
                                    num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32)
    params = effjax.models.init_params(config, jax.random.PRNGKey(0))
    tokens = np.ones((2, 5), np.int32)
    seen = {}
    with taps.collecting(lambda path, x: seen.__setitem__(path, x), kinds=("kv",)):
        _, cache = forward(params, tokens, config=config,
                           cache=effjax.models.init_cache(config, 2, 5))
    assert sorted(seen) == ["layers/0/attn/k", "layers/0/attn/v", "layers/1/attn/k",
                            "layers/1/attn/v"]
    np.testing.assert_array_equal(seen["layers/1/attn/k"], cache.k[1])  # what the cache holds
    np.testing.assert_array_equal(seen["layers/0/attn/v"], cache.v[0])
    both = []
    with taps.collecting(lambda path, x: both.append(path), kinds=("input", "kv")):
        forward(params, tokens, config=config)
    assert len(both) == 2 * 7 + 1 + 4


def test_collecting_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="kinds must be"):
        with taps.collecting(lambda path, x: None, kinds=("weights",)):
            pass

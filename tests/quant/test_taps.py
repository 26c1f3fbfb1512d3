"""Taps: a collector sees every linear layer's input, only inside `collecting`."""

import jax
import numpy as np

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

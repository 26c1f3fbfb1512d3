"""A tiny decoder in the char vocabulary, shared by the QAT tests."""

import jax
import pytest

from effjax.data import arithmetic
from effjax.models import LMConfig, init_params


@pytest.fixture(scope="package")
def tiny():
    """(config, params): 2 layers, hidden 64 (two MX blocks), the 128-token char vocab."""
    config = LMConfig(vocab_size=arithmetic.VOCAB_SIZE, hidden_size=64, intermediate_size=128,
                      num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32,
                      max_position_embeddings=128, eos_token_id=arithmetic.EOS_ID)
    return config, init_params(config, jax.random.PRNGKey(0))

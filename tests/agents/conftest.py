"""A tiny random decoder with a real tokenizer (MiniLM's WordPiece) for routing tests."""

import jax
import pytest

import effjax
from effjax.agents import PrecisionRouter, build_variants


@pytest.fixture(scope="session")
def tiny_router_parts():
    from transformers import AutoTokenizer

    from effjax.memory import minilm_path

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    config = effjax.models.LMConfig(vocab_size=tokenizer.vocab_size, hidden_size=64,
                                    intermediate_size=128, num_layers=2, num_heads=2,
                                    num_kv_heads=1, head_dim=32, eos_token_id=-1)
    params = effjax.models.init_params(config, jax.random.PRNGKey(0))
    return config, params, tokenizer, build_variants(params)


@pytest.fixture
def tiny_router(tiny_router_parts):
    config, _, tokenizer, variants = tiny_router_parts
    return PrecisionRouter(variants, config, tokenizer)

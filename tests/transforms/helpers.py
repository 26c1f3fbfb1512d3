"""A tiny decoder with every parameter random (norm weights and biases too), so a transform
that mishandles any of them changes the logits."""

import jax
import jax.numpy as jnp
import numpy as np

import effjax

TOKENS = jnp.asarray(np.random.RandomState(0).randint(0, 67, (2, 12)), jnp.int32)


# Gemma 3's layout: GeGLU, sandwich norms, scaled embeddings, q/k norms, a sliding-window
# layer (window 5 < len(TOKENS[0])) beside a global one with its own RoPE base.
GEMMA = dict(hidden_act="gelu_tanh", sandwich_norms=True, scale_embeddings=True, qk_norm=True,
             query_pre_attn_scalar=8.0, sliding_window=5,
             layer_types=("sliding_attention", "full_attention"), local_rope_theta=100.0)


def tiny(tied=True, bias=True, qk_norm=False, seed=0, hidden=48, intermediate=96, heads=3,
         head_dim=16, gemma=False):
    layout = GEMMA if gemma else dict(qk_norm=qk_norm)
    config = effjax.models.LMConfig(
        vocab_size=67, hidden_size=hidden, intermediate_size=intermediate, num_layers=2,
        num_heads=heads, num_kv_heads=1, head_dim=head_dim, tie_word_embeddings=tied,
        qkv_bias=bias, o_bias=bias, mlp_bias=bias, **layout)
    params = effjax.models.init_params(config, jax.random.PRNGKey(seed))
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))

    def jitter(path, leaf, key):
        name = getattr(path[-1], "key", "")
        if name == "weight":  # norms
            return leaf * (1 + 0.3 * jax.random.normal(key, leaf.shape))
        if name == "bias":
            return 0.1 * jax.random.normal(key, leaf.shape)
        return leaf

    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    return config, jax.tree.unflatten(treedef, [jitter(p, x, k) for p, x, k in
                                                zip(paths, leaves, keys, strict=True)])


def logits(params, config, recipe=None):
    return effjax.models.forward(params, TOKENS, config=config, recipe=recipe)[0]


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


class ByteTokenizer:
    """Bytes as tokens (ids < 67 by modulo): enough of a tokenizer for the pipeline tests."""

    def __call__(self, text, add_special_tokens=False):
        del add_special_tokens
        return {"input_ids": [b % 67 for b in text.encode()]}


def tiny_lm(**kwargs):
    config, params = tiny(**kwargs)
    return effjax.models.LM(config=config, params=params, tokenizer=ByteTokenizer(),
                            source="tiny")

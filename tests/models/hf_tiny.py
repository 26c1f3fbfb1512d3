"""Tiny random Hugging Face checkpoints written offline by `transformers`, for parity tests."""

import torch
import transformers

# name -> (config class, model class, config kwargs). Together they cover GQA ratios 1, 3
# and 4, tied and untied embeddings, q/k norm, attention bias, llama3 and linear rope
# scaling and a head_dim different from hidden / heads.
TINY = {
    "llama_mha_untied": (
        transformers.LlamaConfig, transformers.LlamaForCausalLM,
        dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False),
    ),
    "llama_gqa4_llama3_rope_tied": (
        transformers.LlamaConfig, transformers.LlamaForCausalLM,
        dict(num_attention_heads=8, num_key_value_heads=2, head_dim=12, tie_word_embeddings=True,
             rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
    ),
    "llama_linear_rope_bias": (
        transformers.LlamaConfig, transformers.LlamaForCausalLM,
        dict(num_attention_heads=4, num_key_value_heads=2, attention_bias=True, mlp_bias=True,
             rope_scaling={"rope_type": "linear", "factor": 2.0}),
    ),
    "qwen2_gqa3_bias": (
        transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
        dict(num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=True),
    ),
    "qwen3_qknorm_headdim": (
        transformers.Qwen3Config, transformers.Qwen3ForCausalLM,
        dict(num_attention_heads=4, num_key_value_heads=1, head_dim=24, tie_word_embeddings=False),
    ),
}


def write_tiny(name: str, path, *, seed: int = 0, max_shard_size: str | None = None):
    """Writes the tiny checkpoint `name` to `path`; returns the PyTorch model (eval mode)."""
    config_cls, model_cls, extra = TINY[name]
    config = config_cls(vocab_size=97, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                        max_position_embeddings=128, rms_norm_eps=1e-6, initializer_range=0.2,
                        bos_token_id=1, eos_token_id=2, pad_token_id=0, **extra)
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():  # non-trivial norm weights and biases, so they are really tested
        for n, p in model.named_parameters():
            if n.endswith("norm.weight") or n.endswith(".bias"):
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if n.endswith("norm.weight") else 0.0))
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(path, **kwargs)
    return model


def torch_logits(model, tokens):
    """Float32 logits of the PyTorch reference."""
    import numpy as np

    with torch.no_grad():
        return model(torch.tensor(np.asarray(tokens), dtype=torch.long)).logits.float().numpy()

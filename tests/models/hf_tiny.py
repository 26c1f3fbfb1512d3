"""Tiny random Hugging Face checkpoints written offline by `transformers`, for parity tests."""

import torch
import transformers

# name -> (config class, model class, config kwargs). Together they cover GQA ratios 1, 3
# and 4, tied and untied embeddings, q/k norm, attention bias, llama3 and linear rope
# scaling, a head_dim different from hidden / heads, and a sliding-window layer after a
# full-attention one, and Gemma 3 (sandwich norms, GeGLU, scaled embeddings, local and
# global RoPE bases, query_pre_attn_scalar).
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
    "qwen2_gqa3_bias_window": (
        transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
        dict(num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=True,
             use_sliding_window=True, sliding_window=6, max_window_layers=1),
    ),
    "gemma3_local_global": (
        transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM,
        dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=6,
             layer_types=["sliding_attention", "full_attention"], query_pre_attn_scalar=8),
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


# Token ids of the tiny Qwen2.5-VL (inside its 128-token vocabulary).
VL_IMAGE, VL_START, VL_END = 120, 122, 123


def write_tiny_vl(path, *, seed: int = 0):
    """Writes a tiny random Qwen2.5-VL (2 vision blocks, one of them full attention; 4-pixel
    patches, 16-pixel windows; mrope_section (2, 3, 3)) to `path`; returns the PyTorch
    model (eval mode, eager attention)."""
    config = transformers.Qwen2_5_VLConfig(
        text_config=dict(vocab_size=128, hidden_size=64, intermediate_size=96,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, rms_norm_eps=1e-6,
                         initializer_range=0.2, bos_token_id=1, eos_token_id=2,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=48, num_heads=2,
                           out_hidden_size=64, patch_size=4, temporal_patch_size=2,
                           in_channels=3, spatial_merge_size=2, window_size=16,
                           fullatt_block_indexes=[1], initializer_range=0.2),
        image_token_id=VL_IMAGE, video_token_id=121, vision_start_token_id=VL_START,
        vision_end_token_id=VL_END, tie_word_embeddings=False)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.Qwen2_5_VLForConditionalGeneration(config).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight") or n.endswith(".bias") or "norm1" in n or "norm2" in n \
                    or "ln_q" in n:
                base = 0.0 if n.endswith(".bias") else 1.0
                p.copy_(torch.randn_like(p) * 0.3 + base)
    model.save_pretrained(path)
    return model

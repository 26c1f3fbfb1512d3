"""Models: the Llama / Qwen / Gemma 3 decoder LM, the masked-diffusion LM on the same decoder, the
Qwen2.5-VL vision-language model, their loaders and sharding: plain functions over typed
parameter pytrees.

Contents: the Llama / Qwen2 / Qwen3 / Gemma 3 text decoder (`init_params` makes the pytree, typed
by `LayerParams` / `Projection`; `forward` reads it, online transforms included, and hands back
what it saw when asked, `capture=CAPTURE_KINDS`: hidden states, projection inputs, keys and values,
queries and keys as attention scores them; RMSNorm, RoPE with `linear` and `llama3` scaling,
grouped-query attention (`attention`: dense reference, blocked online-softmax XLA, cuDNN and TPU
splash kernels, chosen automatically; sliding-window layers), SwiGLU or GeGLU, Gemma's sandwich
norms, scaled embeddings and local RoPE base, optional q/k norm and biases, tied or untied
embeddings, explicit `head_dim`, float32 or bfloat16 compute, KV cache; `prefix_token` /
`token_windows` (text windows led by the tokenizer's `<bos>` where it adds one); runs of like
layers under one `lax.scan`, `layer_runs`, pre-stacked once by `stack_layers`); every projection
goes through one function, `effjax.models.linear`; loaders for Hugging Face directories
(safetensors, sharded too; compressed-tensors kernels as `QArray`s, `effjax.models.ct_loader`) and
llama / gemma3 GGUF files (`load`, `load_gguf`); `LMConfig.to_hf` (config.json); `shard_params` for
FSDP + head-parallel meshes. The masked-diffusion LM is the same decoder without the causal mask:
`forward(..., attn_mask=...)` takes any (query, key) structure, with or without a cache;
`bidirectional_forward`; the LLaDA objective (`noise_tokens`: t ~ U(0, 1], each answer token masked
with probability t; `diffusion_loss`: cross-entropy on masked tokens / t per answer token);
`load_llada` for LLaDA safetensors directories by the name map in `effjax/models/diffusion.py`. The
Qwen2.5-VL vision-language model (`effjax.models.vlm`): `VisionConfig` / `VLMConfig` (`from_hf`),
the vision transformer (conv patch embedding as a matmul, 2D rotary embeddings, window attention
blocks and full attention blocks in Qwen's window-major token order, the 2x2 patch merger),
`patchify` (the processor's patch layout), `encode_images`, `rope_index` (3-axis multimodal
position ids and `rope_deltas`), `splice_images` (features over the image placeholders),
`vlm_forward`, `init_vlm_params`, `load_qwen2_5_vl` (both hub name layouts); the decoder takes
input embeddings, (3, b, t) positions (`LMConfig.mrope_section`) and per-layer attention masks, so
a pruned prompt keeps each token's original position.
"""

from effjax.models.api import load
from effjax.models.config import SUPPORTED_ARCHITECTURES, LMConfig, RopeScaling
from effjax.models.decoder import (
    CAPTURE_KINDS,
    KVCache,
    LayerParams,
    LayerStack,
    Params,
    Projection,
    block_forward,
    embed,
    forward,
    init_cache,
    init_params,
    layer_runs,
    param_shapes,
    stack_layers,
)
from effjax.models.diffusion import (
    LLADA_MASK_ID,
    bidirectional_forward,
    diffusion_loss,
    llada_config,
    llada_name_to_path,
    load_llada,
    noise_tokens,
)
from effjax.models.gguf_loader import load_gguf
from effjax.models.hf import hf_name_to_path, load_hf_params, read_config
from effjax.models.layers import apply_rope, linear, rms_norm
from effjax.models.records import LM, VLM, DiffusionLM, check_tokens, prefix_token, token_windows
from effjax.models.sdpa import IMPLEMENTATIONS, Pairs, attention
from effjax.models.sharding import param_partition_specs, shard_params
from effjax.models.vlm import (
    VisionConfig,
    VLMConfig,
    encode_images,
    image_token_count,
    init_vlm_params,
    load_qwen2_5_vl,
    patchify,
    qwen2_5_vl_name_to_path,
    rope_index,
    splice_images,
    vision_geometry,
    vlm_forward,
    vlm_param_shapes,
)

__all__ = [
    "LLADA_MASK_ID",
    "LM",
    "VLM",
    "DiffusionLM",
    "SUPPORTED_ARCHITECTURES",
    "CAPTURE_KINDS",
    "IMPLEMENTATIONS",
    "LayerParams",
    "LayerStack",
    "Pairs",
    "Projection",
    "KVCache",
    "LMConfig",
    "Params",
    "RopeScaling",
    "VLMConfig",
    "VisionConfig",
    "apply_rope",
    "attention",
    "bidirectional_forward",
    "block_forward",
    "check_tokens",
    "diffusion_loss",
    "embed",
    "forward",
    "hf_name_to_path",
    "init_cache",
    "init_params",
    "layer_runs",
    "linear",
    "llada_config",
    "llada_name_to_path",
    "load",
    "load_gguf",
    "load_hf_params",
    "load_llada",
    "noise_tokens",
    "param_partition_specs",
    "param_shapes",
    "prefix_token",
    "read_config",
    "rms_norm",
    "shard_params",
    "stack_layers",
    "token_windows",
    "encode_images",
    "image_token_count",
    "init_vlm_params",
    "load_qwen2_5_vl",
    "patchify",
    "qwen2_5_vl_name_to_path",
    "rope_index",
    "splice_images",
    "vision_geometry",
    "vlm_forward",
    "vlm_param_shapes",
]

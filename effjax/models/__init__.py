"""Models: the Llama/Qwen-family decoder LM in Flax NNX, the masked-diffusion LM on the same
decoder, their loaders and sharding."""

from effjax.models.api import LM, ZOO, check_tokens, load, zoo_path
from effjax.models.config import SUPPORTED_ARCHITECTURES, LMConfig, RopeScaling
from effjax.models.decoder import (
    DecoderLM,
    KVCache,
    Params,
    block_forward,
    embed,
    forward,
    init_cache,
    init_params,
    param_shapes,
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
from effjax.models.layers import apply_rope, attention, linear, rms_norm
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
    "ZOO",
    "SUPPORTED_ARCHITECTURES",
    "DecoderLM",
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
    "read_config",
    "rms_norm",
    "shard_params",
    "zoo_path",
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

"""Visual token pruning: HAWK and its baselines (`hawk`), and the small VLM they are measured
on (`shapes_vlm`)."""

from effjax.pruning.hawk import (
    METHODS,
    PruneConfig,
    Pruned,
    answer_logits,
    check_keep_ratio,
    compact,
    dart_scores,
    fastv_attn_mask,
    fastv_scores,
    hawk_scores,
    head_importance,
    head_qk,
    keep_count,
    keep_mask,
    prune,
    random_scores,
    scatter_visual,
    token_roles,
    visionzip_scores,
)
from effjax.pruning.shapes_vlm import (
    SHAPES_VLM_CONFIG,
    SHAPES_VLM_DIR,
    image_features,
    lm_inputs,
    load_shapes_vlm,
    normalize,
    positions_of,
    train_shapes_vlm,
    training_batch,
)

__all__ = [
    "METHODS", "PruneConfig", "Pruned", "SHAPES_VLM_CONFIG", "SHAPES_VLM_DIR", "answer_logits",
    "check_keep_ratio", "compact", "dart_scores", "fastv_attn_mask", "fastv_scores",
    "hawk_scores", "head_importance", "head_qk", "image_features", "keep_count", "keep_mask",
    "lm_inputs", "load_shapes_vlm", "normalize", "positions_of", "prune", "random_scores",
    "scatter_visual", "token_roles", "train_shapes_vlm", "training_batch", "visionzip_scores",
]

"""Visual token pruning: HAWK and its baselines (`hawk`), and the small VLM they are measured
on (`shapes_vlm`).

Contents: visual token pruning (`hawk`): `hawk_scores` (layer-0 queries of the text after the
image against the visual keys, before RoPE, q.k/sqrt(d) averaged over the text queries per head,
each head's vector L2-normalized, summed with head weights), `head_importance` (each layer-0
head's accuracy drop when ablated on a calibration set, L1-normalized), `keep_mask` (ceil(n x
keep_ratio) per row, original order), `compact` (kept tokens left-padded with their position
ids: no re-indexing, smaller KV cache), `prune(PruneConfig(method=...))` for `none`, `random`,
`fastv` (last-token attention at layer K; later layers masked), `visionzip` (attention received
in the vision encoder's last block), `dart` (norm pivots, least-duplicated tokens), `hawk`;
`answer_logits`. `shapes_vlm`: the small trained Qwen2.5-VL-shaped model (`SHAPES_VLM_CONFIG`;
`train_shapes_vlm`: optax AdamW, resumable, shipped in `effjax/data/zoo/shapes_vlm/`;
`load_shapes_vlm`, `lm_inputs`).
"""

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
    image_features,
    lm_inputs,
    load_shapes_vlm,
    normalize,
    positions_of,
    train_shapes_vlm,
    training_batch,
)

__all__ = [
    "METHODS", "PruneConfig", "Pruned", "SHAPES_VLM_CONFIG", "answer_logits",
    "check_keep_ratio", "compact", "dart_scores", "fastv_attn_mask", "fastv_scores",
    "hawk_scores", "head_importance", "head_qk", "image_features", "keep_count", "keep_mask",
    "lm_inputs", "load_shapes_vlm", "normalize", "positions_of", "prune", "random_scores",
    "scatter_visual", "token_roles", "train_shapes_vlm", "training_batch", "visionzip_scores",
]

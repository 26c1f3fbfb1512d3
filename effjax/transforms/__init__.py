"""Function-preserving transforms of parameter pytrees: Hadamard and learned rotations,
smoothing scales, online (Kronecker, block-diagonal and per-token-type) transforms."""

from effjax.transforms import online
from effjax.transforms.fold import (
    add_block_transform,
    add_input_transform,
    fuse_norms,
    rotate_residual,
    rotate_values,
    smooth,
)
from effjax.transforms.hadamard import (
    hadamard,
    hadamard_factors,
    hadamard_pair,
    random_hadamard,
    random_orthogonal,
)
from effjax.transforms.online import (
    apply_transform,
    block_apply,
    clip_blocks,
    gpk_apply,
    kron_apply,
    per_type_apply,
)

__all__ = [
    "add_block_transform",
    "add_input_transform",
    "apply_transform",
    "block_apply",
    "clip_blocks",
    "gpk_apply",
    "fuse_norms",
    "hadamard",
    "hadamard_factors",
    "hadamard_pair",
    "kron_apply",
    "online",
    "per_type_apply",
    "random_hadamard",
    "random_orthogonal",
    "rotate_residual",
    "rotate_values",
    "smooth",
]

"""Function-preserving transforms of parameter pytrees: Hadamard and learned rotations,
smoothing scales, online (Kronecker, block-diagonal and per-token-type) transforms.

Contents: function-preserving transforms of parameter pytrees (each leaves the float model's
logits unchanged within 1e-5, tested): `fuse_norms` (RMSNorm weights into the next projections;
a tied head is untied), `rotate_residual(params, q)`, `rotate_values(params, r, *, config,
online_kv)`, `add_input_transform(params, pattern, left, right)` (an online Kronecker transform
x -> x (left (x) right) before matching projections, carried in the pytree as a typed
`input_transform` leaf and applied by the layer it feeds), `add_block_transform(params, pattern,
BlockDiag | GPK)` (block-diagonal online transforms; `block_apply`, `gpk_apply`, `clip_blocks`:
no energy crosses a block boundary), the typed transforms (`Kron`, `BlockDiag`, `GPK`,
`PerType`: each token times its type's matrix, the types given to `forward(...,
token_types=...)`), `smooth(params, scales)`; Hadamard matrices of every order Sylvester and
Paley I/II reach (`hadamard`, `hadamard_pair` as Kronecker factors, `random_hadamard`,
`random_orthogonal`).
"""

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
    GPK,
    BlockDiag,
    Kron,
    PerType,
    Transform,
    block_apply,
    clip_blocks,
    gpk_apply,
    kron_apply,
    per_type_apply,
)

__all__ = [
    "GPK",
    "BlockDiag",
    "Kron",
    "PerType",
    "Transform",
    "add_block_transform",
    "add_input_transform",
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

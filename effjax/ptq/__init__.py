"""Post-training quantization: calibration statistics and methods over parameter pytrees.

Contents: post-training quantization over parameter pytrees, each method `method(params, calib,
recipe, **options) -> params`: `calibrate(params, windows, *, config)` -> per-layer `LayerStats`
(X^T X, token count, per-channel absmax, a bounded input sample) captured from the decoder's
linear layers by one jitted forward per batch; `calibrate_sequential(params, windows,
quantize_layer, *, config)` (layer by layer: each layer's statistics from the already-quantized
layers before it); `rtn`; `gptq` (and `gptq_quantize` for one layer: blocked lazy updates from
the upper Cholesky factor of the damped inverse Hessian, onto every effjax format, group scales
fixed from the updated weights as each group is reached or up front, act-order, dead inputs
zeroed, dampening raised if the Hessian is not positive definite, optional Hessian-weighted
scale search); `mr_gptq` (block-wise Hadamard of the format's group as an online input
transform, calibration statistics rotated exactly, GPTQ with scale search); `scale_opt` (MX
pre-scale optimization: each block's E8M0 exponent offset by -1/0/+1, NVFP4's E4M3 scale or
INT/FP8's scale searched by Hessian-weighted error; `search_scales`, `quantize_searched`);
`smoothquant` (`smoothquant_scales`, alpha migration into the norms and up_proj); `awq`
(`awq_scales`: grid search of mean|x|^a on the calibration output error, then a clip ratio per
output channel and group); `quarot(params, *, config, key)` (fused norms, random-Hadamard
residual rotation, value/KV Hadamard with online query/key rotation, online Hadamard before
down_proj); `spinquant_rotations` (R1 and R2 learned from random Hadamard starts by
`cayley_sgd`, an optax transformation on the orthogonal group, through the fake-quantized
model's LM loss); `flatquant` (learnable Kronecker affine transforms before every projection
group and learnable weight clipping, trained layer by layer with Adam on the quantized layer's
output error); `batquant` (block-diagonal affine transforms aligned with the 32-element MX
blocks, each block kron(G, P_k) with a global G and private P_k (GPK), or a full or orthogonal
block; invertible by construction as Hadamard x Cayley rotation x positive diagonal x rotation,
with a closed-form inverse; block-wise weight and activation clipping; trained by the same
layer-wise loop as FlatQuant; `batquant_parameter_count`); `freeact(params, windows, recipe,
config=..., context=LayerContext(...))` (FreeAct: one static weight transform M = FlatQuant's
Kronecker P^-1 and, per token type k, an activation transform T_k = P + Q_k Z_k, Q_k the
complement of type k's calibration row space (`type_grams`, `complement_basis`: the fewest top
eigenvectors holding `energy` of the spectrum), so x T_k M W = x W on that space; Z_k, M and
clipping learned layer by layer on the type-balanced quantized error; the forward's
`token_types` picks each token's T_k inside one compile; `type_transforms`); the layer-wise
loop's `LayerContext` carries a model's layer-0 embeddings, positions (3-axis for a VLM),
attention mask (bidirectional / span masks for a diffusion LM) and token types; `run(lm, method,
recipe, calib_texts, sequential=...)` -> `PTQResult` (the quantized `LM`, stage times, peak RSS)
for the methods in `METHODS`.
"""

from effjax.ptq.batquant import batquant, batquant_parameter_count, cayley, gpk_split
from effjax.ptq.calibrate import LayerStats, calibrate, calibrate_sequential
from effjax.ptq.flatquant import flatquant, kron_split
from effjax.ptq.freeact import complement_basis, freeact, type_grams, type_transforms
from effjax.ptq.gptq import gptq_quantize
from effjax.ptq.layerwise import LayerContext
from effjax.ptq.methods import gptq, mr_gptq, rtn, scale_opt
from effjax.ptq.pipeline import METHODS, PTQResult, calibration_windows, peak_rss_mb, quarot, run
from effjax.ptq.scales import quantize_searched, search_scales
from effjax.ptq.smoothing import awq, awq_scales, smoothquant, smoothquant_scales
from effjax.ptq.spinquant import cayley_sgd, orthogonality_error, spinquant_rotations

__all__ = [
    "METHODS",
    "LayerContext",
    "LayerStats",
    "PTQResult",
    "awq",
    "awq_scales",
    "batquant",
    "batquant_parameter_count",
    "calibrate",
    "cayley",
    "cayley_sgd",
    "complement_basis",
    "calibrate_sequential",
    "calibration_windows",
    "flatquant",
    "freeact",
    "gptq",
    "gptq_quantize",
    "gpk_split",
    "kron_split",
    "mr_gptq",
    "orthogonality_error",
    "peak_rss_mb",
    "quantize_searched",
    "quarot",
    "rtn",
    "run",
    "scale_opt",
    "search_scales",
    "smoothquant",
    "smoothquant_scales",
    "spinquant_rotations",
    "type_grams",
    "type_transforms",
]

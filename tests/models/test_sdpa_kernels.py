"""effjax.models.sdpa_kernels: the TPU splash kernel and the cuDNN path lower for their
platforms on this CPU-only machine (jax.export, as tests/pallas_kernels/test_lowering.py
does for our own kernels), forward and backward; splash runs in the Pallas interpreter and
matches the dense reference; the `*_applies` rules and the errors.

The cuDNN custom calls are not on export's stable list, so their check is disabled
(inspection, not storage). JAX's cuDNN wrapper asks the local CUDA plugin for the cuDNN
version while tracing; a CPU-only jaxlib has none, so a version (9.10) is stood in: it
feeds Python-side checks only, not the lowered module.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.models import sdpa_kernels as K
from effjax.models.sdpa import allowed_pairs, attention, dense_attention

S = jax.ShapeDtypeStruct
MESHES = {
    "tpu": jax.sharding.AbstractMesh((1,), ("x",), abstract_device=jax.sharding.AbstractDevice(
        device_kind="TPU v5 lite", num_cores=1, platform="tpu")),
    "cuda": jax.sharding.AbstractMesh((1,), ("x",), abstract_device=jax.sharding.AbstractDevice(
        device_kind="NVIDIA H100 80GB HBM3", num_cores=None, platform="gpu")),
}
CUDNN_CALLS = ["__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward",
               "__cudnn$fmhaScaleBiasSoftmax", "__cudnn$fmhaScaleBiasSoftmaxBackward"]
Q = S((1, 1024, 8, 64), jnp.bfloat16)
KV = S((1, 1024, 2, 64), jnp.bfloat16)
VALID = S((1, 1024), jnp.bool_)
MASKS = [(True, None, False), (True, 256, True), (False, None, True)]
IDS = ["causal", "causal-window-valid", "full-valid"]


def targets(text: str) -> set[str]:
    return set(re.findall(r"custom_call @([\w$.]+)", text))


def export(fn, platform, *args):
    checks = ([jax.export.DisabledSafetyCheck.custom_call(n) for n in CUDNN_CALLS]
              if platform == "cuda" else [])
    with jax.sharding.use_abstract_mesh(MESHES[platform]):
        return jax.export.export(jax.jit(fn), platforms=[platform], disabled_checks=checks)(*args)


def grad_of(fn):
    return jax.grad(lambda q, k, v, m: fn(q, k, v, m).astype(jnp.float32).sum(), argnums=(0, 1, 2))


@pytest.fixture
def cudnn_version(monkeypatch):
    from jax._src.cudnn import fused_attention_stablehlo as fa
    monkeypatch.setattr(fa, "check_cudnn_version", lambda: 91000)


@pytest.mark.parametrize("causal, window, valid", MASKS, ids=IDS)
def test_splash_lowers_for_tpu_forward_and_backward(causal, window, valid):
    def fn(q, k, v, m):
        return attention(q, k, v, causal=causal, window=window, key_valid=m if valid else None,
                         implementation="splash")

    text = export(fn, "tpu", Q, KV, KV, VALID).mlir_module()
    assert targets(text) == {"tpu_custom_call"}
    assert ("splash_mha_fwd_segmented_no_residuals" if valid
            else "splash_mha_fwd_no_residuals") in text
    grad = export(grad_of(fn), "tpu", Q, KV, KV, VALID)
    assert "splash_mha_dkv" in grad.mlir_module() and "splash_mha_dq" in grad.mlir_module()
    assert [a.shape for a in grad.out_avals] == [Q.shape, KV.shape, KV.shape]


@pytest.mark.parametrize("causal, window, valid", MASKS, ids=IDS)
def test_cudnn_lowers_for_cuda_forward_and_backward(cudnn_version, causal, window, valid):
    def fn(q, k, v, m):
        return attention(q, k, v, causal=causal, window=window, key_valid=m if valid else None,
                         implementation="cudnn")

    text = export(fn, "cuda", Q, KV, KV, VALID).mlir_module()
    fused = "__cudnn$fmhaScaleBiasSoftmax" if valid else "__cudnn$fmhaSoftmax"
    assert targets(text) == {fused}
    if window is not None:
        assert "sliding_window_length\\22: 256" in text
    grad = export(grad_of(fn), "cuda", Q, KV, KV, VALID)
    assert targets(grad.mlir_module()) == {fused, fused + "Backward"}


@pytest.mark.parametrize("causal, window, valid", [(True, None, False), (True, 64, True),
                                                   (False, 100, True)])
def test_splash_in_the_interpreter_matches_dense(causal, window, valid):
    """float32, t = s = 256 (two 128-blocks, GQA 4:2); rows with no allowed key aside."""
    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (2, 256, 4, 64))
    k, v = (jax.random.normal(key, (2, 256, 2, 64)) for key in keys[1:3])
    key_valid = jax.random.bernoulli(keys[3], 0.7, (2, 256)) if valid else None
    got = K.splash(q, k, v, causal=causal, window=window, key_valid=key_valid, interpret=True)
    allowed = allowed_pairs(256, 256, batch=2, causal=causal, window=window, key_valid=key_valid)
    want = dense_attention(q, k, v, allowed)
    rows = np.asarray(allowed.any(-1))
    np.testing.assert_allclose(np.asarray(got)[rows], np.asarray(want)[rows], atol=2e-5)


def test_applies_rules_and_errors():
    q = jnp.zeros((1, 256, 4, 64), jnp.bfloat16)
    assert K.splash_applies(q, 256, causal=True)
    assert not K.splash_applies(q, 200)  # not a multiple of 128
    assert not K.splash_applies(q, 256, q_offset=jnp.int32(0))  # a traced offset
    assert not K.splash_applies(q, 256, mask=jnp.ones((1, 256, 256), bool))
    assert not K.splash_applies(q.astype(jnp.float16), 256)
    assert K.cudnn_applies(q, 256, causal=True, window=128)
    assert not K.cudnn_applies(q.astype(jnp.float32), 256)
    assert not K.cudnn_applies(q, 256, window=128)  # a window needs causal
    assert not K.cudnn_applies(q, 256, key_valid=jnp.ones((1, 256), bool))  # a dense bias
    assert not K.cudnn_applies(jnp.zeros((1, 256, 4, 256), jnp.bfloat16), 256)
    k = jnp.zeros((1, 200, 2, 64), jnp.bfloat16)
    with pytest.raises(ValueError, match="multiples of 128"):
        K.splash(q[:, :200], k, k)
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        K.cudnn(q.astype(jnp.float32), k, k)

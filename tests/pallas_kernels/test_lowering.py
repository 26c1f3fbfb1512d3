"""Every kernel lowers for TPU (Mosaic) and GPU (Triton) without the hardware, via jax.export.

TPU lowering needs the chip's description (lane and MXU sizes): an abstract mesh names a
"TPU v5 lite" device (and an H100 for CUDA). The Triton custom call is exported with its
compatibility check off (the export is for inspection, not for storage). Where a kernel
cannot lower, EXPECTED says so and why, and the test checks that exact failure (so a fix,
or a new failure, shows up).
"""

import jax
import jax.numpy as jnp
import pytest

import effjax.formats as F
import pallas_kernels as K

S = jax.ShapeDtypeStruct
X = S((256, 512), jnp.float32)
INT4 = F.get_format("int4", granularity="group", group_size=128)
MESHES = {  # JAX >= 0.11 wants an abstract device of the target's kind on any host
    "tpu": jax.sharding.AbstractMesh((1,), ("x",), abstract_device=jax.sharding.AbstractDevice(
        device_kind="TPU v5 lite", num_cores=1, platform="tpu")),
    "cuda": jax.sharding.AbstractMesh((1,), ("x",), abstract_device=jax.sharding.AbstractDevice(
        device_kind="NVIDIA H100 80GB HBM3", num_cores=None, platform="gpu")),
}
# HiF4 keeps its 24 level bits in 3 bytes per 64-element unit (4.5 bits per element); the
# Triton lowering only takes arrays whose sizes are powers of two.
HIF4_CUDA = "power of 2|Only 2-argument stack"
# MXFP6 packs four codes in three bytes: rows of 3k/4 bytes, not a power of two either.
EXPECTED = {("hif4", "cuda"): HIF4_CUDA, ("mxfp6_e2m3", "cuda"): "power of 2"}


def _weight(fmt):
    return jax.eval_shape(lambda a: F.quantize(a, fmt, axis=0), S((512, 256), jnp.float32))


def _act(fmt):
    return jax.eval_shape(lambda a: F.quantize(a, fmt, axis=1), X)


CASES = {
    "block_quantize": (lambda be, f: lambda a: K.block_quantize(a, f, backend=be), lambda f: (X,)),
    "block_dequantize": (lambda be, f: lambda q: K.block_dequantize(q, backend=be),
                         lambda f: (_act(f),)),
    "dequant_matmul": (lambda be, f: lambda a, w: K.dequant_matmul(a, w, backend=be),
                       lambda f: (X, _weight(f))),
    "fused_fake_quant": (lambda be, f: lambda a: K.fused_fake_quant(a, f, backend=be),
                         lambda f: (X,)),
    "scaled_matmul": (lambda be, f: lambda a, w: K.scaled_matmul(a, w, backend=be),
                      lambda f: (_act(f), _weight(f))),
}
FORMATS = {
    "block_quantize": ["mxfp8_e4m3", "mxfp6_e2m3", "mxfp4", "mxint8", "nvfp4", "hif4"],
    "block_dequantize": ["mxfp8_e4m3", "mxfp4", "nvfp4", "hif4"],
    "dequant_matmul": ["mxfp8_e4m3", "mxfp4", "nvfp4", "hif4", INT4],
    "fused_fake_quant": ["mxfp4", "hif4"],
    "scaled_matmul": ["mxfp8_e4m3", "mxfp4", "nvfp4"],
}


@pytest.mark.parametrize("kernel, fmt", [(k, f) for k, fs in FORMATS.items() for f in fs],
                         ids=lambda v: v if isinstance(v, str) else v.name)
@pytest.mark.parametrize("platform", ["tpu", "cuda"])
def test_kernel_lowers(kernel, fmt, platform):
    make, args = CASES[kernel]
    name = fmt if isinstance(fmt, str) else fmt.name
    fn = jax.jit(make("tpu" if platform == "tpu" else "gpu", fmt))
    checks = [jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
    expected = EXPECTED.get((name, platform))
    with jax.sharding.use_abstract_mesh(MESHES[platform]):
        if expected is None:
            exported = jax.export.export(fn, platforms=[platform], disabled_checks=checks)(
                *args(fmt))
            text = exported.mlir_module()
            assert ("tpu_custom_call" if platform == "tpu" else "triton") in text
        else:
            with pytest.raises((ValueError, NotImplementedError), match=expected):
                jax.export.export(fn, platforms=[platform], disabled_checks=checks)(*args(fmt))


@pytest.mark.parametrize("kernel", ["block_quantize", "fused_fake_quant"])
def test_default_gpu_tiles_lower_for_ragged_rows(kernel):
    """40 rows, 768 columns: the default GPU tiles are powers of two all the same."""
    make, _ = CASES[kernel]
    fn = jax.jit(make("gpu", "mxfp4"))
    checks = [jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
    with jax.sharding.use_abstract_mesh(MESHES["cuda"]):
        exported = jax.export.export(fn, platforms=["cuda"], disabled_checks=checks)(
            S((40, 768), jnp.float32))
    assert "triton" in exported.mlir_module()

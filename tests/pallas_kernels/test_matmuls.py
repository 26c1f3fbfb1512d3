"""dequant_matmul and scaled_matmul against their references (computed the kernels' way) and
against effjax.formats' untiled products, in interpret mode."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import effjax.formats as F
import pallas_kernels as K
from tests.pallas_kernels.helpers import KDIM, M, N, assert_same_sums, heavy_tailed, lowerable

TILES = dict(block_m=16, block_n=32, block_k=128)  # 3 x 3 grid, 2 K steps, ragged rows
INT4_G64 = F.get_format("int4", granularity="group", group_size=64)


@pytest.mark.parametrize("fmt", lowerable("mxfp4", "nvfp4", "hif4", "mxfp8_e4m3", "mxfp6_e2m3",
                                           "mxint8", INT4_G64))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dequant_matmul(fmt, dtype):
    x = heavy_tailed((M, KDIM), seed=1, dtype=dtype)
    w = F.quantize(heavy_tailed((KDIM, N), seed=2), fmt, axis=0)
    got = K.dequant_matmul(x, w, **TILES)
    ref = K.dequant_matmul_reference(x, w, block_k=TILES["block_k"])
    assert got.dtype == dtype and got.shape == (M, N)
    assert_same_sums(got, ref)
    dense = jnp.dot(x.astype(jnp.float32), F.dequantize(w, jnp.float32),
                    precision=jax.lax.Precision.HIGHEST)
    # bf16: the weight tile and the output are rounded to bfloat16 (relative 2^-9 each).
    tol = 1e-6 if dtype == jnp.float32 else 1e-2
    np.testing.assert_allclose(np.asarray(got, np.float32), dense, rtol=0,
                               atol=tol * float(jnp.max(jnp.abs(dense))))


@pytest.mark.parametrize("fa, fb", [("mxfp8_e4m3", "mxfp8_e4m3"), ("mxfp4", "mxfp4"),
                                    ("nvfp4", "nvfp4"), ("mxfp8_e5m2", "mxfp4")])
def test_scaled_matmul(fa, fb):
    a = F.quantize(heavy_tailed((M, KDIM), seed=3), fa, axis=1)
    b = F.quantize(heavy_tailed((KDIM, N), seed=4), fb, axis=0)
    got = K.scaled_matmul(a, b, **TILES)
    assert_same_sums(got, K.scaled_matmul_reference(a, b, block_k=128))
    np.testing.assert_allclose(got, F.scaled_matmul(a, b), rtol=1e-5, atol=1e-4)


def test_bad_input():
    x = heavy_tailed((M, KDIM))
    w = F.quantize(heavy_tailed((KDIM, N)), "mxfp4", axis=0)
    with pytest.raises(ValueError, match=r"x must be \(m, k\) with k=256 .*got \(40, 128\)"):
        K.dequant_matmul(x[:, :128], w)
    with pytest.raises(ValueError, match=r"expected block_n=64 to divide n=96"):
        K.dequant_matmul(x, w, block_n=64)
    with pytest.raises(ValueError, match=r"w.codes has shape \(96, 127\), expected \(96, 128\)"):
        K.dequant_matmul(x, dataclasses.replace(w, codes=w.codes[:, :127]))
    with pytest.raises(ValueError, match="x must be float32, bfloat16 or float16, got int32"):
        K.dequant_matmul(np.ones((M, KDIM), np.int32), w)
    with pytest.raises(ValueError, match=r"fmt must be one of .* got fp8_e4m3 \(tensor\)"):
        K.dequant_matmul(x, F.quantize(heavy_tailed((KDIM, N)), "fp8_e4m3", axis=0))
    a = F.quantize(x, "mxfp8_e4m3", axis=1)
    with pytest.raises(ValueError, match="contraction mismatch"):
        K.scaled_matmul(a, F.quantize(heavy_tailed((KDIM, N)), "nvfp4", axis=0))
    with pytest.raises(ValueError, match=r"fmt must be one of .* got hif4"):
        K.scaled_matmul(a, F.quantize(heavy_tailed((KDIM, N)), "hif4", axis=0))

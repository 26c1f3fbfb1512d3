"""The dequantize kernel against effjax.formats.dequantize, in interpret mode."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

import effjax.formats as F
import pallas_kernels as K
from tests.pallas_kernels.helpers import KDIM, ON_TRITON, TILES, M, heavy_tailed, lowerable


@pytest.mark.parametrize("fmt", lowerable(*K.BLOCK_FORMATS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_values_equal_the_reference(fmt, dtype):
    q = F.quantize(heavy_tailed((M, KDIM)), fmt, axis=1)
    got = K.block_dequantize(q, dtype, **TILES)
    assert got.dtype == dtype and got.shape == (M, KDIM)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(K.dequantize_reference(q, dtype)))


def test_families_and_bad_input():
    x = heavy_tailed((M, KDIM))
    families = [(K.mx_dequantize, "mxfp4"), (K.nvfp4_dequantize, "nvfp4")]
    for fn, name in families + ([] if ON_TRITON else [(K.hif4_dequantize, "hif4")]):
        q = F.quantize(x, name, axis=1)
        np.testing.assert_array_equal(fn(q), F.dequantize(q))
    q = F.quantize(x, "mxfp4", axis=1)
    with pytest.raises(ValueError, match="expected a nvfp4 format, got mxfp4"):
        K.nvfp4_dequantize(q)
    with pytest.raises(ValueError, match="q must be 2-D and quantized along axis 1"):
        K.block_dequantize(F.quantize(x, "mxfp4", axis=0))
    with pytest.raises(ValueError, match=r"q.scale has shape \(40, 7\), expected \(40, 8\)"):
        K.block_dequantize(dataclasses.replace(q, scale=q.scale[:, :7]))
    with pytest.raises(ValueError, match="q must be a QArray, got ArrayImpl"):
        K.block_dequantize(x)

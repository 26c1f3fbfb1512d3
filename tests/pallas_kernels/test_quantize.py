"""The quantize kernel against effjax.formats.quantize, in interpret mode."""

import jax.numpy as jnp
import numpy as np
import pytest

import effjax.formats as F
import pallas_kernels as K
from tests.pallas_kernels import helpers
from tests.pallas_kernels.helpers import KDIM, TILES, M, assert_same_qarray, heavy_tailed, lowerable


@pytest.mark.parametrize("fmt", lowerable(*K.BLOCK_FORMATS, F.get_format("nvfp4", two_level=False),
                                           F.get_format("mxfp8_e4m3", scale_mode="rceil")))
def test_codes_and_scales_equal_the_reference(fmt):
    x = heavy_tailed((M, KDIM))
    x = x.at[3, :32].set(0.0).at[5, 7].set(1e4)  # an all-zero block and an outlier
    assert_same_qarray(K.block_quantize(x, fmt, **TILES), K.quantize_reference(x, fmt))


def test_bfloat16_input_and_default_tiles():
    x = heavy_tailed((M, KDIM), seed=1, dtype=jnp.bfloat16)
    assert_same_qarray(K.block_quantize(x, "mxfp4"), F.quantize(x, "mxfp4", axis=1))


def test_families_and_bad_input():
    x = heavy_tailed((M, KDIM))
    assert_same_qarray(K.mx_quantize(x, "mxfp8_e5m2"), F.quantize(x, "mxfp8_e5m2", axis=1))
    assert_same_qarray(K.nvfp4_quantize(x, fmt="nvfp4"), F.quantize(x, "nvfp4", axis=1))
    if not helpers.ON_TRITON:
        assert_same_qarray(K.hif4_quantize(x, "hif4"), F.quantize(x, "hif4", axis=1))
    with pytest.raises(ValueError, match="expected a mx format, got nvfp4"):
        K.mx_quantize(x, "nvfp4")
    with pytest.raises(ValueError, match=r"expected block_k=96 to divide k=256"):
        K.block_quantize(x, "mxfp4", block_k=96)
    with pytest.raises(ValueError, match=r"expected block_k=24 to be a multiple of 16"):
        K.block_quantize(x[:, :96], "nvfp4", block_k=24)
    with pytest.raises(ValueError, match=r"expected k=40 to be a multiple of mxfp4's block 32"):
        K.block_quantize(x[:, :40], "mxfp4")
    with pytest.raises(ValueError, match="x must be float32, bfloat16 or float16, got int32"):
        K.block_quantize(x.astype(jnp.int32), "mxfp4")
    with pytest.raises(ValueError, match=r"fmt must be one of .* got int8 \(channel\)"):
        K.block_quantize(x, "int8")
    with pytest.raises(ValueError, match=r"x must be 2-D \(m, k\), got shape \(2, 40, 256\)"):
        K.block_quantize(jnp.stack([x, x]), "mxfp4")
    with pytest.raises(ValueError, match="backend must be one of"):
        K.block_quantize(x, "mxfp4", backend="metal")


@pytest.mark.parametrize("fmt", lowerable("mxfp4", "nvfp4", "hif4"))
def test_non_finite_blocks_follow_the_formats_policy(fmt):
    # a NaN and an Inf each make their block's scale NaN (the codes stored under a NaN scale
    # are not specified); NVFP4's global scale comes from the finite values, so every other
    # block equals the reference's bit for bit (effjax.formats' policy)
    x = heavy_tailed((M, KDIM)).at[2, 5].set(jnp.nan).at[9, 200].set(-jnp.inf)
    got, ref = K.block_quantize(x, fmt, **TILES), F.quantize(x, fmt, axis=1)
    for name, a in ref.stored().items():
        np.testing.assert_array_equal(np.atleast_1d(np.asarray(getattr(got, name))).view(np.uint8),
                                      np.atleast_1d(np.asarray(a)).view(np.uint8), err_msg=name)
    values, expected = F.dequantize(got, jnp.float32), F.dequantize(ref, jnp.float32)
    np.testing.assert_array_equal(values, expected)  # NaN where the reference has NaN
    block = {"nvfp4": 16, "mxfp4": 32, "hif4": 64}[fmt]
    assert int(jnp.isnan(values).sum()) == 2 * block

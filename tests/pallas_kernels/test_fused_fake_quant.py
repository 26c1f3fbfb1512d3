"""The fused fake-quant kernel: forward and gradient against effjax.formats.fake_quant."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import effjax.formats as F
import pallas_kernels as K
from tests.pallas_kernels.helpers import KDIM, TILES, M, heavy_tailed, lowerable

INT4_G32 = F.get_format("int4", granularity="group", group_size=32)


@pytest.mark.parametrize("fmt", lowerable("mxfp8_e4m3", "mxfp4", "nvfp4", "hif4", INT4_G32))
@pytest.mark.parametrize("ste", ["identity", "clipped"])
def test_forward_and_gradient_equal_the_reference(fmt, ste):
    x = heavy_tailed((M, KDIM))
    g = jax.random.normal(jax.random.PRNGKey(9), x.shape)

    def loss(fn):
        return jax.value_and_grad(lambda v: jnp.sum(fn(v) * g))

    (v1, g1) = loss(lambda v: K.fused_fake_quant(v, fmt, ste=ste, **TILES))(x)
    (v2, g2) = loss(lambda v: K.fused_fake_quant_reference(v, fmt, ste=ste))(x)
    np.testing.assert_array_equal(K.fused_fake_quant(x, fmt, ste=ste, **TILES),
                                  K.fused_fake_quant_reference(x, fmt, ste=ste))
    np.testing.assert_array_equal(g1, g2)
    assert float(v1) == float(v2)
    if ste == "clipped":  # some elements really are clipped, so the mask is exercised
        assert 0 < float(jnp.mean(g1 == 0)) < 0.2


def test_jit_compiles_once_and_bad_input():
    x = heavy_tailed((M, KDIM))
    step = jax.jit(jax.grad(lambda v: jnp.sum(K.fused_fake_quant(v, "mxfp4", **TILES) ** 2)))
    step(x)
    step(x + 1)
    assert step._cache_size() == 1
    with pytest.raises(ValueError, match="ste must be one of"):
        K.fused_fake_quant(x, "mxfp4", ste="soft")
    with pytest.raises(ValueError, match="fmt must be symmetric"):
        K.fused_fake_quant(x, F.get_format("int4", granularity="group", group_size=32,
                                           symmetric=False))

"""Block-scaled matmuls: our XLA path equals jax.lax.scaled_dot bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import effjax.formats as F
from effjax.formats.matmul import scaled_matmul

PAIRS = [("mxfp8_e4m3", "mxfp8_e4m3"),  # mixed pairs in the slow tier
         pytest.param("mxfp8_e5m2", "mxfp8_e4m3", marks=pytest.mark.slow), ("mxfp4", "mxfp4"),
         pytest.param("mxfp8_e4m3", "mxfp4", marks=pytest.mark.slow), ("nvfp4", "nvfp4")]


@pytest.mark.parametrize("fa, fb", PAIRS)
def test_xla_path_equals_scaled_dot_bit_for_bit(fa, fb):
    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(ka, (32, 256)) * 3
    w = jax.random.t(kb, 3.0, (256, 24))
    qa, qb = F.quantize(x, fa, axis=1), F.quantize(w, fb, axis=0)
    ours = jax.jit(lambda a, b: scaled_matmul(a, b, impl="xla"))(qa, qb)
    ref = jax.jit(scaled_matmul)(qa, qb)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))
    # and both are the product of the dequantized operands (float64 reference)
    exact = np.asarray(F.dequantize(qa), np.float64) @ np.asarray(F.dequantize(qb), np.float64)
    np.testing.assert_allclose(np.asarray(ours), exact, rtol=1e-5, atol=1e-4)
    jaxpr = str(jax.make_jaxpr(scaled_matmul)(qa, qb))
    assert "f8_e4m3fn" in jaxpr or "f4_e2m1fn" in jaxpr


def test_scaled_matmul_bad_input():
    x = jnp.ones((4, 64))
    with pytest.raises(ValueError, match="must be one of"):
        scaled_matmul(F.quantize(x, "int8", axis=1), F.quantize(x.T, "mxfp4", axis=0))
    with pytest.raises(ValueError, match="quantized along axis 0"):
        scaled_matmul(F.quantize(x, "mxfp4", axis=1), F.quantize(x.T, "mxfp4", axis=1))
    with pytest.raises(ValueError, match="contraction mismatch"):
        scaled_matmul(F.quantize(x, "mxfp4", axis=1), F.quantize(x.T, "nvfp4", axis=0))
    with pytest.raises(ValueError, match="impl must be"):
        scaled_matmul(F.quantize(x, "mxfp4", axis=1), F.quantize(x.T, "mxfp4", axis=0),
                      impl="pallas")

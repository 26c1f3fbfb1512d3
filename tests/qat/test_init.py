import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax import qat
from effjax.data import arithmetic as ar
from effjax.formats import dequantize, get_format
from effjax.ptq import calibrate, gptq, rtn
from effjax.quant import recipe


@pytest.fixture(scope="module")
def windows():
    return ar.text_windows(ar.problem_text(0, 8 * 64), num_windows=8, window=64)


@pytest.mark.parametrize("fmt", [
    get_format("int2", granularity="group", group_size=32, symmetric=False),
    pytest.param(get_format("mxfp4"), marks=pytest.mark.slow)])  # 17 s of MXFP4 GPTQ compiles
def test_gptq_init_is_the_gptq_grid(tiny, windows, fmt):
    config, params = tiny
    r = recipe(fmt, pattern="_proj$")
    init = qat.ptq_init(params, "gptq", r, windows, config=config)
    ref = gptq(params, calibrate(params, jnp.asarray(windows), progress=False, config=config), r,
               progress=False)
    name = ("layers", 1, "mlp", "down_proj", "kernel")
    got, want = init, ref
    for k in name:
        got, want = got[k], want[k]
    np.testing.assert_array_equal(got, dequantize(want, jnp.float32))
    q = qat.ptq_quantize(params, "gptq", r, windows, config=config)
    for k in name:
        q = q[k]
    np.testing.assert_array_equal(dequantize(q, jnp.float32), got)
    # fake quantization of the init recomputes the group scales: most weights keep GPTQ's
    # value (error compensation can leave a group's extremes off the end codes)
    fq = qat.fake_quant_params(init, r)
    for k in name:
        fq = fq[k]
    assert np.mean(np.abs(np.asarray(fq) - np.asarray(got)) < 1e-6) > 0.9
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(init))


def test_rtn_init_and_bad_input(tiny, windows):
    config, params = tiny
    r = recipe(get_format("int4", granularity="group", group_size=32), pattern="_proj$")
    init = qat.ptq_init(params, "rtn", r, config=config)
    k = rtn(params, None, r)["layers"][0]["attn"]["v_proj"]["kernel"]
    np.testing.assert_array_equal(init["layers"][0]["attn"]["v_proj"]["kernel"],
                                  dequantize(k, jnp.float32))
    np.testing.assert_array_equal(init["embed"]["embedding"], params["embed"]["embedding"])
    # RTN's grid comes back exactly through the straight-through quantizer
    np.testing.assert_array_equal(qat.fake_quant_params(init, r)["layers"][0]["attn"][
        "v_proj"]["kernel"], init["layers"][0]["attn"]["v_proj"]["kernel"])
    with pytest.raises(ValueError, match="method must be one of"):
        qat.ptq_init(params, "quarot", r, windows, config=config)
    with pytest.raises(ValueError, match="needs calib_tokens"):
        qat.ptq_init(params, "gptq", r, config=config)

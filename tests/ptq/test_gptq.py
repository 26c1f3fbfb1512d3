"""GPTQ against a float64 NumPy reference of the OBS update, and against RTN on every format."""

import jax.numpy as jnp
import numpy as np
import pytest

import effjax.formats as F
from effjax.ptq import gptq_quantize

INT4_G32 = F.get_format("int4", granularity="group", group_size=32)


def _layer(d_in=128, d_out=24, n=1024, seed=0):
    """Correlated inputs (a low-rank mixture plus noise), the regime where GPTQ matters."""
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 16) @ rng.randn(16, d_in) + 0.3 * rng.randn(n, d_in)
    w = rng.randn(d_in, d_out) * 0.1
    return x.astype(np.float32), w.astype(np.float32)


def _reference_int4(w, x, group=None, damp=0.01):
    """Textbook GPTQ in float64, one column at a time, symmetric INT4 (qmax 7) with scales
    per output row: over all inputs, or per group fixed when the group's first column is
    reached (from the updated weights)."""
    w = w.T.astype(np.float64).copy()  # (d_out, d_in)
    h = 2 * x.T.astype(np.float64) @ x.astype(np.float64) / x.shape[0]
    h += damp * np.mean(np.diag(h)) * np.eye(h.shape[0])
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    q = np.zeros_like(w)
    scale = np.abs(w).max(1) / 7 if group is None else None
    for j in range(w.shape[1]):
        if group is not None and j % group == 0:
            scale = np.abs(w[:, j:j + group]).max(1) / 7
        q[:, j] = np.clip(np.round(w[:, j] / scale), -7, 7) * scale
        err = (w[:, j] - q[:, j]) / u[j, j]
        w[:, j + 1:] -= np.outer(err, u[j, j + 1:])
    return q.T


@pytest.mark.parametrize("fmt, group", [("int4", None), (INT4_G32, 32)])
def test_equals_float64_obs_reference(fmt, group):
    x, w = _layer()
    ref = _reference_int4(w, x, group)
    for block in (32, 128):  # lazy blocked updates = the column-by-column update
        got = np.asarray(F.dequantize(gptq_quantize(w, x.T @ x, x.shape[0], fmt,
                                                    block_size=block), jnp.float32))
        step = np.abs(ref).max() / 7
        same = np.isclose(got, ref, rtol=0, atol=1e-5 * step)
        # float32 vs float64 can flip a rounding that sits on a tie, and the flip propagates
        # a little through the later columns: nearly all weights must agree exactly.
        assert same.mean() > 0.98, same.mean()
        rel = np.linalg.norm(x @ got - x @ ref) / np.linalg.norm(x @ ref)
        assert rel < 0.02


FORMATS = ["int8", "int4", INT4_G32, "fp8_e4m3", "mxfp8_e4m3", "mxfp6_e2m3", "mxfp4", "mxint8",
           "nvfp4", "hif4", "hif8"]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: getattr(f, "name", f))
def test_lowers_output_error_below_rtn(fmt):
    x, w = _layer(d_in=128, d_out=32, seed=1)
    q = gptq_quantize(w, x.T @ x, x.shape[0], fmt)
    assert q.shape == w.shape and q.axis == 0
    got = np.asarray(F.dequantize(q, jnp.float32))
    rtn = np.asarray(F.dequantize(F.quantize(jnp.asarray(w), fmt, axis=0), jnp.float32))
    err_gptq = np.mean((x @ got - x @ w) ** 2)
    err_rtn = np.mean((x @ rtn - x @ w) ** 2)
    assert np.isfinite(got).all() and err_gptq < 0.9 * err_rtn, (err_gptq, err_rtn)


def test_act_order_dead_inputs_and_bad_input():
    x, w = _layer(seed=2)
    x[:, 5] = 0.0  # an input channel calibration never saw
    q = gptq_quantize(w, x.T @ x, x.shape[0], INT4_G32, act_order=True, static_groups=True)
    got = np.asarray(F.dequantize(q, jnp.float32))
    assert np.isfinite(got).all() and not got[5].any()
    rtn = np.asarray(F.dequantize(F.quantize(jnp.asarray(w), INT4_G32, axis=0), jnp.float32))
    assert np.mean((x @ got - x @ w) ** 2) < np.mean((x @ rtn - x @ w) ** 2)
    with pytest.raises(ValueError, match="act_order with a grouped format needs static_groups"):
        gptq_quantize(w, x.T @ x, x.shape[0], "mxfp4", act_order=True)
    with pytest.raises(ValueError, match="block_size=48 must be a multiple of mxfp4's group 32"):
        gptq_quantize(w, x.T @ x, x.shape[0], "mxfp4", block_size=48)
    with pytest.raises(ValueError, match=r"kernel must be \(d_in, d_out\)"):
        gptq_quantize(w.T, x.T @ x, x.shape[0], "int4")
    with pytest.raises(ValueError, match="count must be >= 1 and damp > 0"):
        gptq_quantize(w, x.T @ x, x.shape[0], "int4", damp=0.0)


def test_padded_inputs():
    x, w = _layer(d_in=80, seed=3)  # 80 is not a multiple of the group of 64
    fmt = F.get_format("int4", granularity="group", group_size=64)
    q = gptq_quantize(w, x.T @ x, x.shape[0], fmt)
    got = np.asarray(F.dequantize(q, jnp.float32))
    assert got.shape == w.shape and np.isfinite(got).all()

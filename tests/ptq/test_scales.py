"""Scale search: never worse than the amax rule per block, better somewhere, the candidates
each format allows (powers of two for MX, E4M3 values for NVFP4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import effjax.formats as F
from effjax.formats import core
from effjax.ptq import quantize_searched, search_scales

# One format per scale family runs fast (E8M0, E4M3, HiF4's own, a float INT scale); the
# others of each family in the slow tier.
_slow = pytest.mark.slow
FORMATS = ["mxfp4", pytest.param("mxfp8_e4m3", marks=_slow),
           pytest.param("mxfp6_e2m3", marks=_slow), pytest.param("mxint8", marks=_slow),
           "nvfp4", pytest.param("fp8_e4m3", marks=_slow), "hif4",
           F.get_format("int4", granularity="group", group_size=32),
           pytest.param(F.get_format("int8", granularity="channel"), marks=_slow)]


def _block_err(x, q, fmt, w=None):
    d = np.asarray(F.dequantize(q, jnp.float32)) - np.asarray(x)
    g = core.group_size(fmt, x.shape[0])
    w = np.ones(x.shape[0]) if w is None else np.asarray(w)
    return np.sum((w[:, None] * d * d).reshape(-1, g, x.shape[1]), axis=1)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f if isinstance(f, str) else f.name)
def test_never_worse_than_the_amax_rule(fmt):
    fmt = F.get_format(fmt)
    x = jax.random.t(jax.random.PRNGKey(0), 3.0, (256, 48))
    w = jax.random.uniform(jax.random.PRNGKey(1), (256,), minval=0.1, maxval=2.0)
    base, found = F.quantize(x, fmt, axis=0), quantize_searched(x, fmt, 0, weights=w)
    eb, es = _block_err(x, base, fmt, w), _block_err(x, found, fmt, w)
    assert np.all(es <= eb * (1 + 1e-6))
    if fmt.kind == "hif4":  # keeps its own hierarchical scales
        np.testing.assert_array_equal(np.asarray(found.codes), np.asarray(base.codes))
    else:
        assert np.sum(es) < np.sum(eb)


def test_candidates_stay_on_the_scale_grids():
    x = jax.random.t(jax.random.PRNGKey(2), 3.0, (64, 256))
    xb = core.to_blocks(x, 1, 32)
    base = core.grid_values(xb, F.get_format("mxfp4"))[1]["scale"].astype(jnp.int32)
    found = search_scales(xb, "mxfp4")["scale"].astype(jnp.int32)
    assert set(np.unique(np.asarray(found - base))) <= {-1, 0, 1}
    assert len(np.unique(np.asarray(found - base))) > 1
    nv = search_scales(core.to_blocks(x, 1, 16), "nvfp4")["scale"]
    assert nv.dtype == jnp.float8_e4m3fn  # E4M3 values by construction


def test_bad_weights():
    with pytest.raises(ValueError, match=r"weights must have shape \(64,\)"):
        quantize_searched(jnp.ones((64, 8)), "mxfp4", 0, weights=jnp.ones(8))

"""The main job's pieces (fast) and the job itself on a few tokens (slow)."""

import jax.numpy as jnp
import numpy as np
import pytest

from effjax import demo
from effjax.formats import quantize


def _params():
    rng = np.random.default_rng(0)
    kernel = jnp.asarray(rng.standard_normal((64, 32)), jnp.float32)
    return {"embed": jnp.zeros((10, 64), jnp.bfloat16),
            "layers": {0: {"q": {"kernel": quantize(kernel, "mxfp4", axis=0)},
                           "norm": jnp.ones((64,), jnp.float32),
                           "o": {"kernel": kernel}}}}


def test_projection_bits_weighs_kernels_by_their_elements():
    # one MXFP4 kernel (4.25 bits) and one float32 kernel of the same size; norms not counted
    assert demo.projection_bits(_params()) == (4.25 + 32) / 2


def test_command_line_rejects_a_bad_flag():
    with pytest.raises(SystemExit):
        demo.main(["--windows", "many"])


@pytest.mark.slow  # the main job on 2 windows: ~2 min
def test_main_job_prints_every_part(smollm2, capsys):
    text = demo.run(windows=2, new_tokens=8, calib_windows=2)
    for label in ("float32", "W16 bfloat16", *(v[0] for v in demo.VARIANTS)):
        assert f"| {label} |" in text
    assert "Greedy, float32" in text and "tokens per target call" in text
    assert text in capsys.readouterr().out.replace("\r", "")

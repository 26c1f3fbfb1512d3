"""effjax.ptq.run: every method end to end on a tiny model, QuaRot function-preserving,
calibration reuse, bad input."""

import jax
import numpy as np
import pytest

import effjax
import effjax.formats as F
from effjax.ptq import (
    METHODS,
    awq,
    calibrate,
    calibrate_sequential,
    calibration_windows,
    gptq,
    quarot,
    run,
)
from effjax.quant import Recipe, Rule, recipe
from tests.transforms.helpers import TOKENS, logits, rel_err, tiny, tiny_lm

TEXT = "".join(chr(32 + (i * 7919) % 90) for i in range(3000))


# Every method runs through `run` here; the slower ones (each unit-tested in its own file or
# test_methods, and gptq / awq / quarot_gptq through `run` in test_sequential_mode) only in
# the slow tier.
_SLOW_END_TO_END = {"awq", "batquant", "flatquant", "gptq", "gptq_scale_opt", "mr_gptq",
                    "quarot_gptq", "scale_opt", "spinquant", "spinquant_gptq"}


@pytest.mark.parametrize("method", [
    pytest.param(m, marks=pytest.mark.slow) if m in _SLOW_END_TO_END else m
    for m in sorted(METHODS)])
@pytest.mark.parametrize("gemma", [False, True], ids=["llama", "gemma3"])
def test_every_method_end_to_end(method, gemma):
    lm = tiny_lm(tied=True, bias=False, gemma=gemma)
    r = Recipe(rules=(Rule(pattern=r"_proj$", weight="nvfp4", activation="int8"),),
               kv_cache="int8")
    # (training: flatquant here, batquant in test_batquant.py)
    options = {"flatquant": {"steps": 1}, "batquant": {"steps": 0, "block": 16},  # d = 48
               "awq": {"grid": 4}}  # a short search: the fast tier's time
    res = run(lm, method, r, TEXT, num_windows=4, window=64, progress=False,
              transform_options={"steps": 2} if method.startswith("spinquant") else None,
              **options.get(method, {}))
    kernels = [k for k in jax.tree.leaves(res.lm.params, is_leaf=lambda x: isinstance(
        x, F.QArray)) if isinstance(k, F.QArray)]
    assert len(kernels) == 14  # 7 projections x 2 layers
    assert res.windows == (4, 64) and res.peak_rss_mb > 0
    out = res.lm.apply(res.lm.params, np.asarray(TOKENS), recipe=res.recipe)
    assert np.isfinite(np.asarray(out)).all()
    assert res.lm.config.tie_word_embeddings == (not method.startswith(("quarot", "spinquant")))


@pytest.mark.parametrize("gemma", [False, True], ids=["qwen3", "gemma3"])
def test_quarot_keeps_the_float_function(gemma):
    config, params = tiny(tied=True, bias=True, qk_norm=True, gemma=gemma)
    rotated, rconfig = quarot(params, key=jax.random.PRNGKey(1), config=config)
    assert "kv_rotation" in rotated["layers"][0]["attn"]
    assert ("rotation" in rotated["layers"][0].get("attn_out_norm", {})) == gemma
    assert "input_transform" in rotated["layers"][1]["mlp"]["down_proj"]
    assert rel_err(logits(rotated, rconfig), logits(params, config)) <= 1e-5
    r = effjax.transforms.random_orthogonal(config.hidden_size, jax.random.PRNGKey(2))
    given, _ = quarot(params, key=jax.random.PRNGKey(1), residual=r, config=config)
    np.testing.assert_allclose(given["embed"]["embedding"], params["embed"]["embedding"] @ r,
                               rtol=1e-5, atol=1e-5)  # the residual rotation given is used
    assert rel_err(logits(given, rconfig), logits(params, config)) <= 1e-5


@pytest.mark.parametrize("act", ["int4", "int8"])
def test_quarot_helps_per_token_int_activations_with_an_outlier(act):
    lm = tiny_lm(tied=False, bias=False)
    params = dict(lm.params, embed={"embedding": lm.params["embed"]["embedding"].at[:, 3].mul(
        40.0)})  # an outlier residual channel
    lm = effjax.models.LM(lm.config, params, lm.tokenizer, "outlier")
    r = recipe("int8", act, pattern=r"_proj$")
    ref = logits(lm.params, lm.config)
    err = {m: float(np.mean(np.square(np.asarray(logits(res.lm.params, res.lm.config, r)
                                                 - ref, np.float64))))
           for m in ("rtn", "quarot")
           for res in [run(lm, m, r, TEXT, num_windows=2, window=64, progress=False)]}
    # the logits' mean squared error, no training, a fixed key: observed 0.38 (int4) and
    # 0.33 (int8) x RTN's
    assert err["quarot"] < 0.5 * err["rtn"], err


def test_calibration_cache_is_reused():
    lm = tiny_lm()
    cache = {}
    run(lm, "gptq", recipe("int8"), TEXT, num_windows=2, window=64, calib_cache=cache,
        progress=False)
    (key, stats), = cache.items()
    run(lm, "smoothquant", recipe("int4"), TEXT, num_windows=2, window=64, calib_cache=cache,
        progress=False)
    assert cache[key] is stats and len(cache) == 1
    run(lm, "quarot_gptq", recipe("int4"), TEXT, num_windows=2, window=64, calib_cache=cache,
        progress=False)
    assert len(cache) == 2  # the rotated model has its own statistics


def test_bad_input():
    lm = tiny_lm()
    with pytest.raises(ValueError, match="the text has 5 tokens, fewer than one window "
                                         "of 64"):
        run(lm, "gptq", recipe("int4"), "short", window=64, progress=False)
    with pytest.raises(ValueError, match="method must be one of"):
        run(lm, "magic", recipe("int4"), TEXT, progress=False)
    with pytest.raises(ValueError, match="the recipe's patterns match no kernel"):
        run(lm, "gptq", recipe("int4", pattern="^nothing$"), TEXT, window=64, progress=False)
    assert calibration_windows(lm, TEXT, num_windows=100, window=1000).shape == (3, 1000)
    no_tok = effjax.models.LM(lm.config, lm.params, None, "x")
    with pytest.raises(ValueError, match="calibration needs lm.tokenizer"):
        calibration_windows(no_tok, TEXT, num_windows=1, window=64)


def _layer0_codes(params):
    return {f"{block}/{proj}": np.asarray(params["layers"][0][block][proj]["kernel"].codes)
            for block, projs in (("attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
                                 ("mlp", ("gate_proj", "up_proj", "down_proj")))
            for proj in projs}


@pytest.mark.parametrize("method", ["gptq", pytest.param("awq", marks=pytest.mark.slow),
                                    "quarot_gptq"])
def test_sequential_mode(method):
    """Sequential mode end to end; layer 0 sees the same inputs either way (its statistics
    match to float32 sums' order), and the quantizer is a function of the statistics (the
    same statistics give the same codes: layer 0's codes are exactly those of each mode's own
    layer-0 statistics; between the modes a last-bit difference could flip a code)."""
    lm = tiny_lm(tied=False, bias=False)
    r = recipe("nvfp4", pattern=r"_proj$|^lm_head$")
    res = run(lm, method, r, TEXT, num_windows=2, window=64, sequential=True, progress=False)
    assert isinstance(res.lm.params["lm_head"]["kernel"], F.QArray)
    assert isinstance(res.lm.params["layers"][1]["mlp"]["down_proj"]["kernel"], F.QArray)
    flat = run(lm, method, r, TEXT, num_windows=2, window=64, progress=False)
    a = res.lm.params["layers"][1]["attn"]["q_proj"]["kernel"]
    b = flat.lm.params["layers"][1]["attn"]["q_proj"]["kernel"]
    assert not np.array_equal(np.asarray(a.codes), np.asarray(b.codes))  # other statistics
    # layer 0's statistics, as each mode computes them for the (transformed) float model
    tokens = calibration_windows(lm, TEXT, num_windows=2, window=64)
    params, config = lm.params, lm.config
    if method == "quarot_gptq":
        params, config = quarot(params, key=jax.random.PRNGKey(0), config=config)  # run's default
    seen = {}

    def record(p, stats, index):
        seen.setdefault(index, stats)
        return p

    calibrate_sequential(params, tokens, record, recipe=r, progress=False, config=config)
    stats = {"sequential": seen[0],
             "flat": {k: v for k, v in calibrate(params, tokens, progress=False,
                                                 config=config).items()
                      if k.startswith("layers/0/")}}
    assert sorted(stats["sequential"]) == sorted(stats["flat"])
    for path, st in stats["sequential"].items():
        other = stats["flat"][path]
        assert int(st.count) == int(other.count)
        for field in ("xtx", "absmax", "sample"):  # observed: equal to the bit
            np.testing.assert_allclose(getattr(st, field), getattr(other, field), rtol=1e-6,
                                       atol=1e-6 * float(np.max(np.abs(getattr(other, field)))))
    r0 = recipe("nvfp4", pattern=r"^layers/0/.*_proj$")
    quantizer = {"gptq": gptq, "awq": awq, "quarot_gptq": gptq}[method]
    for mode, out in (("sequential", res), ("flat", flat)):
        want = _layer0_codes(quantizer(params, stats[mode], r0, progress=False))
        got = _layer0_codes(out.lm.params)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=f"{mode} {k}")

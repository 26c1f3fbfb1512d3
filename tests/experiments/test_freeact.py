"""The FreeAct experiment: its windows, QuaRot's rotation of given embeddings, the report and
claim (fast), and its real loop on the tiny config (slow)."""

import json
import re

import jax.numpy as jnp
import numpy as np
import pytest

from configs.freeact import get_config
from effjax import zoo
from effjax.agents.episodes import MASK_ID
from effjax.data import shapes_vqa
from effjax.models import forward
from experiments.common import file_digest
from experiments.freeact import (
    _key,
    _report,
    dllm_windows,
    evaluate,
    gains,
    quantize,
    run,
    setting,
    weights_digest,
)


def test_windows_mark_the_token_types():
    w = dllm_windows(8, 2)
    types = np.asarray(w.context.token_types)
    np.testing.assert_array_equal(types == 1, w.tokens == MASK_ID)
    assert types.any() and (w.scored == (types == 1)).all()
    config = get_config("tiny")
    s = setting("vlm", config)
    v = s.evals["test"]
    np.testing.assert_array_equal(np.asarray(v.context.token_types)[:, 2:66], 1)
    assert np.asarray(v.context.token_types).sum() == 64 * len(v.tokens)
    assert v.context.embeds.shape == (*v.tokens.shape, s.config.hidden_size)
    assert (v.targets == [shapes_vqa.VOCAB[shapes_vqa.example("test", i).answer]
                          for i in range(len(v.tokens))]).all()


def test_quarot_in_float_keeps_the_vlm_scores():
    """QuaRot's rotation reaches the spliced image features: unquantized, the rotated
    model scores as the float one."""
    s = setting("vlm", get_config("tiny"))
    ref = evaluate(s, s.params, s.config, None)
    params, config, rotation, _ = quantize(s, "quarot", {}, None, seed=1)
    got = evaluate(s, params, config, None, rotation)
    np.testing.assert_allclose(got["test"]["nll"], ref["test"]["nll"], rtol=1e-4)
    # the answer logits themselves: float32 sums through the rotation (observed 3.5e-6 apart,
    # 3e-7 of the largest)
    a, b = _answer_logits(s, s.params, s.config), _answer_logits(s, params, config, rotation)
    d = float(np.max(np.abs(b - a)))
    assert d <= 1e-5 * float(np.max(np.abs(a)))
    # so an answer can change only where the float model's top two logits are within 2 d:
    # the accuracies differ by at most those near-ties (observed: none, the least gap 0.13)
    top = np.sort(a, axis=-1)
    near_ties = int(np.sum(top[:, -1] - top[:, -2] <= 2 * d))
    n = len(s.evals["test"].tokens)
    assert abs(got["test"]["accuracy"] - ref["test"]["accuracy"]) * n <= near_ties + 1e-9
    unrotated = evaluate(s, params, config, None)  # features left unrotated: another model
    assert abs(unrotated["test"]["nll"] - ref["test"]["nll"]) > 1e-3
    with pytest.raises(ValueError, match="method must be rtn, quarot, shared or freeact"):
        quantize(s, "gptq", {}, None, seed=1)
    with pytest.raises(ValueError, match="model must be 'dllm' or 'vlm'"):
        setting("llm", get_config("tiny"))


def _answer_logits(s, params, config, rotation=None):
    """The test set's logits at each question's answer position (as `evaluate` computes
    them; QuaRot's residual rotation applied to the given image embeddings)."""
    w = s.evals["test"]
    ctx = w.context
    embeds = ctx.embeds if rotation is None else ctx.embeds @ rotation
    logits = forward(params, jnp.asarray(w.tokens), config=config, positions=ctx.positions,
                     mask=jnp.asarray(w.mask), attn_mask=ctx.attn_mask, embeds=embeds,
                     token_types=ctx.token_types)[0]
    return np.asarray(logits, np.float64)[np.arange(len(w.tokens)), w.scored]


def _fake_cache(config, free: float, shared: float) -> dict:
    """Cells for every seed: seed i's accuracy is the given one + (i - 1) / 100 (FreeAct and
    the shared transform move together, so their paired differences are equal)."""
    cache = {}
    for model in config.models:
        splits = ("held-out",) if model == "dllm" else config.vlm_splits
        cache[_key(config, model, "float")] = {sp: {"accuracy": 0.9, "nll": 0.1} for sp in splits}
        for fmt in config.formats:
            for _, method, options in config.rows:
                for i, seed in enumerate(config.seeds):
                    acc = {"rtn": 0.5, "quarot": 0.6, "shared": shared}.get(method, free)
                    acc += (i - 1) / 100 if method in ("shared", "freeact") else 0.0
                    cell = {"eval": {sp: {"accuracy": acc, "nll": 1 - acc} for sp in splits},
                            "seconds": 3.0}
                    if method == "freeact":
                        cell.update(mean_rank=[40.0, 12.5], groups=12)
                    cache[_key(config, model, fmt, method, dict(options), seed)] = cell
    return cache


def test_report_tables_ablation_and_claim(tmp_path):
    config = get_config()
    config.output = str(tmp_path / "f.md")
    report = _report(config, _fake_cache(config, free=0.7, shared=0.64), 1)
    sd = "± 0.8"  # population sd of 69, 70, 71
    assert f"| FreeAct, energy 0.99 | 70.0 {sd} (0.3000 ± 0.0082) | 70.0 {sd} (0.3000" in report
    assert f"| FreeAct, energy 0.99 | 70.0 {sd} | 70.0 {sd} | 70.0 {sd} | 70.0 {sd} |" in report
    assert "| RTN | 50.0 ± 0.0 | 50.0 ± 0.0 |" in report
    assert f"| FreeAct, energy 0.9 | mxfp4 | 40.0 | 12.5 | 70.0 {sd} | 70.0 {sd} | 3 |" in report
    assert re.search(r"\*\*confirmed\*\* here\. FreeAct, energy 0\.99 beats the best baseline "
                     r"\(means over 3 calibration seeds\) in 6 of 6 settings; its largest gain is "
                     r"\+6\.0 points .* on every seed in 6 of 6 settings", report)
    assert "| +6.0 | +6.0 ± 0.0 (+6.0, +6.0, +6.0) | shared" in report
    assert (tmp_path / "f.png").exists()
    g = gains(config, _fake_cache(config, free=0.62, shared=0.64))
    assert len(g) == 6 and all(abs(a + 2.0) < 1e-9 and np.allclose(p, -2.0)
                               and best.startswith("shared") for _, a, p, best in g)
    assert "**partly confirmed**" in _report(config, _fake_cache(config, 0.62, 0.6), 1)
    assert "**refuted**" in _report(config, _fake_cache(config, 0.55, 0.64), 1)
    assert "| RTN | not run | not run |" in _report(config, {}, 1)


@pytest.mark.slow
def test_tiny_run_computes_and_caches_every_cell(tmp_path):
    config = get_config("tiny")
    config.cache, config.output = str(tmp_path / "c.json"), str(tmp_path / "f.md")
    report = run(config)
    cache = json.loads((tmp_path / "c.json").read_text())
    assert len(cache) == 2 + 2 * len(config.rows) * len(config.formats) * len(config.seeds)
    assert "not run" not in report.split("## Claim")[0]


def test_cells_are_keyed_by_the_weights_measured():
    digest = weights_digest("vlm")
    assert digest == file_digest(zoo.weights_dir("shapes_vlm") / "model.safetensors")
    assert json.loads(_key(get_config("tiny"), "vlm", "float"))[:3] == ["vlm", digest, "float"]
    assert weights_digest("dllm") != digest

"""The speculative-decoding experiment: its helpers and report (fast), its real loop on the
tiny config (slow)."""

import re
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import effjax
from configs.speculative import get_config
from effjax.decoding import AutoJudge, KLJudge
from effjax.formats import QArray
from experiments.speculative import (
    _key,
    _report,
    arithmetic_tasks,
    first_integer,
    make_draft,
    make_rule,
    prose_prompts,
    rule_rows,
    run,
    target_nll,
)


@pytest.fixture(scope="module")
def tiny():
    config = effjax.models.LMConfig(vocab_size=61, hidden_size=64, intermediate_size=128,
                                    num_layers=3, num_heads=2, num_kv_heads=1, head_dim=32)
    return SimpleNamespace(params=effjax.models.init_params(config, jax.random.PRNGKey(0)),
                           config=config)


def test_arithmetic_tasks_and_answers():
    tasks = arithmetic_tasks(6, seed=0)
    assert tasks == arithmetic_tasks(6, seed=0) and len(tasks) == 6
    for prompt, answer in tasks:
        a, op, b = re.search(r"What is (\d+) ([+*]) (\d+)\?", prompt).groups()
        assert answer == (int(a) + int(b) if op == "+" else int(a) * int(b))
        assert prompt.endswith(f"{a} {op} {b} =")
    assert first_integer(" 57.\nQuestion") == 57 and first_integer(" -3 apples") == -3
    assert first_integer(" no digits") is None


def test_make_rule_and_make_draft(tiny):
    assert make_rule("kl", {"tau": 0.5}) == KLJudge(0.5)
    with pytest.raises(ValueError, match="rule kind must be one of"):
        make_rule("medusa", {})
    with pytest.raises(ValueError, match="an autojudge row needs a trained judge"):
        make_rule("autojudge", {"threshold": 0.5})
    judge = make_rule("autojudge", {"threshold": 0.3}, {"weights": [0.0] * 4, "bias": 1.0})
    assert isinstance(judge, AutoJudge) and judge.threshold == 0.3 and judge.bias == 1.0
    params, config, r = make_draft(tiny, "first:2")
    assert config.num_layers == 2 and r is None and sorted(params["layers"]) == [0, 1]
    params, config, r = make_draft(tiny, "mxfp4")
    assert config == tiny.config and r is not None
    assert isinstance(params["layers"][0]["attn"]["q_proj"]["kernel"], QArray)


def test_target_nll_matches_a_row_by_row_loop(tiny):
    prompts, outs = [[5, 9, 14], [3, 1, 4, 1, 5, 9]], [[7, 7, 2], [8]]
    ref = []
    for p, o in zip(prompts, outs, strict=True):
        seq = jnp.asarray([p + o])
        logp = jax.nn.log_softmax(effjax.models.forward(tiny.params, seq, config=tiny.config)[0])
        ref += [-float(logp[0, len(p) - 1 + i, t]) for i, t in enumerate(o)]
    assert target_nll(tiny, prompts, outs) == pytest.approx(np.mean(ref), rel=1e-5)


def test_prose_prompts_skip_headings(smollm2):
    texts = [" = Heading = \n short . \n " + "The cat sat on the mat . " * 10 + "\n"
             + "A b c . " * 20]
    prompts = prose_prompts(smollm2, texts, 2, 12)
    assert [len(p) for p in prompts] == [12, 12]
    assert smollm2.tokenizer.decode(prompts[0]).startswith("The cat")
    with pytest.raises(ValueError, match="only 2 paragraphs have 12 tokens; asked for 3"):
        prose_prompts(smollm2, texts, 3, 12)


def test_report_rows_and_findings():
    config = get_config()
    config.judge_prompts, config.judge_thresholds = 48, (0.3, 0.5, 0.7)
    cache = {}
    for _, spec in config.drafts:
        cache[_key(config, "judge", spec, config.judge_prompts, config.judge_seed)] = (
            {"mismatches": 50, "important": 10, "weights": [0.0], "bias": 0.0,
             "train_accuracy": 0.9} if spec == "mxfp4" else
            {"mismatches": 5, "important": 0, "error": "only one class"})
    for name in ("prose", "arithmetic"):
        metric = "accuracy" if name == "arithmetic" else "agreement"
        cache[_key(config, name, "target")] = {
            "greedy_seconds": 2.0, "sampling_seconds": 2.2, "nll": 1.5, "sampling_nll": 3.0,
            "accuracy": None if name == "prose" else 0.5}
        for _, spec in config.drafts:
            for label, kind, options in rule_rows(config):
                if kind == "autojudge" and spec != "mxfp4":  # that draft's judge failed
                    continue
                tpc = {"KL judge tau=2.0": 3.0, "AutoJudge P(important)<0.7": 3.5}.get(label, 2.0)
                score = 0.3 if label == "AutoJudge P(important)<0.3" else 0.25
                cell = {"seconds": 1.0, "speedup": tpc, "tokens_per_call": tpc,
                        "calls_per_token": 1 / tpc, "agreement": 0.9, "nll": 1.6,
                        "accuracy": None if name == "prose" else 0.25}
                cell[metric] = score
                cache[_key(config, name, spec, kind, dict(options))] = cell
    del cache[_key(config, "prose", "mxfp4", "typical", {})]
    report = _report(config, cache, 10.0)
    assert re.search(r"^\| greedy match \| MXFP4 self-draft \| 2\.00 \| 0\.500 \| 2\.00x \| "
                     r"0\.250 \| 1\.6 \| - \| 1\.00 \|$", report, flags=re.M)
    assert "| typical acceptance | MXFP4 self-draft | not run |" in report
    assert ("- MXFP4 self-draft, arithmetic: greedy match keeps 2.00 tokens per call (2.00x); "
            "the loosest KL judge (KL judge tau=2.0) keeps 3.00 (3.00x) at accuracy 0.250 vs "
            "0.250") in report
    assert "AutoJudge mined 50 mismatches on 48 other arithmetic questions, 10 important" in report
    assert "judge not trained: only one class" in report
    # thresholds 0.3 (better accuracy than any KL row) and 0.7 (more tokens per call than any
    # KL row) are not dominated; 0.5 is
    assert ("- Claim: the KL judge matches or beats AutoJudge (arithmetic, every AutoJudge row "
            "dominated or matched by a KL-judge row): refuted (1 of 3 rows)") in report
    assert "evaluated on prose: domain shift" in report


@pytest.mark.slow
def test_speculative_tiny_run(smollm2, tmp_path):
    config = get_config("tiny")
    config.cache, config.output = str(tmp_path / "c.json"), str(tmp_path / "r.md")
    config.plot = str(tmp_path / "p.png")
    report = run(config)
    rows = re.findall(r"^\| greedy match \| [^|]+ \| ([\d.]+) \| [\d.]+ \| [\d.]+x \| "
                      r"1\.000 \|", report, flags=re.M)
    assert len(rows) == 4  # two drafts x two domains, each identical to target greedy
    assert all(float(t) >= 1.0 for t in rows)
    assert (tmp_path / "p.png").stat().st_size > 0

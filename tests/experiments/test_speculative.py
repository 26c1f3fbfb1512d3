"""The speculative-decoding experiment: its helpers, report and the arithmetic pair's loop
(fast), the real loop on both pairs of the tiny config (slow)."""

import json
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
    Domain,
    Pair,
    _judge_key,
    _key,
    _report,
    arith_pair,
    arithmetic_tasks,
    compare_at_matched_speed,
    first_integer,
    kl_curve,
    make_draft,
    make_rule,
    prose_prompts,
    rule_rows,
    run,
    smollm2_pair,
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
    params, config, r = make_draft(tiny, "draft")  # the shipped arithmetic draft
    assert config == effjax.qat.DRAFT_CONFIG and r is None and sorted(params["layers"]) == [0]


@pytest.mark.slow  # 43 s
def test_target_nll_matches_a_row_by_row_loop(tiny):
    prompts, outs = [[5, 9, 14], [3, 1, 4, 1, 5, 9]], [[7, 7, 2], [8]]
    ref = []
    for p, o in zip(prompts, outs, strict=True):
        seq = jnp.asarray([p + o])
        logp = jax.nn.log_softmax(effjax.models.forward(tiny.params, seq, config=tiny.config)[0])
        ref += [-float(logp[0, len(p) - 1 + i, t]) for i, t in enumerate(o)]
    assert target_nll(tiny.params, tiny.config, prompts, outs) == pytest.approx(np.mean(ref),
                                                                              rel=1e-5)


def test_prose_prompts_skip_headings(smollm2):
    texts = [" = Heading = \n short . \n " + "The cat sat on the mat . " * 10 + "\n"
             + "A b c . " * 20]
    prompts = prose_prompts(smollm2, texts, 2, 12)
    assert [len(p) for p in prompts] == [12, 12]
    assert smollm2.tokenizer.decode(prompts[0]).startswith("The cat")
    with pytest.raises(ValueError, match="only 2 paragraphs have 12 tokens; asked for 3"):
        prose_prompts(smollm2, texts, 3, 12)


def _cell(tpc, **quality):
    return {"seconds": 1.0, "speedup": tpc / 2, "tokens_per_call": tpc, "calls_per_token": 1 / tpc,
            "agreement": 0.9, "nll": 1.6, "accuracy": None, **quality}


def test_compare_at_matched_speed():
    curve = [_cell(2.0, accuracy=0.9), _cell(4.0, accuracy=0.5)]
    # interpolated at 3.0: 0.7; two standard errors of the difference with n = 100: ~0.13
    assert compare_at_matched_speed(curve, _cell(3.0, accuracy=0.75), "accuracy", 100) == (
        "tie", pytest.approx(0.7))
    assert compare_at_matched_speed(curve, _cell(3.0, accuracy=0.9), "accuracy", 100)[0] == (
        "AutoJudge better")
    assert compare_at_matched_speed(curve, _cell(3.0, accuracy=0.5), "accuracy", 100)[0] == (
        "KL better")
    assert compare_at_matched_speed(curve, _cell(3.0, accuracy=0.75), "accuracy", 10000)[0] == (
        "AutoJudge better")  # more prompts: a narrower band
    # outside the sweep: only dominance decides
    assert compare_at_matched_speed(curve, _cell(5.0, accuracy=0.6), "accuracy", 100) == (
        "AutoJudge better", None)
    assert compare_at_matched_speed(curve, _cell(5.0, accuracy=0.4), "accuracy", 100)[0] == (
        "not comparable")
    assert compare_at_matched_speed(curve, _cell(1.5, accuracy=0.8), "accuracy", 100)[0] == (
        "KL better")
    assert compare_at_matched_speed(curve, _cell(1.5, accuracy=0.95), "accuracy", 100)[0] == (
        "not comparable")
    nll = [_cell(2.0, nll=1.0), _cell(4.0, nll=2.0)]  # lower is better, no noise band
    assert compare_at_matched_speed(nll, _cell(3.0, nll=1.6), "nll", 8) == (
        "KL better", pytest.approx(1.5))
    assert compare_at_matched_speed(nll, _cell(3.0, nll=1.4), "nll", 8)[0] == "AutoJudge better"


def _fake_pair(config):
    """The arithmetic pair's config and keys with no models behind them."""
    pc = config.arith
    domains = {"in": Domain([[1]] * 100, lambda outs: 0.0, False, "in-domain prompts"),
               "shift": Domain([[1]] * 100, lambda outs: 0.0, True, "shifted prompts")}
    drafts = [(label, spec, None) for label, spec in pc.drafts]
    return Pair("a fake pair", None, None, drafts, domains, [[1]] * 48, None, -1, pc,
                ("fake",), (48,))


def test_report_rows_and_findings():
    config = get_config()
    pair = _fake_pair(config)
    pc = pair.settings
    good, bad = pc.drafts[0][1], pc.drafts[1][1]
    cache = {_judge_key(pair, good): {"mismatches": 50, "important": 10, "weights": [0.0],
                                      "bias": 0.0, "train_accuracy": 0.9},
             _judge_key(pair, bad): {"mismatches": 5, "important": 0, "error": "only one class"}}
    forward = [label for label, kind, o in pc.rules if kind == "kl" and "direction" not in o]
    kl_tpc = {label: 2.0 + 2.0 * i / (len(forward) - 1) for i, label in enumerate(forward)}
    for name in pair.domains:
        cache[_key(pair, name, "target")] = {"greedy_seconds": 2.0, "sampling_seconds": 2.2,
                                             "nll": 1.5, "sampling_nll": 3.0, "accuracy": 0.9}
        for _, spec, _ in pair.drafts:
            for label, kind, options in rule_rows(pc):
                if kind == "autojudge" and spec == bad:  # that draft's judge failed
                    continue
                tpc = kl_tpc.get(label, {"AutoJudge P(important)<0.8": 5.0}.get(label, 3.0))
                # the KL curve falls from 0.9 at 2 tokens per call to 0.5 at 4;
                # AutoJudge 0.2 ties (0.7 at 3.0), 0.4 and 0.6 lose, 0.8 is off the sweep
                acc = {"AutoJudge P(important)<0.2": 0.72, "AutoJudge P(important)<0.4": 0.9,
                       "AutoJudge P(important)<0.6": 0.9, "AutoJudge P(important)<0.8": 0.3,
                       }.get(label, 0.9 - 0.2 * (tpc - 2.0))
                cache[_key(pair, name, spec, kind, dict(options))] = _cell(tpc, accuracy=acc)
    del cache[_key(pair, "in", good, "typical", {})]
    assert [c["tokens_per_call"] for c in kl_curve(pair, cache, "in", good)] == sorted(
        kl_tpc.values())  # the reverse-KL rows are not on the curve
    report = _report(config, [pair], cache, 10.0)
    assert re.search(r"^\| greedy match \| 1-block draft \| 3\.00 \| 0\.333 \| 1\.50x \| "
                     r"0\.900 \| 1\.6 \| 0\.7 \| 1\.00 \|$", report, flags=re.M)
    assert "| typical acceptance | 1-block draft | not run |" in report
    assert "AutoJudge mined 50 mismatches on 48 other prompts, 10 important" in report
    assert "judge not trained: only one class" in report
    assert ("  - AutoJudge P(important)<0.2 (in domain): 3.00 tokens per call, accuracy 0.720; "
            "KL judge at that speed: 0.700: tie.") in report
    assert "  - AutoJudge P(important)<0.8 (domain shift: mined elsewhere): 5.00" in report
    assert ("- Claim: the KL judge matches or beats AutoJudge at matched tokens per call: "
            "refuted (1 of 3 comparable rows tie or favour the KL judge; 0 favour it, 1 not "
            "comparable).") in report
    assert "- Claim: the KL judge is at least as good as AutoJudge under the domain shift" in report


def test_pairs_build_their_domains(smollm2):
    config = get_config("tiny")
    pair = arith_pair(config.arith)
    assert list(pair.domains) == ["arithmetic, level 1/2", "arithmetic, level 3"]
    assert [d.shifted for d in pair.domains.values()] == [False, True]
    tok = effjax.data.arithmetic.CharTokenizer()
    items = effjax.data.arithmetic.problems(0, 8, split="test", levels=(1, 2))
    dom = pair.domains["arithmetic, level 1/2"]
    assert dom.prompts == [tok.encode(p.prompt) for p in items]
    assert dom.accuracy([tok.encode(p.solution) for p in items]) == 1.0
    assert pair.answer(tok.encode("2+3=5#5\n")) == 5 and pair.eos_id == ord("\n")
    judge = set(map(tuple, pair.judge_prompts))
    assert not judge & set(map(tuple, dom.prompts))  # mined on training problems only
    config.smollm2.drafts = (("first 2 blocks", "first:2"),)
    s = smollm2_pair(config.smollm2)
    assert list(s.domains) == ["prose", "arithmetic"] and s.domains["prose"].metric == "nll"
    assert s.drafts[0][2][1].num_layers == 2 and len(s.judge_prompts) == 4
    # the SmolLM2 pair's keys are the ones its cached rows were written under
    assert _key(s, "prose", "target") == json.dumps(
        ["prose", "target", "smollm2-135m", 4, 2, 16, 2, 0, 8], sort_keys=True)


@pytest.mark.slow  # 60 s; the loop's parts have fast tests above
def test_arith_pair_loop_and_report(tmp_path):
    config = get_config("tiny")
    config.pairs = ("arith",)
    config.arith.max_new_tokens = 24
    config.cache, config.output = str(tmp_path / "c.json"), str(tmp_path / "r.md")
    config.plot = str(tmp_path / "p.png")
    report = run(config)
    rows = re.findall(r"^\| greedy match \| 1-block draft \| ([\d.]+) \| [\d.]+ \| [\d.]+x \| "
                      r"1\.000 \|", report, flags=re.M)
    assert len(rows) == 2 and all(float(t) > 1.0 for t in rows)  # two domains, exact greedy
    assert "AutoJudge P(important)<0.5" in report and (tmp_path / "p.png").stat().st_size > 0


@pytest.mark.slow
def test_speculative_tiny_run(smollm2, tmp_path):
    config = get_config("tiny")
    config.cache, config.output = str(tmp_path / "c.json"), str(tmp_path / "r.md")
    config.plot = str(tmp_path / "p.png")
    report = run(config)
    rows = re.findall(r"^\| greedy match \| [^|]+ \| ([\d.]+) \| [\d.]+ \| [\d.]+x \| "
                      r"1\.000 \|", report, flags=re.M)
    assert len(rows) == 6  # SmolLM2: two drafts x two domains; arithmetic: one x two
    assert all(float(t) >= 1.0 for t in rows)
    assert (tmp_path / "p.png").stat().st_size > 0

"""The DLLM-agent experiment: its helpers and report (fast), its real loop on the tiny config
(slow)."""

from collections import Counter

import pytest

from configs.dllm_agent import get_config
from effjax.agents.episodes import EpisodeResult
from effjax.agents.tools import tasks
from experiments.dllm_agent import _claims, _report, agent_run, make_policy, run, summarize


def _results():
    items = tasks(0, 4, split="test")
    rs = [EpisodeResult(t) for t in items]
    for r, ok, rounds, bad in zip(rs, (True, True, False, False), (2, 3, 6, 4), (0, 1, 2, 0),
                                  strict=True):
        r.success, r.rounds, r.tool_calls = ok, rounds, rounds - 1 - bad
        r.malformed = Counter({"bad_args": bad})
        r.forward_passes, r.end, r.transcript = 10 * rounds, "answer", "Q:x\n"
    return rs


def test_summarize():
    s = summarize(_results(), 2.0)
    assert s["success"] == 0.5 and s["success_se"] == pytest.approx(0.25)
    assert s["rounds_if_success"] == 2.5 and s["calls_if_success"] == 1.0
    assert s["malformed"] == 3 and s["malformed_per_100_actions"] == pytest.approx(20.0)
    assert s["ms_per_episode"] == 500.0 and s["forward_passes"] == 37.5


def _cell(success, ms, malformed, rounds=2.5, n=200):
    return {"success": success, "success_se": (success * (1 - success) / n) ** 0.5,
            "rounds": rounds, "tool_calls": rounds - 1, "rounds_if_success": rounds,
            "calls_if_success": rounds - 1, "malformed_per_100_actions": malformed,
            "malformed": int(malformed * 5), "actions": 500,
            "forward_passes": 10.0, "ms_per_episode": ms, "seconds": ms * n / 1000,
            "latency_ms": 3 * ms, "latency_p95_ms": 4 * ms,
            "success_by_kind": {k: success for k in ("chain", "chain_calc", "intersect", "date")},
            "malformed_by_kind": {k: 0 for k in ("not_json", "schema", "unknown_tool",
                                                 "bad_args")},
            "example": "Q:x\n"}


def test_claims_and_report():
    config = get_config()
    cells = {config.rows[0][0]: _cell(0.80, 100.0, 1.0, rounds=3.0),
             config.fast_row: _cell(0.79, 60.0, 4.0),
             "dLLM threshold 0.9": _cell(0.78, 70.0, 4.0),
             "dLLM unaligned masks, threshold 0.9": _cell(0.50, 70.0, 5.0),
             "dLLM no tool-call data, threshold 0.9": _cell(0.70, 70.0, 9.0)}
    claims = _claims(config, cells)
    assert "faster end to end at comparable accuracy: **confirmed**" in claims[0]
    assert "tool calls when successful (by at least 5%): **confirmed**" in claims[1]
    assert "malformed calls: **confirmed**" in claims[2]
    assert "lowers malformed calls: **confirmed**" in claims[3]
    assert "degrades: **confirmed**" in claims[4]
    cells[config.fast_row] = _cell(0.60, 60.0, 0.5)
    assert "**refuted**" in _claims(config, cells)[0]
    report = _report(config, cells)
    assert "| dLLM threshold 0.9 + prefix cache | 60.0 ± 3.5 |" in report
    assert "| 60.0 | 1.67 | 180 | 1.67 |" in report  # the fast row's times and speeds


def test_agent_runs_and_policies():
    config = get_config()
    assert agent_run(config, "ar").steps == config.train.ar_steps
    assert agent_run(config, "dllm_unaligned").name == "agent_dllm_unaligned"
    assert agent_run(config, "dllm_nocall").call_focus == 0.0
    with pytest.raises(ValueError, match="agent"):
        agent_run(config, "rnn")
    policy = make_policy("dllm_unaligned", None, {"block_length": 36, "threshold": 0.9})
    assert not policy.aligned and policy.sampling.threshold == 0.9


@pytest.mark.slow
def test_tiny_run_end_to_end(tmp_path):
    config = get_config("tiny")
    with config.unlocked():
        config.zoo = str(tmp_path / "zoo")
        config.cache, config.output, config.plot = (str(tmp_path / f) for f in (
            "c.json", "r.md", "p.png"))
    report = run(config)
    assert "## Claims" in report and (tmp_path / "p.png").is_file()
    assert all(label in report for label, _, _ in config.rows)

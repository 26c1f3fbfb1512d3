"""The QuantClaw experiment: workload scorers, routing rows and report (fast), the real
loop on the tiny config (slow)."""

import pytest

from configs.quantclaw import get_config
from experiments.quantclaw import TASKS, _f1, _report, route_rows, run, workload


def _word(i, j):  # distinct alphabetic words: paragraph i, position j
    return "w" + "abcd"[i] + "".join("abcdefghijklmnopqrstuvwxyz"[d] for d in divmod(j, 26))


PARAS = [" ".join(_word(i, j) for j in range(120)) for i in range(4)]


def test_workload_scorers():
    reqs = workload(2, 0, PARAS)
    assert set(reqs) == set(TASKS) and all(len(r) == 2 for r in reqs.values())
    prompt, score = reqs["arithmetic"][0]
    a, op, b = prompt.split("What is ")[1].split("?")[0].split()
    answer = int(a) + int(b) if op == "+" else int(a) * int(b)
    assert score(f" {answer}") == 1.0 and score(f" {answer + 1}") == 0.0
    prompt, score = reqs["tool_call"][0]
    city = prompt.split("weather in ")[1].split("?")[0]
    assert score(f' {{"name": "get_weather", "arguments": {{"city": "{city}"}}}}') == 1.0
    assert score(' {"name": "get_weather", "arguments": {"city": "Nowhere"}}') == 0.0
    assert score("sunny") == 0.0
    prompt, score = reqs["lookup"][1]
    assert "Italy" in prompt and score(" Rome\nQ: next") == 1.0 and score(" Paris") == 0.0
    prompt, score = reqs["continuation"][0]
    assert prompt.split()[-1] == _word(0, 59)
    assert score(f" {_word(0, 60)} {_word(0, 61)}") > 0 and score("zzz") == 0
    prompt, score = reqs["summarization"][1]
    assert _word(3, 0) in prompt and score(f" {_word(3, 5)} {_word(3, 6)}") == 1.0
    assert score(f" {_word(3, 5)} qq") == 0.5
    assert workload(2, 1, PARAS)["lookup"][0][0] != reqs["lookup"][0][0]
    assert _f1(["a", "b"], ["b", "c"]) == 0.5


def _cells():
    def runs(q4, q8, q16, valid4=True):
        return {"4bit": dict(quality=q4, bytes=1, latency=0.1, valid_detected=valid4),
                "8bit": dict(quality=q8, bytes=2, latency=0.2, valid_detected=True),
                "16bit": dict(quality=q16, bytes=4, latency=0.3, valid_detected=True)}

    return {
        "profile": {"quality": {}, "tiers": {"lookup": "4bit", "arithmetic": "8bit"}},
        "lookup/0": dict(task="lookup", detected="lookup", confidence=1.0, source="rule",
                         routing_s=0.001, runs=runs(1.0, 1.0, 1.0)),
        "lookup/1": dict(task="lookup", detected="lookup", confidence=1.0, source="rule",
                         routing_s=0.001,
                         runs=runs(0.0, 1.0, 1.0, valid4=False)),  # escalates to 8bit
        "arithmetic/0": dict(task="arithmetic", detected="arithmetic", confidence=0.1,
                             source="embedding", routing_s=0.001,
                             runs=runs(0.0, 0.0, 1.0)),  # unsure: one tier up, 16bit
    }


def test_route_rows():
    rows = route_rows(get_config(), _cells())
    assert [r[2] for r in rows["all 16bit"]] == [4, 4, 4]
    assert [(r[1], r[2]) for r in rows["oracle"]] == [(1.0, 4), (1.0, 1), (1.0, 2)]
    qc = rows["QuantClaw"]
    assert [(r[1], r[2]) for r in qc] == [(1.0, 4), (1.0, 1), (1.0, 1 + 2)]
    assert qc[2][3] == pytest.approx(0.001 + 0.1 + 0.2)


def test_route_rows_escalation_limits():
    cells = _cells()
    invalid = {t: dict(quality=0.0, bytes=b, latency=0.1, valid_detected=False)
               for t, b in (("4bit", 1), ("8bit", 2), ("16bit", 4))}
    cells["lookup/1"]["runs"] = invalid
    qc = route_rows(get_config(), cells)["QuantClaw"]
    assert qc[2][2] == 1 + 2  # max_escalations = 1: 4bit, then 8bit, not 16bit
    cells["profile"]["no_escalation"] = ["lookup"]
    qc = route_rows(get_config(), cells)["QuantClaw"]
    assert qc[2][2] == 1 and qc[2][1] == 0.0  # the profile found escalating useless


def test_report_claims():
    text = _report(get_config(), _cells())
    assert "cost saving 33.3%" in text and "quality 100.0 vs 100.0 points" in text
    assert "at most 1 point: **holds**" in text and "cost saving **confirmed**" in text
    assert "No results yet" in _report(get_config(), {})


@pytest.mark.slow
def test_tiny_run(smollm2):
    report = run(get_config("tiny"))
    assert "## Routing rows" in report and "QuantClaw" in report

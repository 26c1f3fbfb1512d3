"""The tool-use environment: the call schema, the tools, the task generator."""

import datetime

import pytest

from effjax.agents.tools import (
    KINDS,
    Action,
    KnowledgeBase,
    check_action,
    format_answer,
    format_call,
    make_task,
    run_tool,
    solve,
    split_of,
    tasks,
)


@pytest.mark.parametrize("text,kind,error", [
    ('{"tool":"kb","q":"boss ana"}', "tool", ""),
    (' {"tool":"calc","x":"2*(3+4)"} ', "tool", ""),
    ('{"tool":"date","d":"03-05","n":12}', "tool", ""),
    ('{"answer":"oslo"}', "answer", ""),
    ('{"tool":"kb","q":"boss ana"', "malformed", "not_json"),
    ("tool kb", "malformed", "not_json"),
    ('["kb"]', "malformed", "schema"),
    ('{"q":"boss ana"}', "malformed", "schema"),
    ('{"tool":3,"q":"x"}', "malformed", "schema"),
    ('{"tool":"web","q":"x"}', "malformed", "unknown_tool"),
    ('{"tool":"date","d":"03-05","n":"12"}', "malformed", "bad_args"),
    ('{"tool":"date","d":"03-05","n":true}', "malformed", "bad_args"),
    ('{"tool":"kb","query":"boss ana"}', "malformed", "bad_args"),
    ('{"tool":"calc","x":"1+1","y":"2"}', "malformed", "bad_args"),
    ('{"answer":48}', "malformed", "bad_args"),
])
def test_check_action_tells_malformed_calls_apart(text, kind, error):
    action = check_action(text)
    assert (action.kind, action.error) == (kind, error)


def test_tools_against_independent_computations():
    kb = KnowledgeBase.draw(7)
    person = kb.people[2]
    assert run_tool(check_action(format_call("kb", q=f"boss {person}")), kb) == kb.boss[2]
    assert run_tool(check_action(format_call("kb", q=f"age {person}")), kb) == str(kb.age[2])
    team = kb.team[0]
    members = sorted(p for p, t in zip(kb.people, kb.team, strict=True) if t == team)
    assert run_tool(Action("tool", tool="kb", args={"q": f"team {team}"}), kb) == ",".join(members)
    assert run_tool(Action("tool", tool="kb", args={"q": "boss nobody"}), kb).startswith("error")
    assert run_tool(Action("tool", tool="kb", args={"q": "boss"}), kb).startswith("error")
    for expr in ("41+7", "2*(3+4)-5", "-3*7", "12-30"):
        assert run_tool(Action("tool", tool="calc", args={"x": expr}), kb) == str(eval(expr))
    for bad in ("2**10", "__import__('os')", "1/2", "3+"):
        assert run_tool(Action("tool", tool="calc", args={"x": bad}), kb).startswith("error")
    d = datetime.date(2025, 12, 20) + datetime.timedelta(days=15)
    assert run_tool(Action("tool", tool="date", args={"d": "12-20", "n": 15}), kb) == (
        f"{d:%m-%d} {d.strftime('%a').lower()}")
    bad_day = Action("tool", tool="date", args={"d": "02-30", "n": 1})
    assert run_tool(bad_day, kb).startswith("error")


def test_knowledge_bases_differ_by_seed_and_never_self_boss():
    a, b = KnowledgeBase.draw(1), KnowledgeBase.draw(2)
    assert a != b and KnowledgeBase.draw(1) == a
    assert all(p != q for p, q in zip(a.people, a.boss, strict=True))


def test_tasks_are_deterministic_split_and_vary_in_depth():
    train, test = tasks(0, 200), tasks(0, 60, split="test")
    assert [t.question for t in tasks(0, 200)] == [t.question for t in train]
    assert all(split_of(t.question) == "train" for t in train)
    assert not {(t.question, t.seed) for t in train} & {(t.question, t.seed) for t in test}
    assert {t.kind for t in train} == set(KINDS)
    assert {t.calls for t in train} == {1, 2, 3}
    for t in train + test:
        steps = solve(t)
        assert steps[-1] == (format_answer(t.answer), "") and len(steps) == t.calls + 1
        kb = t.kb
        for action, output in steps[:-1]:  # the reference trajectory replays through the tools
            assert run_tool(check_action(action), kb) == output


def test_intersection_tasks_have_one_answer():
    for t in tasks(3, 40, kinds=("intersect",)):
        words = t.question.rstrip("?").split()
        kb = t.kb
        both = set(kb.members("team", words[4])) & set(kb.members("city", words[7]))
        assert both == {t.answer}


def test_task_bad_input():
    with pytest.raises(ValueError, match="split"):
        tasks(0, 1, split="dev")
    with pytest.raises(ValueError, match="kinds"):
        tasks(0, 1, kinds=("maze",))
    with pytest.raises(ValueError, match="kind"):
        make_task(0, "maze")

"""A tool-use environment: deterministic tools, a JSON call schema and its validator, tasks.

Every task carries its own small knowledge base (drawn from the task's seed), so an agent
cannot answer from memorized facts: it has to call the tools. The tools:

    {"tool":"kb","q":"boss ana"}        -> "R:bo"         relations: boss / city / team / age
    {"tool":"kb","q":"team red"}        -> "R:ana,bo"     members of a team or city
    {"tool":"calc","x":"41+7"}          -> "R:48"         integers with + - * and brackets
    {"tool":"date","d":"03-05","n":12}  -> "R:03-17 mon"  month-day in 2025 plus n days
    {"answer":"48"}                     ends the episode

`check_action` tells a well-formed call apart from the ways it can be malformed
(`MALFORMED`): not JSON, not the schema, an unknown tool, wrong argument names or types.

Tasks vary in planning depth: linear multi-hop chains (follow `boss` links, read an
attribute, optionally add a number with the calculator: 1-3 calls), constraint
intersections (the one person in a given team and a given city: 2 calls) and date
arithmetic (1 call). `solve` writes the reference trajectory of a task.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime
import json
import zlib
from collections.abc import Sequence

import numpy as np

NAMES = ("ana", "bo", "cy", "dee", "eli", "fay", "gus", "hal", "ida", "jo", "kim", "lou",
         "max", "ned", "oz", "pia")
CITIES = ("oslo", "rome", "lima", "kyiv", "pune", "baku")
TEAMS = ("red", "blue", "gold", "jade")
ATTRIBUTES = ("city", "team", "age")
TOOLS = ("kb", "calc", "date")
KINDS = ("chain", "chain_calc", "intersect", "date")
MALFORMED = ("not_json", "schema", "unknown_tool", "bad_args")
YEAR = 2025
_ARGS = {"kb": {"q": str}, "calc": {"x": str}, "date": {"d": str, "n": int}}
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclasses.dataclass(frozen=True)
class KnowledgeBase:
    """One task's facts: per person a boss, a city, a team and an age (people[i] -> row i)."""

    people: tuple[str, ...]
    boss: tuple[str, ...]
    city: tuple[str, ...]
    team: tuple[str, ...]
    age: tuple[int, ...]

    @classmethod
    def draw(cls, seed: int, size: int = 8) -> KnowledgeBase:
        """A random knowledge base of `size` people (bosses never themselves)."""
        rng = np.random.default_rng(seed)
        people = tuple(str(n) for n in rng.choice(NAMES, size, replace=False))
        boss = tuple(people[(i + int(rng.integers(1, size))) % size] for i in range(size))
        return cls(people, boss, tuple(str(c) for c in rng.choice(CITIES, size)),
                   tuple(str(t) for t in rng.choice(TEAMS, size)),
                   tuple(int(a) for a in rng.integers(20, 70, size)))

    def attribute(self, relation: str, person: str) -> str:
        i = self.people.index(person)
        return str(getattr(self, relation)[i])

    def members(self, relation: str, value: str) -> list[str]:
        values = getattr(self, relation)
        return sorted(p for p, v in zip(self.people, values, strict=True) if v == value)

    def query(self, q: str) -> str:
        """The answer to "relation subject" ("boss ana", "team red"), or an error string."""
        parts = q.split()
        if len(parts) != 2:
            return "error: expected 'relation subject'"
        relation, subject = parts
        if relation in ("boss", *ATTRIBUTES) and subject in self.people:
            return self.attribute(relation, subject)
        if (relation, subject) in [("team", t) for t in TEAMS] + [("city", c) for c in CITIES]:
            return ",".join(self.members(relation, subject)) or "none"
        return "error: unknown"


@dataclasses.dataclass(frozen=True)
class Action:
    """A parsed model action.

    Attributes:
      kind: "tool", "answer" or "malformed".
      tool: the tool name (kind "tool").
      args: the call's arguments (kind "tool").
      answer: the final answer (kind "answer").
      error: one of `MALFORMED` (kind "malformed").
    """

    kind: str
    tool: str = ""
    args: dict = dataclasses.field(default_factory=dict)
    answer: str = ""
    error: str = ""


def check_action(text: str) -> Action:
    """Parses and validates one action line against the call schema.

    Args:
      text: the model's action (one line; surrounding whitespace ignored).

    Returns:
      The `Action`; malformed ones name their error.
    """
    try:
        obj = json.loads(text.strip())
    except (json.JSONDecodeError, RecursionError):
        return Action("malformed", error="not_json")
    if not isinstance(obj, dict):
        return Action("malformed", error="schema")
    if set(obj) == {"answer"}:
        return (Action("answer", answer=obj["answer"]) if isinstance(obj["answer"], str)
                else Action("malformed", error="bad_args"))
    tool = obj.get("tool")
    if not isinstance(tool, str):
        return Action("malformed", error="schema")
    if tool not in _ARGS:
        return Action("malformed", error="unknown_tool")
    args = {k: v for k, v in obj.items() if k != "tool"}
    spec = _ARGS[tool]
    if set(args) != set(spec) or any(type(args[k]) is not t for k, t in spec.items()):
        return Action("malformed", error="bad_args")
    return Action("tool", tool=tool, args=args)


def format_call(tool: str, **args) -> str:
    """The canonical JSON text of a call."""
    return json.dumps({"tool": tool, **args}, separators=(",", ":"))


def format_answer(answer: str) -> str:
    return json.dumps({"answer": answer}, separators=(",", ":"))


def _calc(expr: str) -> str:
    if len(expr) > 32 or any(c not in "0123456789+-*() " for c in expr):
        return "error: bad expression"
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError:
        return "error: bad expression"

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult):
            a, b = ev(node.left), ev(node.right)
            return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}[type(node.op)]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        raise ValueError

    try:
        return str(ev(tree))
    except ValueError:
        return "error: bad expression"


def _date(day: str, n: int) -> str:
    try:
        start = datetime.date.fromisoformat(f"{YEAR}-{day}")
    except ValueError:
        return "error: expected MM-DD"
    if abs(n) > 366:
        return "error: n out of range"
    d = start + datetime.timedelta(days=n)
    return f"{d:%m-%d} {_WEEKDAYS[d.weekday()]}"


def run_tool(action: Action, kb: KnowledgeBase) -> str:
    """Executes a well-formed call; the tool's output (errors are outputs, not exceptions)."""
    if action.tool == "kb":
        return kb.query(action.args["q"])
    if action.tool == "calc":
        return _calc(action.args["x"])
    return _date(action.args["d"], action.args["n"])


@dataclasses.dataclass(frozen=True)
class Task:
    """One agent task.

    Attributes:
      question: the user's question.
      answer: the expected final answer.
      kind: one of `KINDS`.
      seed: the seed of the task's knowledge base.
      calls: the tool calls of the reference solution (the planning depth).
    """

    question: str
    answer: str
    kind: str
    seed: int
    calls: int

    @property
    def kb(self) -> KnowledgeBase:
        return KnowledgeBase.draw(self.seed)


def split_of(question: str) -> str:
    """"test" for one question in five (by a hash of its text), else "train"."""
    return "test" if zlib.crc32(question.encode()) % 5 == 0 else "train"


def make_task(seed: int, kind: str) -> Task | None:
    """The task of `kind` drawn from `seed` (None when the draw has no unique answer)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    kb = KnowledgeBase.draw(seed)
    if kind in ("chain", "chain_calc"):
        hops = int(rng.integers(0, 3 if kind == "chain" else 2))
        person = str(rng.choice(kb.people))
        subject = person
        for _ in range(hops):
            subject = kb.attribute("boss", subject)
        if kind == "chain":
            attr = str(rng.choice(ATTRIBUTES))
            question = f"{attr} of " + "boss of " * hops + f"{person}?"
            return Task(question, kb.attribute(attr, subject), kind, seed, hops + 1)
        add = int(rng.integers(2, 40))
        question = "age of " + "boss of " * hops + f"{person} plus {add}?"
        return Task(question, str(int(kb.attribute("age", subject)) + add), kind, seed, hops + 2)
    if kind == "intersect":
        person = str(rng.choice(kb.people))
        team, city = kb.attribute("team", person), kb.attribute("city", person)
        both = sorted(set(kb.members("team", team)) & set(kb.members("city", city)))
        if both != [person]:
            return None
        return Task(f"who is in team {team} and city {city}?", person, kind, seed, 2)
    day = datetime.date(YEAR, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 365)))
    n = int(rng.integers(1, 60))
    ask = str(rng.choice(("weekday", "date")))
    result = _date(f"{day:%m-%d}", n)
    answer = result.split()[1] if ask == "weekday" else result.split()[0]
    return Task(f"{ask} {n} days after {day:%m-%d}?", answer, kind, seed, 1)


def tasks(seed: int, n: int, *, split: str = "train", kinds: Sequence[str] = KINDS
          ) -> list[Task]:
    """`n` tasks of `split`, kinds in turn, drawn deterministically from `seed`.

    Args:
      seed: the stream's seed (tasks use seeds seed * 1_000_003 + i).
      n: how many.
      split: "train" or "test" (disjoint by question text).
      kinds: which task kinds.

    Returns:
      The tasks.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {KINDS}, got {list(kinds)}")
    out, i = [], 0
    while len(out) < n:
        task = make_task(seed * 1_000_003 + i, kinds[i % len(kinds)])
        i += 1
        if task is not None and split_of(task.question) == split:
            out.append(task)
    return out


def solve(task: Task) -> list[tuple[str, str]]:
    """The reference trajectory: (action text, tool output) per round; the last is the
    answer with an empty output."""
    kb, q = task.kb, task.question
    steps: list[tuple[str, str]] = []

    def call(tool, **args):
        out = run_tool(Action("tool", tool=tool, args=args), kb)
        steps.append((format_call(tool, **args), out))
        return out

    if task.kind in ("chain", "chain_calc"):
        words = q.rstrip("?").split()
        attr, hops, person = words[0], words.count("boss"), words[2 + 2 * words.count("boss")]
        for _ in range(hops):
            person = call("kb", q=f"boss {person}")
        value = call("kb", q=f"{attr} {person}")
        if task.kind == "chain_calc":
            value = call("calc", x=f"{value}+{words[-1]}")
    elif task.kind == "intersect":
        words = q.rstrip("?").split()
        a = call("kb", q=f"team {words[4]}").split(",")
        b = call("kb", q=f"city {words[7]}").split(",")
        value = sorted(set(a) & set(b))[0]
    else:
        words = q.rstrip("?").split()
        out = call("date", d=words[4], n=int(words[1]))
        value = out.split()[1] if words[0] == "weekday" else out.split()[0]
    steps.append((format_answer(value), ""))
    return steps

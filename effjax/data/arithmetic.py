"""The reasoning task: multi-step integer arithmetic with the intermediate steps written out.

A problem is a start number and a chain of operations applied left to right; the solution
writes every step, then the answer after '#':

    prompt:    "Q:23+45*3-17\\nA:"
    solution:  "23+45=68,68*3=204,204-17=187#187\\n"

The level is the number of operations. Values stay in [0, 999]; a product's left operand is
below 100. Problems are split by a hash of the prompt (one in ten is a test problem), so no
test prompt is ever a training prompt. Text is tokenized one ASCII character per token
(`CharTokenizer`), so the same vocabulary also reads prose and code for calibration.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from collections.abc import Sequence

import numpy as np

VOCAB_SIZE = 128
PAD_ID = 0
EOS_ID = ord("\n")  # a solution ends with a newline; the prompt's own newline is not generated
LEVELS = (1, 2, 3, 4)
SPLITS = ("train", "test")
_ANSWER = re.compile(r"#+\s*(-?\d[\d,]*)")


class CharTokenizer:
    """ASCII characters as token ids (0-127); anything else becomes '?'."""

    vocab_size = VOCAB_SIZE
    pad_id = PAD_ID
    eos_id = EOS_ID

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`."""
        return [c if c < VOCAB_SIZE else ord("?") for c in map(ord, text)]

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a sequence's first text (no prefix token: the same as `encode`)."""
        return self.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids (padding dropped)."""
        return "".join(chr(i) for i in ids if 0 < i < VOCAB_SIZE)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One arithmetic problem.

    Attributes:
      prompt: "Q:<chain>\\nA:".
      solution: the written steps, "#<answer>" and a newline.
      answer: the final value.
      level: number of operations.
    """

    prompt: str
    solution: str
    answer: int
    level: int


def split_of(prompt: str) -> str:
    """"test" for one prompt in ten (by CRC32), "train" for the rest."""
    return "test" if zlib.crc32(prompt.encode()) % 10 == 0 else "train"


def make_problem(rng: np.random.Generator, level: int) -> Problem:
    """A random problem with `level` operations.

    Args:
      rng: numpy generator.
      level: number of operations (>= 1).

    Returns:
      A `Problem`.
    """
    if level < 1:
        raise ValueError(f"level must be >= 1, got {level}")
    value = int(rng.integers(1, 100))
    chain, steps = str(value), []
    for _ in range(level):
        ops = ["+", "-"] + (["*"] if value < 100 else [])
        op = ops[int(rng.integers(len(ops)))]
        if op == "+" and value >= 900:
            op = "-"
        if op == "-" and value == 0:
            op = "+"
        if op == "+":
            b = int(rng.integers(1, min(99, 999 - value) + 1))
            new = value + b
        elif op == "-":
            b = int(rng.integers(1, min(99, value) + 1))
            new = value - b
        else:
            b = int(rng.integers(2, 10))
            new = value * b
        chain += f"{op}{b}"
        steps.append(f"{value}{op}{b}={new}")
        value = new
    return Problem(prompt=f"Q:{chain}\nA:", solution=",".join(steps) + f"#{value}\n",
                   answer=value, level=level)


def problems(seed: int, n: int, *, split: str = "test", levels: Sequence[int] = (1, 2, 3)
             ) -> list[Problem]:
    """n distinct problems of one split, levels drawn uniformly.

    Args:
      seed: generator seed.
      n: how many.
      split: "train" or "test".
      levels: the levels to draw from.

    Returns:
      A list of `Problem`s with distinct prompts.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = np.random.default_rng(seed)
    out, seen = [], set()
    for _ in range(1000 * n + 1000):
        if len(out) == n:
            return out
        p = make_problem(rng, int(rng.choice(levels)))
        if split_of(p.prompt) == split and p.prompt not in seen:
            seen.add(p.prompt)
            out.append(p)
    raise ValueError(f"only {len(out)} distinct {split} problems at levels {tuple(levels)}; "
                     f"asked for {n}")


def parse_answer(text: str) -> int | None:
    """The integer after the first '#' (or GSM8K's '####') in a generated solution, or
    None; thousands separators are dropped."""
    m = _ANSWER.search(text)
    return None if m is None else int(m.group(1).replace(",", ""))


def exact_match(outputs: Sequence[str], items: Sequence[Problem]) -> float:
    """Fraction of outputs whose parsed answer equals the problem's answer."""
    if len(outputs) != len(items):
        raise ValueError(f"got {len(outputs)} outputs for {len(items)} problems")
    if not items:
        raise ValueError("exact_match needs at least one problem")
    return sum(parse_answer(o) == p.answer for o, p in zip(outputs, items, strict=True)
               ) / len(items)


def encode_examples(items: Sequence[Problem], seq_len: int) -> dict[str, np.ndarray]:
    """Prompt + solution per row, right-padded; the loss mask covers the solution tokens.

    Args:
      items: problems.
      seq_len: row length (an error if a problem does not fit).

    Returns:
      {"tokens": (n, seq_len) int32, "loss_mask": (n, seq_len) bool}; loss_mask[i, j] says
      token j is a solution token (predicted from position j - 1).
    """
    tok = CharTokenizer()
    tokens = np.full((len(items), seq_len), PAD_ID, np.int32)
    mask = np.zeros((len(items), seq_len), bool)
    for i, p in enumerate(items):
        prompt, sol = tok.encode(p.prompt), tok.encode(p.solution)
        if len(prompt) + len(sol) > seq_len:
            raise ValueError(f"problem {p.prompt!r} needs {len(prompt) + len(sol)} tokens, "
                             f"more than {seq_len=}")
        tokens[i, :len(prompt) + len(sol)] = prompt + sol
        mask[i, len(prompt):len(prompt) + len(sol)] = True
    return {"tokens": tokens, "loss_mask": mask}


def training_batch(seed: int, position: int, batch: int, seq_len: int, *,
                   levels: Sequence[int] = (1, 2, 3)) -> dict[str, np.ndarray]:
    """Batch number `position` of a deterministic stream of training problems.

    The same (seed, position) always gives the same batch, so a resumed run reads exactly
    the data it would have read.

    Args:
      seed: stream seed.
      position: batch index in the stream.
      batch, seq_len: batch shape.
      levels: levels drawn uniformly.

    Returns:
      `encode_examples` of `batch` training problems.
    """
    rng = np.random.default_rng([seed, position])
    items = []
    while len(items) < batch:
        p = make_problem(rng, int(rng.choice(levels)))
        if split_of(p.prompt) == "train":
            items.append(p)
    return encode_examples(items, seq_len)


def text_windows(texts: str | Sequence[str], *, num_windows: int, window: int) -> np.ndarray:
    """Character-token windows of text (for calibration in the char vocabulary).

    Args:
      texts: a string or documents, joined by blank lines.
      num_windows, window: how many windows of how many tokens.

    Returns:
      (n, window) int32, n = min(num_windows, available).
    """
    docs = [texts] if isinstance(texts, str) else list(texts)
    ids = CharTokenizer().encode("\n\n".join(docs))
    n = min(num_windows, len(ids) // window)
    if n < 1:
        raise ValueError(f"text has {len(ids)} characters, fewer than one window of {window}")
    return np.asarray(ids[:n * window], np.int32).reshape(n, window)


def problem_text(seed: int, num_chars: int, *, split: str = "train",
                 levels: Sequence[int] = (1, 2, 3)) -> str:
    """Worked problems (prompt + solution) joined into one text of at least num_chars."""
    rng = np.random.default_rng(seed)
    parts, size = [], 0
    while size < num_chars:
        p = make_problem(rng, int(rng.choice(levels)))
        if split_of(p.prompt) == split:
            parts.append(p.prompt + p.solution)
            size += len(parts[-1])
    return "".join(parts)

"""GSM8K grade-school math from local JSONL files, as `arithmetic.Problem`s for any tokenizer.

The files ship with the package (`effjax/data/files/gsm8k`, MIT, see its `SOURCE.md`), or
come from `$EFFJAX_DATA_DIR/gsm8k`; nothing is downloaded.
A problem's prompt is "Question: <question>\\nAnswer:", its solution the worked answer with
the calculator annotations (<<48/2=24>>) removed, ending "#### <answer>" and a newline, so
`arithmetic.parse_answer` and `arithmetic.exact_match` score both tasks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

import numpy as np

from effjax.data.arithmetic import Problem
from effjax.data.corpora import data_file

SPLITS = ("train", "test")
_CALC = re.compile(r"<<[^>]*>>")


class HFTokenizer:
    """A `transformers` tokenizer with the char tokenizer's interface: `encode` adds no
    special tokens, `encode_prompt` puts the tokenizer's prefix token (Gemma's `<bos>`,
    `effjax.models.prefix_token`) before a sequence's first text."""

    def __init__(self, tokenizer):
        from effjax.models.records import prefix_token  # noqa: PLC0415 (data stays light)

        self.tokenizer = tokenizer
        prefix = prefix_token(tokenizer)
        self.prefix = [] if prefix is None else [prefix]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_prompt(self, text: str) -> list[int]:
        return self.prefix + self.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def load_gsm8k(split: str = "test", *, root: str | None = None, limit: int | None = None
               ) -> list[Problem]:
    """GSM8K problems of one split.

    Args:
      split: "train" (7,473) or "test" (1,319).
      root: the data directory (default `data_dir()`).
      limit: keep the first `limit` problems.

    Returns:
      `Problem`s (level = the number of solution lines); answers that are not integers
      are skipped.

    Raises:
      ValueError: an unknown split, or its file is absent (naming the splits there).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = data_file("gsm8k", split, ".jsonl", root=root)
    out = []
    for line in path.read_text().splitlines():
        if limit is not None and len(out) == limit:
            break
        row = json.loads(line)
        steps, _, final = row["answer"].rpartition("####")
        final = final.strip().replace(",", "")
        if not re.fullmatch(r"-?\d+", final):
            continue
        steps = _CALC.sub("", steps).strip()
        out.append(Problem(prompt=f"Question: {row['question'].strip()}\nAnswer:",
                           solution=f" {steps}\n#### {final}\n", answer=int(final),
                           level=steps.count("\n") + 1))
    return out


def encode_problems(items: Sequence[Problem], tokenizer, seq_len: int
                    ) -> dict[str, np.ndarray]:
    """Prompt + solution rows for a tokenizer (rows longer than seq_len are cut there).

    Returns:
      {"tokens": (n, seq_len) int32, "loss_mask": (n, seq_len) bool on the solution tokens}.
    """
    tokens = np.zeros((len(items), seq_len), np.int32)
    mask = np.zeros((len(items), seq_len), bool)
    for i, p in enumerate(items):
        prompt, sol = tokenizer.encode_prompt(p.prompt), tokenizer.encode(p.solution)
        row = (prompt + sol)[:seq_len]
        tokens[i, :len(row)] = row
        mask[i, len(prompt):len(row)] = True
    return {"tokens": tokens, "loss_mask": mask}


def batch_at(items: Sequence[Problem], tokenizer, seed: int, position: int, batch: int,
             seq_len: int) -> dict[str, np.ndarray]:
    """Batch number `position` of a deterministic stream drawn from items (with
    replacement), as `encode_problems` rows."""
    rng = np.random.default_rng([seed, position])
    return encode_problems([items[i] for i in rng.integers(len(items), size=batch)],
                           tokenizer, seq_len)

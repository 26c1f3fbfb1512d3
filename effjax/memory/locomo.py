"""LoCoMo long-term conversations as memory episodes and evidence-scored questions."""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
import re
import string

import numpy as np

from effjax.data.corpora import data_dir
from effjax.memory.timeparse import parse_timestamp


@dataclasses.dataclass(frozen=True)
class Turn:
    """One utterance: its LoCoMo id ("D3:7"), speaker, text (with any shared photo's
    caption), session ("session_3") and the session's timestamp."""

    dia_id: str
    speaker: str
    text: str
    session: str
    timestamp: float


@dataclasses.dataclass(frozen=True)
class Question:
    """A question, its answer, the dia_ids of its evidence turns and its category (1-4
    answerable, 5 adversarial)."""

    question: str
    answer: str
    evidence: tuple[str, ...]
    category: int


@dataclasses.dataclass(frozen=True)
class Conversation:
    sample_id: str
    turns: list[Turn]
    questions: list[Question]


def load_locomo(folder: str | pathlib.Path | None = None) -> list[Conversation]:
    """The conversations of a folder of LoCoMo records (`<id>.json`), in file-name order.

    Args:
      folder: the records' folder (default: the six shipped with the package,
        `effjax.data.data_dir() / "locomo"`, CC BY-NC 4.0, see its `SOURCE.md`).

    Returns:
      One `Conversation` per record.

    Raises:
      ValueError: the folder holds no `.json` record (naming what it holds).
    """
    folder = pathlib.Path(folder) if folder is not None else data_dir() / "locomo"
    files = sorted(folder.glob("*.json"))
    if not files:
        have = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else "no such folder"
        raise ValueError(f"no LoCoMo records (*.json) in {folder}; it holds: {have}")
    out = []
    for f in files:
        raw = json.loads(f.read_text())
        conv = raw.get("conversation", raw)
        turns = []
        s = 1
        while f"session_{s}_date_time" in conv:
            when = parse_timestamp(conv[f"session_{s}_date_time"],
                                   name=f"{f.name} session_{s}_date_time")
            for i, t in enumerate(conv.get(f"session_{s}", [])):
                text = t["text"]
                if t.get("blip_caption"):
                    text = f"{text} [shares {t['blip_caption']}]"
                # Turns of a session share its date; keep their order with 1 s steps.
                turns.append(Turn(t["dia_id"], t["speaker"], text, f"session_{s}", when + i))
            s += 1
        questions = [Question(q["question"], str(q.get("answer", q.get("adversarial_answer"))),
                              tuple(q.get("evidence", ())), int(q["category"]))
                     for q in raw["qa"]]
        out.append(Conversation(f.stem, turns, questions))
    return out


def _answer_tokens(text: str) -> list[str]:
    """LoCoMo's normalisation (lower case, no punctuation, no a/an/the/and), Porter-stemmed."""
    from nltk.stem import PorterStemmer

    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    stem = PorterStemmer().stem
    return [stem(w) for w in re.sub(r"\b(a|an|the|and)\b", " ", text).split()]


def _token_f1(prediction: str, gold: str) -> float:
    p, g = _answer_tokens(prediction), _answer_tokens(gold)
    same = sum((collections.Counter(p) & collections.Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def answer_f1(prediction: str, answer: str, category: int) -> float:
    """LoCoMo's question-answering F1 of one prediction (as its evaluation defines it).

    Token F1 after normalising and Porter-stemming both sides. Multi-hop answers
    (category 1) are split at commas on both sides: the mean over gold parts of the best
    F1 against any predicted part. Open-domain gold answers (category 3) keep the part
    before the first ";".

    Args:
      prediction: the reader's answer.
      answer: the gold answer.
      category: the question's category, 1-4 (5, adversarial, is judged differently).

    Returns:
      F1 in [0, 1].

    Raises:
      ValueError: category is not 1-4.
    """
    if category not in (1, 2, 3, 4):
        raise ValueError(f"expected category in 1-4, got {category!r}")
    if category == 3:
        answer = answer.split(";")[0].strip()
    if category == 1:
        preds = [p.strip() for p in prediction.split(",")]
        return float(np.mean([max(_token_f1(p, g.strip()) for p in preds)
                              for g in answer.split(",")]))
    return _token_f1(prediction, answer)

"""LoCoMo long-term conversations as memory episodes and evidence-scored questions."""

from __future__ import annotations

import dataclasses
import json
import pathlib

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

"""A procedural visual question-answering task: coloured shapes on a grid.

An image is 64x64 RGB: a dark noisy background divided into an 8x8 grid of 8-pixel cells,
with a few objects (a colour and a shape, each drawn 6 pixels wide at a small random offset
inside its own cell). A cell is exactly one merged token of a Qwen2.5-VL-shaped encoder with
4-pixel patches merged 2x2, so most visual tokens are background: what visual token pruning
should drop. Each image comes with one question and a one-word answer:

    color      what color is the <shape> ?             (a shape present once)   -> <color>
    shape      what shape is the <color> one ?         (a colour present once)  -> <shape>
    count      how many <color> ? / how many <shape> ?                          -> 0 .. 9
    left       is the <c1> <s1> left of the <c2> <s2> ? (two objects, columns differ) -> yes/no
    exists     is there a <color> <shape> ?                                     -> yes/no

Splits draw scenes from disjoint seed streams: "train" and "test" hold 3-6 objects; "hard"
(held out, never trained on) holds 7-10, so counts run higher and every question has more
distractors. Text is word-level (`WORDS`); a prompt is

    <bos> <vision_start> <image> x 64 <vision_end> question words

and the answer is one word followed by <eos>.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

IMAGE_SIZE, CELL, GRID = 64, 8, 8
SPECIAL = ("<pad>", "<bos>", "<eos>", "<vision_start>", "<vision_end>", "<image>")
COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 235),
          "yellow": (230, 210, 40), "purple": (150, 60, 200), "cyan": (40, 200, 210),
          "orange": (240, 140, 30), "white": (235, 235, 235)}
SHAPES = ("square", "circle", "triangle", "cross")
WORDS = (*SPECIAL, "what", "color", "is", "the", "shape", "one", "how", "many", "left", "of",
         "there", "a", "?", "yes", "no", *COLORS, *SHAPES, *"0123456789")
VOCAB = {w: i for i, w in enumerate(WORDS)}
PAD_ID, BOS_ID, EOS_ID, VISION_START_ID, VISION_END_ID, IMAGE_ID = range(6)
VOCAB_SIZE = 48  # len(WORDS) = 43, rounded up to a multiple of 16 for the embedding
KINDS = ("color", "shape", "count", "left", "exists")
SPLITS = {"train": (3, 6, 0), "test": (3, 6, 1), "hard": (7, 10, 2)}  # objects, seed stream
IMAGE_TOKENS = GRID * GRID
PROMPT_LEN = 3 + IMAGE_TOKENS + 10  # <bos> <vision_start> image <vision_end>, 10 words


def _glyphs() -> dict[str, np.ndarray]:
    y, x = np.mgrid[0:6, 0:6] + 0.5
    return {"square": np.ones((6, 6), bool),
            "circle": (y - 3) ** 2 + (x - 3) ** 2 <= 9.0,
            "triangle": np.abs(x - 3) <= y / 2,
            "cross": (np.abs(x - 3) < 1.1) | (np.abs(y - 3) < 1.1)}


_GLYPHS = _glyphs()


@dataclasses.dataclass(frozen=True)
class Scene:
    """Objects as (row, column, color, shape) cells of the 8x8 grid."""

    objects: tuple[tuple[int, int, str, str], ...]


@dataclasses.dataclass(frozen=True)
class Example:
    """One image, its question and answer.

    Attributes:
      image: (64, 64, 3) float32 in [0, 1].
      question: space-separated words.
      answer: one word.
      kind: the question type (`KINDS`).
      scene: the objects drawn.
    """

    image: np.ndarray
    question: str
    answer: str
    kind: str
    scene: Scene


def render(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Draws a scene: (64, 64, 3) float32 in [0, 1]."""
    img = np.clip(30 + rng.normal(0, 6, (IMAGE_SIZE, IMAGE_SIZE, 3)), 0, 255)
    for row, col, color, shape in scene.objects:
        dy, dx = rng.integers(0, 3, 2)
        y0, x0 = row * CELL + dy, col * CELL + dx
        patch = img[y0:y0 + 6, x0:x0 + 6]
        patch[_GLYPHS[shape]] = COLORS[color]
    return (img / 255.0).astype(np.float32)


def cell_labels(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell object labels in row-major cell order (the merged visual tokens' order):
    (colour index + 1, shape index + 1), 0 where the cell is empty."""
    color = np.zeros(GRID * GRID, np.int32)
    shape = np.zeros(GRID * GRID, np.int32)
    for row, col, c, s in scene.objects:
        color[row * GRID + col] = list(COLORS).index(c) + 1
        shape[row * GRID + col] = SHAPES.index(s) + 1
    return color, shape


def _question(scene: Scene, rng: np.random.Generator) -> tuple[str, str, str]:
    objs = scene.objects
    colors = [o[2] for o in objs]
    shapes = [o[3] for o in objs]
    while True:
        kind = KINDS[rng.integers(len(KINDS))]
        if kind == "color":
            once = [s for s in SHAPES if shapes.count(s) == 1]
            if once:
                s = once[rng.integers(len(once))]
                return kind, f"what color is the {s} ?", colors[shapes.index(s)]
        elif kind == "shape":
            once = [c for c in COLORS if colors.count(c) == 1]
            if once:
                c = once[rng.integers(len(once))]
                return kind, f"what shape is the {c} one ?", shapes[colors.index(c)]
        elif kind == "count":
            if rng.random() < 0.5:
                c = list(COLORS)[rng.integers(len(COLORS))]
                return kind, f"how many {c} ?", str(colors.count(c))
            s = SHAPES[rng.integers(len(SHAPES))]
            return kind, f"how many {s} ?", str(shapes.count(s))
        elif kind == "left":
            pairs = [(o[2], o[3]) for o in objs]
            unique = [o for o in objs if pairs.count((o[2], o[3])) == 1]
            if len(unique) < 2:
                continue
            i, j = rng.permutation(len(unique))[:2]
            a, b = unique[i], unique[j]
            if a[1] != b[1]:
                return (kind, f"is the {a[2]} {a[3]} left of the {b[2]} {b[3]} ?",
                        "yes" if a[1] < b[1] else "no")
        else:
            if rng.random() < 0.5:
                o = objs[rng.integers(len(objs))]
                return kind, f"is there a {o[2]} {o[3]} ?", "yes"
            absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in
                      [(o[2], o[3]) for o in objs]]
            c, s = absent[rng.integers(len(absent))]
            return kind, f"is there a {c} {s} ?", "no"


def scene_questions(split: str, index: int, seed: int = 0, count: int = 1
                    ) -> tuple[np.ndarray, Scene, list[tuple[str, str, str]]]:
    """The `index`-th scene of a split with `count` questions about it (deterministic; the
    first question is `example`'s).

    Args:
      split: "train", "test" or "hard".
      index: any non-negative integer.
      seed: selects another draw of every split.
      count: questions drawn (independently, so they may repeat).

    Returns:
      (image (64, 64, 3) float32 in [0, 1], scene, [(kind, question, answer)] * count).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    lo, hi, stream = SPLITS[split]
    rng = np.random.default_rng([seed, stream, index])
    n = int(rng.integers(lo, hi + 1))
    cells = rng.choice(GRID * GRID, n, replace=False)
    scene = Scene(tuple((int(c // GRID), int(c % GRID), list(COLORS)[rng.integers(len(COLORS))],
                         SHAPES[rng.integers(len(SHAPES))]) for c in cells))
    image = render(scene, rng)
    return image, scene, [_question(scene, rng) for _ in range(count)]


def example(split: str, index: int, seed: int = 0) -> Example:
    """The `index`-th example of a split (deterministic): `scene_questions`' scene and first
    question."""
    image, scene, ((kind, question, answer),) = scene_questions(split, index, seed)
    return Example(image, question, answer, kind, scene)


def blind_answers(n: int = 2000, seed: int = 0) -> dict[str, str]:
    """The best image-blind guess: each question kind's most common answer over the first `n`
    training examples (what a model that ignores the image can reach)."""
    answers: dict[str, list[str]] = {k: [] for k in KINDS}
    for i in range(n):
        ex = example("train", i, seed)
        answers[ex.kind].append(ex.answer)
    return {k: max(sorted(set(a)), key=a.count) for k, a in answers.items() if a}


def encode(words: str) -> list[int]:
    """Token ids of space-separated words."""
    unknown = [w for w in words.split() if w not in VOCAB]
    if unknown:
        raise ValueError(f"words outside the vocabulary: {unknown}")
    return [VOCAB[w] for w in words.split()]


def prompt_tokens(question: str) -> list[int]:
    """<bos> <vision_start> <image> x 64 <vision_end> question."""
    return [BOS_ID, VISION_START_ID, *[IMAGE_ID] * IMAGE_TOKENS, VISION_END_ID,
            *encode(question)]


def batch(examples: Sequence[Example], *, with_answer: bool = False) -> dict[str, np.ndarray]:
    """Right-padded arrays of a list of examples (the image tokens sit at the same indices,
    2 .. 65, in every row).

    Args:
      examples: the examples.
      with_answer: append the answer and <eos> (training sequences).

    Returns:
      {"images": (n, 64, 64, 3), "tokens": (n, t) int32, "mask": (n, t) bool,
       "answer": (n,) int32, "last": (n,) int32 index of the last prompt token}, t =
       PROMPT_LEN (+ 2 with answers).
    """
    width = PROMPT_LEN + (2 if with_answer else 0)
    tokens = np.full((len(examples), width), PAD_ID, np.int32)
    last = np.zeros(len(examples), np.int32)
    for i, ex in enumerate(examples):
        row = prompt_tokens(ex.question)
        last[i] = len(row) - 1
        if with_answer:
            row = row + [VOCAB[ex.answer], EOS_ID]
        tokens[i, :len(row)] = row
    return {"images": np.stack([ex.image for ex in examples]), "tokens": tokens,
            "mask": tokens != PAD_ID, "answer": np.array([VOCAB[ex.answer] for ex in examples],
                                                        np.int32), "last": last}


def training_batch(split: str, indices: Sequence[int], seed: int = 0, questions: int = 4
                   ) -> dict[str, np.ndarray]:
    """Training sequences with several questions about each image, answered in turn:

        <bos> <vision_start> <image> x 64 <vision_end> q1 a1 q2 a2 ... <eos>

    Every answer (and the final <eos>) is a target, so one pass of the vision encoder
    teaches `questions` answers; the first question's prefix is exactly `batch`'s prompt.

    Args:
      split, seed: as in `scene_questions`.
      indices: the scenes.
      questions: questions per image.

    Returns:
      {"images", "tokens" (n, t), "mask", "answer_at" (n, questions): the index of each
      question's last token (whose next token is the answer), "last": answer_at[:, 0],
      "cell_color", "cell_shape" (n, 64): `cell_labels` of each scene}, right-padded to
      t = PROMPT_LEN + 11 * questions - 9.
    """
    width = 3 + IMAGE_TOKENS + 11 * questions + 1
    tokens = np.full((len(indices), width), PAD_ID, np.int32)
    answer_at = np.zeros((len(indices), questions), np.int32)
    images, labels = [], []
    for i, index in enumerate(indices):
        image, scene, qas = scene_questions(split, index, seed, questions)
        images.append(image)
        labels.append(cell_labels(scene))
        row = [BOS_ID, VISION_START_ID, *[IMAGE_ID] * IMAGE_TOKENS, VISION_END_ID]
        for j, (_, question, answer) in enumerate(qas):
            row += encode(question)
            answer_at[i, j] = len(row) - 1
            row.append(VOCAB[answer])
        tokens[i, :len(row) + 1] = row + [EOS_ID]
    return {"images": np.stack(images), "tokens": tokens, "mask": tokens != PAD_ID,
            "answer_at": answer_at, "last": answer_at[:, 0].copy(),
            "cell_color": np.stack([c for c, _ in labels]),
            "cell_shape": np.stack([s for _, s in labels])}

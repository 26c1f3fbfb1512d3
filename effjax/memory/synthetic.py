"""Realistic synthetic memories: timestamped multi-speaker chat episodes at any scale.

Episodes are first-person chat turns built from templates over everyday life (work,
family, hobbies, travel, food, health, pets, events), said by pairs of speakers in
sessions days apart, so a memory of 10^6 distinct episodes has the shape of many
LoCoMo-style conversations.
"""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np

from effjax.data.corpora import data_file

_NAMES = """Aaron Abby Adam Aisha Alex Alice Amir Ana Andre Anna Ben Bianca Blake Brooke Caleb
Carla Carlos Chen Chloe Chris Clara Dan Dana Daniel Devi Diego Dylan Eli Elena Emma Eric Eva
Farah Felix Fiona Gabe Grace Hana Hank Hugo Ian Ines Isaac Ivy Jack Jade Jamal James Jana Jay
Jin Joe Jonas Julia Kai Kara Kate Kenji Kim Kofi Lara Leo Lena Liam Lily Luca Lucy Luis Maya
Mia Mike Mila Nadia Nate Nina Noah Nora Omar Owen Paul Pia Priya Quinn Rafael Rosa Ruby Ryan
Sam Sara Sean Sofia Tara Theo Tom Uma Vera Victor Wen Will Xavier Yara Yusuf Zara Zoe""".split()
_RELATIONS = ("sister", "brother", "mom", "dad", "grandma", "grandpa", "cousin", "aunt", "uncle",
              "best friend", "neighbor", "coworker", "boss", "roommate", "partner", "son",
              "daughter", "niece", "nephew", "old classmate")
_ACTIVITIES = ("went hiking", "tried pottery", "ran a half marathon", "started learning guitar",
               "baked sourdough bread", "went camping", "painted a landscape", "joined a book club",
               "volunteered at the shelter", "took a cooking class", "went to a concert",
               "planted tomatoes", "went kayaking", "visited a museum", "practiced yoga",
               "went bird watching", "built a bookshelf", "started a podcast", "went skiing",
               "learned to knit", "played chess in the park", "went to the farmers market",
               "took salsa lessons", "wrote a short story", "went fishing", "rode a bike trail",
               "went rock climbing", "did a jigsaw puzzle", "watched a documentary",
               "went to a pottery fair", "adopted a kitten", "repainted the kitchen",
               "went to a job interview", "gave a talk at work", "finished a certification",
               "moved to a new apartment", "went to a wedding", "hosted a barbecue",
               "went to the dentist", "started therapy", "signed up for a marathon",
               "went on a road trip", "saw the northern lights", "went to a comedy show",
               "learned to swim", "started a vegetable garden", "went to a support group",
               "fixed an old car", "took a photography course", "went scuba diving")
_PLACES = ("the lake", "the mountains", "downtown", "the beach", "the community center",
           "the library", "a small cafe", "the old factory", "the national park",
           "my hometown", "the city museum", "the river trail", "a friend's cabin",
           "the botanical garden", "the gym", "the art studio", "the train station",
           "the farmers market", "the school", "the hospital", "the stadium", "the bakery",
           "the island", "the countryside", "the harbor", "the ski resort", "the zoo")
_OBJECTS = ("a handmade scarf", "a vintage camera", "a new laptop", "a cookbook",
            "a pair of running shoes", "a watercolor set", "concert tickets", "a houseplant",
            "a puzzle", "a record player", "a telescope", "a journal", "a board game",
            "a bike helmet", "a tent", "a sketchbook", "a coffee grinder", "a yoga mat",
            "a kayak paddle", "a fountain pen", "a quilt", "a bird feeder", "a guitar",
            "a necklace", "a tea set", "a drone", "a map of Europe", "a rescue dog")
_FEELINGS = ("amazing", "exhausting", "so relaxing", "a bit scary", "really fun",
             "overwhelming", "peaceful", "hilarious", "bittersweet", "super rewarding",
             "stressful", "inspiring", "awkward at first", "unforgettable", "calming")
_WHEN = ("last weekend", "yesterday", "this morning", "a few days ago", "last month",
         "on Friday night", "over the holidays", "during my vacation", "after work",
         "on my birthday", "early on Sunday", "two weeks ago", "last summer", "in the spring")
_TEMPLATES = (
    "I {act} at {place} {when}, and it was {feel}.",
    "My {rel} and I {act} {when}. Honestly it was {feel}!",
    "{when_cap} I {act} with my {rel}; {place} was {feel}.",
    "Guess what, my {rel} gave me {obj} {when}.",
    "I've been thinking about how {feel} it was when we {act} at {place}.",
    "Did I tell you I {act} {when}? My {rel} came along.",
    "I bought {obj} {when} because I {act} and loved it.",
    "We finally {act} near {place}. {feel_cap} day overall.",
    "{name}, you'd love {place}; I {act} there {when}.",
    "My {rel} keeps asking if I {act} again since it was {feel}.",
    "I found {obj} at {place} {when}. It reminded me of my {rel}.",
    "Work has been {feel}, so I {act} {when} to clear my head.",
    "Thanks {name}! I {act} {when} and brought {obj} back for you.",
    "It was {feel} to see my {rel} at {place} {when}.",
)


@dataclasses.dataclass(frozen=True)
class SyntheticEpisodes:
    """Parallel lists of a synthetic memory: text, speaker, session and epoch seconds."""

    texts: list[str]
    speakers: list[str]
    sessions: list[str]
    timestamps: np.ndarray


def synthetic_episodes(n: int, *, seed: int = 0, turns_per_session: int = 20,
                       start: float = 1.5e9) -> SyntheticEpisodes:
    """n distinct chat episodes from speaker pairs, in sessions 1-14 days apart.

    Args:
      n: number of episodes (>= 0).
      seed: generator seed (the same seed gives the same memory).
      turns_per_session: turns in each two-speaker session.
      start: epoch seconds of the first session.

    Returns:
      `SyntheticEpisodes` in time order; texts are unique.
    """
    if n < 0:
        raise ValueError(f"expected n >= 0, got {n}")
    rng = np.random.default_rng(seed)
    texts, speakers, sessions, stamps = [], [], [], []
    seen: set[str] = set()
    t, s = start, 0
    while len(texts) < n:
        a, b = rng.choice(len(_NAMES), 2, replace=False)
        t += float(rng.uniform(1, 14)) * 86400
        for i in range(turns_per_session):
            if len(texts) >= n:
                break
            me, you = (_NAMES[a], _NAMES[b]) if i % 2 == 0 else (_NAMES[b], _NAMES[a])
            pick = lambda xs: xs[rng.integers(len(xs))]  # noqa: E731
            when, feel = pick(_WHEN), pick(_FEELINGS)
            text = pick(_TEMPLATES).format(
                act=pick(_ACTIVITIES), place=pick(_PLACES), when=when, feel=feel,
                rel=pick(_RELATIONS), obj=pick(_OBJECTS), name=you,
                when_cap=when[0].upper() + when[1:], feel_cap=feel[0].upper() + feel[1:])
            if text in seen:
                continue
            seen.add(text)
            texts.append(text)
            speakers.append(me)
            sessions.append(f"synthetic_{s}")
            stamps.append(t + 60.0 * i)
        s += 1
    return SyntheticEpisodes(texts, speakers, sessions, np.asarray(stamps))


def _detokenize(s: str) -> str:
    """WikiText-2's tokenized spacing back to plain text ("3 @.@ 5 , and" -> "3.5, and")."""
    s = re.sub(r" @(.)@ ", r"\1", s)
    s = re.sub(r" ([,.;:!?)]|'s|n't)", r"\1", s)
    return re.sub(r"([(]) ", r"\1", s).strip()


def corpus_sentences(root: str | None = None) -> list[str]:
    """The distinct 5-40 word sentences of WikiText-2 (valid, test; articles' text, no
    headings, none with <unk>) and GSM8K (train, test; questions and solution steps,
    calculator annotations removed), in file order.

    Args:
      root: the data directory (default `effjax.data.data_dir()`).
    """
    out: dict[str, None] = {}
    for split in ("valid", "test"):
        for line in data_file("wikitext-2", split, ".txt", root=root).read_text(
                encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("="):
                for s in re.split(r"(?<= \.) (?=[A-Z])", line):
                    if "<unk>" not in s:
                        out[_detokenize(s)] = None
    for split in ("train", "test"):
        for line in data_file("gsm8k", split, ".jsonl", root=root).read_text(
                encoding="utf-8").splitlines():
            row = json.loads(line)
            body = row["question"] + "\n" + re.sub(r"<<[^>]*>>", "",
                                                   row["answer"].rpartition("####")[0])
            for s in re.split(r"(?<=[.?!])\s+|\n", body):
                out[s.strip()] = None
    return [s for s in out if 5 <= len(s.split()) <= 40]


def corpus_episodes(n: int, *, seed: int = 0, turns_per_session: int = 20,
                    start: float = 1.5778368e9, days: float = 1827.0,
                    root: str | None = None) -> SyntheticEpisodes:
    """n distinct episodes of real text (not templates), said by synthetic speakers.

    The texts are `corpus_sentences` in a seeded random order, one per episode; past
    those (~64k), two distinct random sentences joined by a space, each pair used once.
    Each session is a pair of synthetic speakers taking turns a minute apart; sessions
    start at uniform random times in [start, start + days), so the first m episodes of
    any memory span the same years (by default 2020-2024, around LoCoMo's 2022-2023).

    Args:
      n: number of episodes (>= 0).
      seed: generator seed (the same seed gives the same memory).
      turns_per_session: turns in each two-speaker session.
      start: epoch seconds where the sessions' span begins (2020-01-01 UTC).
      days: length of that span.
      root: the data directory (default `effjax.data.data_dir()`).

    Returns:
      `SyntheticEpisodes`, session after session (not in time order); texts are unique.

    Raises:
      ValueError: n < 0.
    """
    if n < 0:
        raise ValueError(f"expected n >= 0, got {n}")
    rng = np.random.default_rng(seed)
    pool = corpus_sentences(root)
    texts = [pool[i] for i in rng.permutation(len(pool))[:n]]
    seen = set(texts)
    while len(texts) < n:
        a, b = rng.integers(len(pool), size=(2, 2 * (n - len(texts))))
        for i, j in zip(a.tolist(), b.tolist(), strict=True):
            text = f"{pool[i]} {pool[j]}"
            if i != j and text not in seen and len(texts) < n:
                seen.add(text)
                texts.append(text)
    speakers, sessions, stamps = [], [], []
    n_sessions = -(-n // turns_per_session)
    starts = rng.uniform(start, start + days * 86400, n_sessions)
    for s, t in enumerate(starts.tolist()):
        a, b = rng.choice(len(_NAMES), 2, replace=False)
        for i in range(min(turns_per_session, n - s * turns_per_session)):
            speakers.append(_NAMES[a] if i % 2 == 0 else _NAMES[b])
            sessions.append(f"corpus_{s}")
            stamps.append(t + 60.0 * i)
    return SyntheticEpisodes(texts, speakers, sessions, np.asarray(stamps))

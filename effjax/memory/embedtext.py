"""What an episode's embedding is computed from: its text with the context a retriever needs.

A chat turn alone ("Yes, I did!") rarely says who spoke or when, but questions about a
memory name both ("What did Caroline do in May 2023?"). The store embeds each episode as
`template.format(speaker=..., date=..., session=..., text=...)` and returns the text
unchanged; queries are embedded as they are written. On the six shipped LoCoMo
conversations (MiniLM-L6, exhaustive search, categories 1-4) evidence recall@10 is 30.9
for the bare text, 48.7 with "{speaker}: {text}" and 55.4 with the default
"{speaker} ({date}): {text}" (`experiments/results/swiftmem.md` has the table).
"""

from __future__ import annotations

import datetime
import string

DEFAULT_TEMPLATE = "{speaker} ({date}): {text}"
FIELDS = ("speaker", "date", "session", "text")


def check_template(template: str) -> str:
    """Returns the template if it formats with `FIELDS` and names {text}.

    Raises:
      ValueError: not a string, a field outside `FIELDS`, a positional or malformed
        field, or no {text}.
    """
    if not isinstance(template, str):
        raise ValueError(f"expected embed_template to be a str, got {type(template).__name__}")
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ValueError(f"embed_template {template!r} is not a format string: {e}") from None
    bad = [f for f in names if f not in FIELDS]
    if bad or "text" not in names:
        raise ValueError(f"expected embed_template to use only the fields {FIELDS} and "
                         f"include {{text}}, got {template!r}")
    return template


def embedding_text(text: str, *, speaker: str, timestamp: float, session: str | None = None,
                   template: str = DEFAULT_TEMPLATE) -> str:
    """The string an episode's embedding is computed from.

    Args:
      text: what was said.
      speaker: who said it.
      timestamp: seconds since 1970-01-01 UTC; {date} renders it as "8 May 2023" (UTC).
      session: the session name ({session}; "" when None).
      template: a format string over `FIELDS` (see `check_template`).

    Returns:
      The formatted string.
    """
    day = datetime.datetime.fromtimestamp(float(timestamp), datetime.UTC)
    return template.format(speaker=speaker, date=f"{day.day} {day:%B %Y}",
                           session=session or "", text=text)

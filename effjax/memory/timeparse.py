"""Timestamps and time hints: the parsing half of SwiftMem's temporal index.

Timestamps are float seconds since the Unix epoch (UTC). `parse_timestamp` accepts
datetimes, numbers, ISO 8601 and LoCoMo's "1:56 pm on 8 May, 2023". `parse_time_hint`
finds a time restriction in a query ("last week", "in May 2023", "before 3 June 2023",
"after the trip") relative to a reference date; a query without one is unrestricted.
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import re

_UTC = dt.UTC
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
_MONTH = r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|" \
         r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
            "seven": 7, "eight": 8, "nine": 9, "ten": 10, "twelve": 12}
_UNIT_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}


def _epoch(d: dt.datetime) -> float:
    return (d if d.tzinfo else d.replace(tzinfo=_UTC)).timestamp()


def _day(y: int, m: int, d: int) -> tuple[float, float]:
    start = dt.datetime(y, m, d, tzinfo=_UTC)
    return _epoch(start), _epoch(start + dt.timedelta(days=1))


def _month(y: int, m: int) -> tuple[float, float]:
    end = dt.datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=_UTC)
    return _epoch(dt.datetime(y, m, 1, tzinfo=_UTC)), _epoch(end)


def _year(y: int) -> tuple[float, float]:
    return _epoch(dt.datetime(y, 1, 1, tzinfo=_UTC)), _epoch(dt.datetime(y + 1, 1, 1, tzinfo=_UTC))


_LOCOMO = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*([ap]m)\s+on\s+(\d{1,2})\s+" + _MONTH
                     + r",?\s+(\d{4})\s*$", re.I)


def parse_timestamp(value, *, name: str = "timestamp") -> float:
    """Seconds since the epoch (UTC) of a timestamp given in any supported form.

    Args:
      value: a `datetime` (naive = UTC), a `date`, an int/float epoch, an ISO 8601 string,
        or LoCoMo's "1:56 pm on 8 May, 2023".
      name: the argument's name, for the error message.

    Returns:
      Float seconds since 1970-01-01 UTC.

    Raises:
      ValueError: the value is none of those forms.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {name} to be a datetime, epoch seconds or a date string, "
                         f"got {value!r}")
    if isinstance(value, int | float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"expected {name} to be finite, got {value!r}")
        return float(value)
    if isinstance(value, dt.datetime):
        return _epoch(value)
    if isinstance(value, dt.date):
        return _day(value.year, value.month, value.day)[0]
    if isinstance(value, str):
        m = _LOCOMO.match(value)
        if m:
            hour, minute, ampm, day, month, year = m.groups()
            hour = int(hour) % 12 + (12 if ampm.lower() == "pm" else 0)
            return _epoch(dt.datetime(int(year), _MONTHS[month.lower()[:3]], int(day), hour,
                                      int(minute), tzinfo=_UTC))
        try:
            return _epoch(dt.datetime.fromisoformat(value.strip()))
        except ValueError:
            pass
        found = _day_match(value.strip())
        if found and found[0].span() == (0, len(value.strip())):
            return found[1][0]
    raise ValueError(f"expected {name} to be a datetime, epoch seconds, an ISO 8601 string or "
                     f"'1:56 pm on 8 May, 2023', got {value!r}")


@dataclasses.dataclass(frozen=True)
class TimeHint:
    """A time restriction found in a query.

    Attributes:
      start, end: the half-open range [start, end) in epoch seconds (None = unbounded),
        or both None when the hint is an event anchor.
      anchor: for "before/after <event>" with no date, the event's text (the store
        resolves it by searching the memory for the event).
      relation: "before" or "after" for an anchor, else None.
      text: the words of the query that gave the hint.
    """

    start: float | None
    end: float | None
    anchor: str | None = None
    relation: str | None = None
    text: str = ""


_DAY_PATTERNS = [
    re.compile(r"\b(\d{4})-(\d{2})-(\d{2})\b"),
    re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)?\s+" + _MONTH + r",?\s+(\d{4})\b", re.I),
    re.compile(r"\b" + _MONTH + r"\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})\b", re.I),
]
_MONTH_YEAR = re.compile(r"\b" + _MONTH + r",?\s+(\d{4})\b", re.I)
_YEAR = re.compile(r"\b(?:in|during|of)\s+((?:19|20)\d{2})\b", re.I)


def _day_match(text: str):
    for i, pattern in enumerate(_DAY_PATTERNS):
        m = pattern.search(text)
        if m:
            g = m.groups()
            if i == 0:
                y, mo, d = int(g[0]), int(g[1]), int(g[2])
            elif i == 1:
                d, mo, y = int(g[0]), _MONTHS[g[1].lower()[:3]], int(g[2])
            else:
                mo, d, y = _MONTHS[g[0].lower()[:3]], int(g[1]), int(g[2])
            try:
                return m, _day(y, mo, d)
            except ValueError:
                return None
    return None


def _date_expression(text: str) -> tuple[tuple[float, float], str] | None:
    """The range of the first explicit date, month or year in text, and the words."""
    found = _day_match(text)
    if found:
        return found[1], found[0].group(0)
    m = _MONTH_YEAR.search(text)
    if m:
        return _month(int(m.group(2)), _MONTHS[m.group(1).lower()[:3]]), m.group(0)
    m = _YEAR.search(text)
    if m:
        return _year(int(m.group(1))), m.group(0)
    return None


def _relative(text: str, ref: dt.datetime) -> tuple[tuple[float, float], str] | None:
    """Ranges of "yesterday", "last week", "this month", "3 days ago", "past two weeks"."""
    today = dt.datetime(ref.year, ref.month, ref.day, tzinfo=_UTC)
    t = text.lower()
    if m := re.search(r"\byesterday\b", t):
        return (_epoch(today - dt.timedelta(days=1)), _epoch(today)), m.group(0)
    if m := re.search(r"\btoday\b", t):
        return (_epoch(today), _epoch(today + dt.timedelta(days=1))), m.group(0)
    if m := re.search(r"\b(last|this|past)\s+(week|month|year)\b", t):
        which, unit = m.groups()
        if unit == "week":
            monday = today - dt.timedelta(days=today.weekday())
            start = monday - dt.timedelta(days=7) if which == "last" else monday
            span = (_epoch(start), _epoch(start + dt.timedelta(days=7)))
        elif unit == "month":
            y, mo = (ref.year, ref.month)
            if which == "last":
                y, mo = (y - 1, 12) if mo == 1 else (y, mo - 1)
            span = _month(y, mo)
        else:
            span = _year(ref.year - (which == "last"))
        if which == "past":
            span = (_epoch(today) - _UNIT_DAYS[unit] * 86400.0, _epoch(ref))
        return span, m.group(0)
    number = r"(\d+|" + "|".join(_NUMBERS) + r")"
    if m := re.search(r"\b" + number + r"\s+(day|week|month|year)s?\s+ago\b", t):
        n = int(m.group(1)) if m.group(1).isdigit() else _NUMBERS[m.group(1)]
        center = today - dt.timedelta(days=n * _UNIT_DAYS[m.group(2)])
        half = dt.timedelta(days=max(1, _UNIT_DAYS[m.group(2)] // 2))
        return (_epoch(center - half), _epoch(center + half)), m.group(0)
    if m := re.search(r"\b(?:past|last)\s+" + number + r"\s+(day|week|month|year)s?\b", t):
        n = int(m.group(1)) if m.group(1).isdigit() else _NUMBERS[m.group(1)]
        return (_epoch(ref) - n * _UNIT_DAYS[m.group(2)] * 86400.0, _epoch(ref)), m.group(0)
    return None


_RELATION = re.compile(r"\b(before|after|since|prior to)\s+(.+?)(?:[?.!,;]|$)", re.I)
_BETWEEN = re.compile(r"\bbetween\s+(.+?)\s+and\s+(.+?)(?:[?.!,;]|$)", re.I)


def parse_time_hint(query: str, reference) -> TimeHint | None:
    """The time restriction a query asks for, or None.

    Recognized: explicit dates ("2023-05-08", "8 May 2023", "May 8, 2023"), months
    ("in May 2023"), years ("in 2023"), relative spans ("yesterday", "today", "last week",
    "this month", "past year", "3 days ago", "past two weeks"), "between X and Y", and
    "before/after/since/prior to X" where X is any of those or an event ("before the
    trip"), which comes back as an anchor.

    Args:
      query: the query text.
      reference: "now" for relative hints (anything `parse_timestamp` accepts).

    Returns:
      A `TimeHint`, or None when the query has no time restriction.
    """
    ref = dt.datetime.fromtimestamp(parse_timestamp(reference, name="reference"), _UTC)
    if m := _BETWEEN.search(query):
        a = _date_expression(m.group(1)) or _relative(m.group(1), ref)
        b = _date_expression(m.group(2)) or _relative(m.group(2), ref)
        if a and b and a[0][0] < b[0][1]:
            return TimeHint(a[0][0], b[0][1], text=m.group(0).rstrip("?.!,; "))
    if m := _RELATION.search(query):
        relation = "before" if m.group(1).lower() in ("before", "prior to") else "after"
        target = m.group(2).strip()
        found = _date_expression(target) or _relative(target, ref)
        if found:
            (start, end), _ = found
            since = m.group(1).lower() == "since"
            span = (None, start) if relation == "before" else (start if since else end, None)
            return TimeHint(*span, text=m.group(0).rstrip("?.!,; "))
        if target:
            return TimeHint(None, None, anchor=target, relation=relation,
                            text=m.group(0).rstrip("?.!,; "))
    found = _date_expression(query) or _relative(query, ref)
    if found:
        (start, end), words = found
        return TimeHint(start, end, text=words)
    return None

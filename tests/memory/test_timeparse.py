"""Timestamps and query time hints against hand-computed calendar ranges."""

import datetime as dt

import pytest

from effjax.memory import TimeHint, parse_time_hint, parse_timestamp


def ts(*args):
    return dt.datetime(*args, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize("value,expected", [
    ("1:56 pm on 8 May, 2023", ts(2023, 5, 8, 13, 56)),
    ("12:05 am on 1 January, 2024", ts(2024, 1, 1, 0, 5)),
    ("2023-05-08T10:00:00", ts(2023, 5, 8, 10)),
    ("2023-05-08T10:00:00+02:00", ts(2023, 5, 8, 8)),
    ("8 May 2023", ts(2023, 5, 8)),
    ("May 8, 2023", ts(2023, 5, 8)),
    (dt.datetime(2023, 5, 8, 9), ts(2023, 5, 8, 9)),
    (dt.date(2023, 5, 8), ts(2023, 5, 8)),
    (1683504000, 1683504000.0),
])
def test_parse_timestamp_forms(value, expected):
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize("bad", ["yesterday-ish", "", "31 February 2023", None, True,
                                 float("nan"), "8 May 2023 and more"])
def test_parse_timestamp_rejects(bad):
    with pytest.raises(ValueError, match="expected when"):
        parse_timestamp(bad, name="when")


REF = "2023-08-20T15:00:00"  # a Sunday


@pytest.mark.parametrize("query,start,end", [
    ("What did Caroline do last week?", ts(2023, 8, 7), ts(2023, 8, 14)),
    ("anything this week", ts(2023, 8, 14), ts(2023, 8, 21)),
    ("what happened in May 2023?", ts(2023, 5, 1), ts(2023, 6, 1)),
    ("what happened in December 2022", ts(2022, 12, 1), ts(2023, 1, 1)),
    ("what did he say on 8 May, 2023?", ts(2023, 5, 8), ts(2023, 5, 9)),
    ("news from 2023-02-28", ts(2023, 2, 28), ts(2023, 3, 1)),
    ("in 2022 what changed", ts(2022, 1, 1), ts(2023, 1, 1)),
    ("yesterday's plans", ts(2023, 8, 19), ts(2023, 8, 20)),
    ("last month", ts(2023, 7, 1), ts(2023, 8, 1)),
    ("last year", ts(2022, 1, 1), ts(2023, 1, 1)),
    ("before 3 June 2023?", None, ts(2023, 6, 3)),
    ("after May 2023", ts(2023, 6, 1), None),
    ("since 2023-05-01", ts(2023, 5, 1), None),
    ("between May 2023 and July 2023", ts(2023, 5, 1), ts(2023, 8, 1)),
    ("in the past two weeks", ts(2023, 8, 20, 15) - 14 * 86400, ts(2023, 8, 20, 15)),
])
def test_parse_time_hint_ranges(query, start, end):
    hint = parse_time_hint(query, REF)
    assert (hint.start, hint.end) == (start, end)
    assert hint.anchor is None and hint.text and hint.text.lower() in query.lower()


def test_parse_time_hint_anchor_and_none():
    hint = parse_time_hint("Where did she go before the trip to Paris?", REF)
    assert hint == TimeHint(None, None, anchor="the trip to Paris", relation="before",
                            text="before the trip to Paris")
    assert parse_time_hint("after the wedding, what?", REF).relation == "after"
    assert parse_time_hint("What is Melanie's favourite hobby?", REF) is None
    with pytest.raises(ValueError, match="reference"):
        parse_time_hint("last week", "not a date")

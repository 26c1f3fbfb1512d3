"""What an episode is embedded from: its text with speaker, date and session."""

import pytest

from effjax.memory import DEFAULT_TEMPLATE, embedding_text
from effjax.memory.embedtext import check_template


def test_embedding_text():
    t = 1683504000.0 + 23 * 3600  # 8 May 2023, 23:00 UTC
    assert embedding_text("Hi!", speaker="Ann", timestamp=t) == "Ann (8 May 2023): Hi!"
    assert embedding_text("Hi!", speaker="Ann", timestamp=t, session="s1",
                          template="[{session}] {speaker} on {date}: {text}"
                          ) == "[s1] Ann on 8 May 2023: Hi!"
    assert embedding_text("Hi!", speaker="Ann", timestamp=0, template="{text}") == "Hi!"
    assert embedding_text("{x}", speaker="A", timestamp=0) == "A (1 January 1970): {x}"


def test_check_template():
    assert check_template(DEFAULT_TEMPLATE) == DEFAULT_TEMPLATE
    for bad in ("{speaker}", "{text} {who}", "{text} {}", "{text", None):
        with pytest.raises(ValueError, match="embed_template"):
            check_template(bad)

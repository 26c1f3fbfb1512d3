"""LoCoMo records load into turns and evidence-scored questions."""

import pytest

from effjax.memory import answer_f1, load_locomo


def test_load_locomo():
    convs = load_locomo()  # the six shipped with the package
    assert [c.sample_id for c in convs] == ["26", "30", "41", "42", "43", "44"]
    c = convs[0]
    assert c.turns[0].dia_id == "D1:1" and c.turns[0].session == "session_1"
    times = [t.timestamp for t in c.turns]
    assert times == sorted(times)
    ids = {t.dia_id for t in c.turns}
    answerable = [q for q in c.questions if q.category in (1, 2, 3, 4)]
    assert answerable and {q.category for q in c.questions} <= {1, 2, 3, 4, 5}
    found = sum(e in ids for q in answerable for e in q.evidence)
    total = sum(len(q.evidence) for q in answerable)
    assert found / total > 0.95  # a few evidence ids in the records are malformed
    assert any("[shares" in t.text for conv in convs for t in conv.turns)


def test_load_locomo_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(ValueError, match=r"no LoCoMo records.*holds: \['notes.txt'\]"):
        load_locomo(tmp_path)
    with pytest.raises(ValueError, match="no such folder"):
        load_locomo(tmp_path / "absent")


def test_answer_f1():
    assert answer_f1("The Running shoes!", "running shoe", 4) == 1.0  # normalised, stemmed
    # "she" "went" "to" "paris" vs "paris": precision 1/4, recall 1 -> 0.4
    assert answer_f1("she went to Paris", "Paris", 2) == pytest.approx(0.4)
    assert answer_f1("Paris", "Rome", 2) == 0.0
    assert answer_f1("", "Rome", 2) == 0.0
    # multi-hop: gold parts each take their best predicted part, then the mean
    assert answer_f1("pottery, camping", "camping, pottery, painting", 1) == pytest.approx(2 / 3)
    assert answer_f1("hiking", "hiking; likely in spring", 3) == 1.0  # open-domain: before ";"
    with pytest.raises(ValueError, match="category"):
        answer_f1("x", "y", 5)

import pytest

from effjax.eval import markdown_table, write_atomic


def test_markdown_table():
    table = markdown_table(["a", "b"], [[1, 0.123456], ["x", 2.0]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.1235 |", "| x | 2 |"]
    with pytest.raises(ValueError, match="expected 2"):
        markdown_table(["a", "b"], [[1]])


def test_write_atomic_replaces_and_leaves_no_temp(tmp_path):
    path = write_atomic(tmp_path / "sub" / "r.md", "one")
    write_atomic(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["r.md"]

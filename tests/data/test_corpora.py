"""Corpora shipped with the package, read from local files."""

import pathlib

import pytest

from effjax.data import Corpus, data_dir, data_file, load_corpus
from effjax.data.corpora import PACKAGE_DATA


def test_stdlib_corpus_is_real_python_source():
    c = load_corpus("stdlib", max_files=5)
    assert isinstance(c, Corpus) and c.name == "stdlib" and len(c.texts) == 5
    assert any("def " in t for t in c.texts) and c.num_chars > 10_000


def test_wikitext2_ships_with_the_package(monkeypatch):
    monkeypatch.delenv("EFFJAX_DATA_DIR", raising=False)
    assert data_dir() == PACKAGE_DATA
    assert PACKAGE_DATA.parent == pathlib.Path(__file__).parents[2] / "effjax" / "data"
    for split, chars in (("test", 1_255_018), ("valid", 1_120_192)):
        c = load_corpus("auto", split=split)
        assert c.name == "wikitext2" and c.split == split and len(c.texts) == 1
        assert len(c.texts[0]) == chars  # the raw files, unmodified
    assert " = Robert <unk> = " in load_corpus("wikitext2").texts[0]  # keeps <unk>
    for folder in ("wikitext-2", "gsm8k", "locomo"):  # each shipped set names source and licence
        assert "Licence:" in (PACKAGE_DATA / folder / "SOURCE.md").read_text()


def test_data_dir_from_environment(tmp_path, monkeypatch):
    (tmp_path / "wikitext-2").mkdir()
    (tmp_path / "wikitext-2" / "test.txt").write_text("a tiny corpus\n")
    monkeypatch.setenv("EFFJAX_DATA_DIR", str(tmp_path))
    assert data_dir() == tmp_path
    assert load_corpus("wikitext2").texts == ("a tiny corpus\n",)


def test_auto_falls_back_to_stdlib(tmp_path):
    c = load_corpus("auto", root=str(tmp_path), max_files=2)
    assert c.name == "stdlib"


def test_bad_requests_name_what_exists(tmp_path):
    with pytest.raises(ValueError, match="name must be one of"):
        load_corpus("c4")
    with pytest.raises(ValueError, match=r"split 'train' not found.*splits there: \['test', "
                                         r"'valid'\]"):
        load_corpus("wikitext2", split="train")
    with pytest.raises(ValueError, match=r"splits there: none"):
        load_corpus("wikitext2", root=str(tmp_path))
    with pytest.raises(ValueError, match=r"gsm8k split 'dev' not found.*\['test', 'train'\]"):
        data_file("gsm8k", "dev", ".jsonl")

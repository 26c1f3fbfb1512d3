"""Local corpora through `datasets`."""

import pytest

from effjax.data import Corpus, data_dir, load_corpus


def test_stdlib_corpus_is_real_python_source():
    c = load_corpus("stdlib", max_files=5)
    assert isinstance(c, Corpus) and c.name == "stdlib" and len(c.texts) == 5
    assert any("def " in t for t in c.texts) and c.num_chars > 10_000


def test_wikitext2_when_present():
    root = data_dir()
    if root is None or not (root / "wikitext-2" / "test.txt").is_file():
        pytest.skip("WikiText-2 not in ../shared/data (set EFFJAX_DATA_DIR)")
    c = load_corpus("auto")
    assert c.name == "wikitext2" and c.split == "test"
    assert c.texts[0] == (root / "wikitext-2" / "test.txt").read_text()
    assert " = Robert <unk> = " in c.texts[0]  # the pytorch/examples copy keeps <unk>


def test_auto_falls_back_to_stdlib(tmp_path):
    c = load_corpus("auto", root=str(tmp_path), max_files=2)
    assert c.name == "stdlib"


def test_bad_requests(tmp_path):
    with pytest.raises(ValueError, match="name must be one of"):
        load_corpus("c4")
    with pytest.raises(ValueError, match="WikiText-2 'test' split not found"):
        load_corpus("wikitext2", root=str(tmp_path))

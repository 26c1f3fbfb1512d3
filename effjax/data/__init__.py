"""Data: evaluation corpora from local files; the arithmetic reasoning task (`arithmetic`); the
procedural visual QA task (`shapes_vqa`)."""

from effjax.data import arithmetic, shapes_vqa
from effjax.data.corpora import CORPORA, Corpus, data_dir, load_corpus

__all__ = ["CORPORA", "arithmetic", "Corpus", "data_dir", "load_corpus", "shapes_vqa"]

"""Data: evaluation corpora from local files."""

from effjax.data.corpora import CORPORA, Corpus, data_dir, load_corpus

__all__ = ["CORPORA", "Corpus", "data_dir", "load_corpus"]

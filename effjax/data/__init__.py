"""Data: evaluation corpora from local files; the arithmetic reasoning task (`arithmetic`)."""

from effjax.data import arithmetic
from effjax.data.corpora import CORPORA, Corpus, data_dir, load_corpus

__all__ = ["CORPORA", "arithmetic", "Corpus", "data_dir", "load_corpus"]

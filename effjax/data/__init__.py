"""Data: the evaluation corpora shipped with the package (WikiText-2, GSM8K, LoCoMo, in
`files/` with their licences); the arithmetic reasoning task (`arithmetic`); the procedural
visual QA task (`shapes_vqa`)."""

from effjax.data import arithmetic, shapes_vqa
from effjax.data.corpora import CORPORA, Corpus, data_dir, data_file, load_corpus

__all__ = ["CORPORA", "arithmetic", "Corpus", "data_dir", "data_file", "load_corpus", "shapes_vqa"]

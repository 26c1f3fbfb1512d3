"""Data: the evaluation corpora shipped with the package (WikiText-2, GSM8K, LoCoMo, in
`files/` with their licences); the arithmetic reasoning task (`arithmetic`); the procedural
visual QA task (`shapes_vqa`).

Contents: the evaluation data shipped inside the package (`effjax/data/files`, each folder with
its source and licence in `SOURCE.md`: WikiText-2 valid/test, CC BY-SA 3.0; GSM8K train/test,
MIT; six LoCoMo conversations, CC BY-NC 4.0); `load_corpus(name, split=)` reads WikiText-2 or
the Python standard library's own source as a `Corpus`; `data_dir()` is `$EFFJAX_DATA_DIR` when
set, else the package's folder; `data_file` names the splits that exist when one is absent;
`gsm8k.load_gsm8k`; the arithmetic reasoning task (`arithmetic`: problems, a char tokenizer,
exact-match scoring) and the procedural visual QA task (`shapes_vqa`).
"""

from effjax.data import arithmetic, shapes_vqa
from effjax.data.corpora import CORPORA, Corpus, data_dir, data_file, load_corpus

__all__ = ["CORPORA", "arithmetic", "Corpus", "data_dir", "data_file", "load_corpus", "shapes_vqa"]

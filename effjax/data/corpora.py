"""Evaluation corpora shipped with the package, read from local files (nothing is downloaded).

The data directory is `effjax/data/files` inside the installed package (WikiText-2 valid/test,
GSM8K train/test, six LoCoMo conversations, each folder with its source and licence in
`SOURCE.md`), or `$EFFJAX_DATA_DIR` when set (a folder with the same layout).
`load_corpus("stdlib")` reads the Python standard library's own source, which every machine has.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sysconfig

CORPORA = ("wikitext2", "stdlib")
PACKAGE_DATA = pathlib.Path(__file__).resolve().parent / "files"


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


def data_dir() -> pathlib.Path:
    """The data directory: `$EFFJAX_DATA_DIR` when set, else the package's own `files/`."""
    env = os.environ.get("EFFJAX_DATA_DIR")
    return pathlib.Path(env) if env else PACKAGE_DATA


def data_file(dataset: str, split: str, suffix: str, *, root: str | os.PathLike | None = None
              ) -> pathlib.Path:
    """The file `<root>/<dataset>/<split><suffix>` of a shipped data set.

    Args:
      dataset: the folder name ("wikitext-2", "gsm8k").
      split: the split ("test", "valid", "train").
      suffix: the file suffix (".txt", ".jsonl").
      root: the data directory (default `data_dir()`).

    Returns:
      The path of an existing file.

    Raises:
      ValueError: the file is absent; the message lists the splits that exist there.
    """
    folder = pathlib.Path(root) if root is not None else data_dir()
    path = folder / dataset / f"{split}{suffix}"
    if not path.is_file():
        have = sorted(p.name.removesuffix(suffix) for p in (folder / dataset).glob(f"*{suffix}"))
        raise ValueError(f"{dataset} split {split!r} not found: expected {path}; splits there: "
                         f"{have or 'none'} (EFFJAX_DATA_DIR chooses another data directory)")
    return path


def load_corpus(
    name: str = "auto", *, split: str = "test", max_files: int = 200,
    root: str | os.PathLike | None = None,
) -> Corpus:
    """Loads an evaluation corpus from local files.

    Args:
      name: "wikitext2", "stdlib", or "auto" (WikiText-2 when the data directory has the
        split, else stdlib).
      split: WikiText-2 split ("test" or "valid"; "train" is not shipped).
      max_files: stdlib only: how many source files (sorted by path) to read.
      root: the data directory (default `data_dir()`).

    Returns:
      A `Corpus`.

    Raises:
      ValueError: an unknown name, or a WikiText-2 split that is absent (naming the ones
        that exist).
    """
    if name not in ("auto", *CORPORA):
        raise ValueError(f"name must be one of {('auto', *CORPORA)}, got {name!r}")
    base = pathlib.Path(root) if root is not None else data_dir()
    if name == "wikitext2" or (name == "auto" and (base / "wikitext-2" / f"{split}.txt").is_file()):
        path = data_file("wikitext-2", split, ".txt", root=base)
        return Corpus("wikitext2", split, (path.read_text(encoding="utf-8"),), str(path))
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    files = sorted(stdlib.glob("*.py"))[:max_files]
    if not files:
        raise ValueError(f"no Python source files found in the standard library at {stdlib}")
    return Corpus("stdlib", "all", tuple(p.read_text(encoding="utf-8") for p in files),
                  f"{stdlib}/*.py ({len(files)} files)")

"""Rendering a study's report: tables, values, verdicts, the report file and figures."""

from __future__ import annotations

import copy
import math
import os
import pathlib
import sys

import ml_collections

from effjax import zoo
from effjax.durable import atomic_write
from effjax.eval import markdown_table as markdown_table  # the tables of every report
from effjax.eval import write_atomic

CONFIRMED = ("confirmed", "refuted")
HOLDS = ("holds", "fails")


def verdict(ok: bool, *, words: tuple[str, str] = CONFIRMED, bold: bool = False) -> str:
    """A claim's verdict.

    Args:
      ok: whether the numbers support the claim.
      words: (supported, not supported), e.g. `CONFIRMED` or `HOLDS`.
      bold: wrap the word in Markdown bold.

    Returns:
      "confirmed", "**refuted**", ...
    """
    word = words[0] if ok else words[1]
    return f"**{word}**" if bold else word


def fmt_number(x: float | None, spec: str = ".3g", missing: str = "-") -> str:
    """A number for a table cell.

    Args:
      x: the number; None or NaN are missing.
      spec: its format spec (".3g", ".2f", ...).
      missing: what a missing number shows.

    Returns:
      The formatted number or `missing`.
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return missing
    return format(x, spec)


def plus_minus(value: float, spread: float, digits: int = 1, *, signed: bool = False) -> str:
    """A value with its spread (a standard deviation or error): "60.0 ± 3.5".

    Args:
      value, spread: the numbers.
      digits: decimals of both.
      signed: show the value's sign (a difference: "+1.2 ± 0.3").

    Returns:
      The text.
    """
    return f"{value:{'+' if signed else ''}.{digits}f} ± {spread:.{digits}f}"


def percent_change(value: float, reference: float, digits: int = 2) -> str:
    """How far `value` is from `reference`, relative: "+1.23%".

    Args:
      value, reference: the numbers (reference nonzero).
      digits: decimals.

    Returns:
      The signed percentage.
    """
    return f"{(value / reference - 1) * 100:+.{digits}f}%"


def cell_value(cell: dict | None, metric: str) -> object:
    """A table cell for one metric of a cached cell.

    Args:
      cell: the cell; None when it has not run, with an "error" key when its method does
        not apply.
      metric: the key of the value.

    Returns:
      "not run", "n/a" or the value.
    """
    if cell is None:
        return "not run"
    if "error" in cell:
        return "n/a"
    return cell[metric]


def command(module: str) -> str:
    """The command line that ran a study, in backticks: "`python -m experiments.<module>
    <this process's arguments>`".

    Args:
      module: the study's module name under `experiments`.

    Returns:
      The text.
    """
    return "`" + " ".join([f"python -m experiments.{module}", *sys.argv[1:]]) + "`"


# The models the committed results files are for; a study run on any other model
# (`--config.model=...`) writes files named for it (`for_model`).
RESULTS_MODELS = ("smollm2-135m", "arith_teacher")
PATH_FIELDS = ("cache", "output", "plot", "checkpoints")


def model_line(name: str) -> str:
    """What a study ran on and how its weights are stored, for the report.

    Args:
      name: a zoo name (`effjax.zoo.NAMES`) or a Hugging Face directory.

    Returns:
      "Model: `smollm2-135m`, SmolLM2-135M-Instruct, stored Q4_1 in ..." and so on, with
      the flag that chose it when it is not the studies' default.
    """
    flag = "" if name in RESULTS_MODELS else f" (`--config.model={name}`)"
    if name in zoo.NAMES:
        return f"Model: `{name}`{flag}, {zoo.NAMES[name].about}."
    return f"Model: the Hugging Face directory `{name}`{flag}, in the dtypes its files store."


def for_model(config: ml_collections.ConfigDict,
              model: str | None = None) -> ml_collections.ConfigDict:
    """The config with its result files named for the model it runs, so one model's cells
    and report never overwrite or mix with another's.

    Args:
      config: a study's config; its `PATH_FIELDS` present are renamed.
      model: the model (default `config.model`).

    Returns:
      `config` itself for a model in `RESULTS_MODELS`; otherwise a copy with each path
      `dir/name.ext` made `dir/name.<model>.ext` (a directory's last part for a Hugging
      Face directory).
    """
    model = config.model if model is None else model
    if model in RESULTS_MODELS:
        return config
    tag = pathlib.Path(model).name
    out = copy.deepcopy(config)
    for field in PATH_FIELDS:
        if field in out and out[field]:
            p = pathlib.Path(out[field])
            out[field] = str(p.with_name(f"{p.stem}.{tag}{p.suffix}"))
    return out


def write_report(path: str | os.PathLike, text: str) -> str:
    """Writes a report atomically and prints it.

    Args:
      path: the Markdown file.
      text: the report.

    Returns:
      `text`.
    """
    write_atomic(path, text)
    print(text, flush=True)
    return text


def pyplot():
    """`matplotlib.pyplot` on the non-interactive Agg backend (figures go to files).

    Returns:
      The `matplotlib.pyplot` module.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> None:
    """Saves a matplotlib figure atomically (through a temporary file) and closes it.

    Args:
      fig: the figure.
      path: the image file; its folder is created if needed.
      dpi: resolution.
    """
    import matplotlib.pyplot as plt

    fmt = pathlib.Path(path).suffix.lstrip(".") or None  # the file object hides the name
    atomic_write(path, lambda f: fig.savefig(f, dpi=dpi, format=fmt))
    plt.close(fig)

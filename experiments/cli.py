"""The shared command line of the experiment entry points."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import statistics
import time
from collections.abc import Callable

from absl import app
from ml_collections import config_flags

from effjax.eval import write_atomic
from effjax.formats import Format, get_format

CONFIGS = pathlib.Path(__file__).parents[1] / "configs"


def main_with_config(run: Callable, name: str) -> None:
    """Runs `run(config)` with `--config` defaulting to `configs/<name>.py` (locked).

    The flag is defined here, not at import, so several experiment modules can be
    imported together (tests do).
    """
    config = config_flags.DEFINE_config_file("config", str(CONFIGS / f"{name}.py"),
                                             f"{name} config", lock_config=True)

    def main(argv) -> None:  # returns None: absl exits with main's return value
        del argv
        run(config.value)

    app.run(main)


def timed_call(fn: Callable[[], object], repeats: int) -> tuple[object, float]:
    """`fn()`'s result from one warm-up call (which compiles) and the median wall time of
    `repeats` further calls."""
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `fn()` over `repeats` runs after one warm-up (which compiles)."""
    return timed_call(fn, repeats)[1]


def format_spec(spec: str | None) -> Format | None:
    """A format from a config string: "int4:128" is INT4 per group of 128, "fp8_e4m3:channel"
    FP8 with one scale per channel (":tensor" one per tensor), "mxfp4@rceil" MXFP4 with the
    rceil scale mode, "int2:32@asym" INT2 per group of 32 with a zero point; other names as
    they are; None stays None."""
    if spec is None:
        return None
    spec, _, mode = spec.partition("@")
    name, _, group = spec.partition(":")
    options = {"symmetric": False} if mode == "asym" else {"scale_mode": mode} if mode else {}
    if group in ("tensor", "channel"):
        options.update(granularity=group)
    elif group.isdigit():
        options.update(granularity="group", group_size=int(group))
    elif group:
        raise ValueError(f"format spec {spec!r}: after ':' expected a group size, 'tensor' or "
                         f"'channel', got {group!r}")
    return get_format(name, **options)


def load_cells(path: str, weights: str | None = None) -> dict:
    """A study's cell cache (key -> result dict) from its JSON file; empty if absent.

    `weights` (the `file_digest` of the model the cells measure) starts the cache afresh
    when it was written for other weights, so a retrained model never mixes with old cells.
    """
    p = pathlib.Path(path)
    cells = json.loads(p.read_text()) if p.exists() else {}
    if weights is not None and cells.get("weights") != weights:
        if cells:
            print(f"{path}: cells of other weights ({cells.get('weights')}), starting afresh",
                  flush=True)
        cells = {"weights": weights}
    return cells


def file_digest(path: str | os.PathLike) -> str:
    """The first 16 hex digits of a file's SHA-256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def save_cells(path: str, cells: dict) -> None:
    """Writes a study's cell cache atomically (a crash never leaves half a file)."""
    write_atomic(path, json.dumps(cells, indent=1))


def save_figure(fig, path: str, dpi: int = 120) -> None:
    """Saves a matplotlib figure atomically (through a temporary file) and closes it."""
    import matplotlib.pyplot as plt

    target = pathlib.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp" + target.suffix)
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    tmp.replace(target)

"""The shared command line of the experiment entry points."""

from __future__ import annotations

import pathlib
import statistics
import time
from collections.abc import Callable

from absl import app
from ml_collections import config_flags

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


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `fn()` over `repeats` runs after one warm-up (which compiles)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def format_spec(spec: str | None) -> Format | None:
    """A format from a config string: "int4:128" is INT4 per group of 128, "mxfp4@rceil" MXFP4
    with the rceil scale mode; other names as they are; None stays None."""
    if spec is None:
        return None
    spec, _, mode = spec.partition("@")
    name, _, group = spec.partition(":")
    options = {"scale_mode": mode} if mode else {}
    if group:
        options.update(granularity="group", group_size=int(group))
    return get_format(name, **options)

"""The shared command line of the experiment entry points."""

from __future__ import annotations

import pathlib
import statistics
import time
from collections.abc import Callable

from absl import app
from ml_collections import config_flags

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

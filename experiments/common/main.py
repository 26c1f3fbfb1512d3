"""The command line of the experiment entry points."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

from absl import app
from ml_collections import config_flags

CONFIGS = pathlib.Path(__file__).parents[2] / "configs"


def main_with_config(run: Callable, name: str) -> None:
    """Runs `run(config)` with `--config` defaulting to `configs/<name>.py` (locked).

    The flag is defined here, not at import, so several experiment modules can be
    imported together (tests do).

    Args:
      run: the study's entry (config -> anything).
      name: the study's name: its module and config file.
    """
    config = config_flags.DEFINE_config_file("config", str(CONFIGS / f"{name}.py"),
                                             f"{name} config", lock_config=True)

    def main(argv) -> None:  # returns None: absl exits with main's return value
        del argv
        run(config.value)

    app.run(main)

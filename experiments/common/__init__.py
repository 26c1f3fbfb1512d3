"""What the studies share, so a study file holds only its study.

Contents: the cell cache (`Cells`, `load_cells`, `save_cells`, `cell_key`, `file_digest`:
results by a canonical key of what they depend on, in a JSON file written atomically, so a
stopped run resumes); timing (`stopwatch`, `timed_call` -> `Timed`, `median_seconds`); noise
bands (`binomial_se`, `within_two_se`, `paired_bootstrap`); report rendering
(`markdown_table`, `fmt_number`, `plus_minus`, `percent_change`, `cell_value`, `verdict`
with `CONFIRMED` / `HOLDS`, `command`, `model_line` (the model and its storage),
`for_model` (files per model), `write_report`, `pyplot`, `save_figure`); quantization
plumbing (`projection_recipe` from format specs, `run_ptq` of a config row, `ppl_and_kl`
from one pass); `main_with_config` (the absl / ml-collections entry point).
"""

from experiments.common.cells import Cells, cell_key, file_digest, load_cells, save_cells
from experiments.common.main import main_with_config
from experiments.common.quant import ppl_and_kl, projection_recipe, run_ptq
from experiments.common.report import (
    CONFIRMED,
    HOLDS,
    cell_value,
    command,
    fmt_number,
    for_model,
    markdown_table,
    model_line,
    percent_change,
    plus_minus,
    pyplot,
    save_figure,
    verdict,
    write_report,
)
from experiments.common.stats import binomial_se, paired_bootstrap, within_two_se
from experiments.common.timing import Timed, median_seconds, stopwatch, timed_call

__all__ = [
    "CONFIRMED",
    "HOLDS",
    "Cells",
    "Timed",
    "binomial_se",
    "cell_key",
    "cell_value",
    "command",
    "file_digest",
    "fmt_number",
    "for_model",
    "load_cells",
    "main_with_config",
    "markdown_table",
    "median_seconds",
    "model_line",
    "paired_bootstrap",
    "percent_change",
    "plus_minus",
    "ppl_and_kl",
    "projection_recipe",
    "pyplot",
    "run_ptq",
    "save_cells",
    "save_figure",
    "stopwatch",
    "timed_call",
    "verdict",
    "within_two_se",
    "write_report",
]

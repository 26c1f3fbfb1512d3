"""The research notebooks: committed with the outputs of one top-to-bottom run, and re-run
in a fresh kernel by the slow tier (`make notebooks` re-runs them and writes the outputs)."""

import os
import pathlib
import re
import time

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FAMILIES = ("formats", "ptq", "qat", "decoding", "memory_routing", "pruning")


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _images(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in _code_cells(nb) for o in c.outputs)


def test_one_notebook_per_method_family():
    names = [re.sub(r"^\d+_", "", p.stem) for p in NOTEBOOKS]
    assert names == list(FAMILIES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_outputs_are_one_clean_top_to_bottom_run(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    intro = nb.cells[0]
    assert intro.cell_type == "markdown" and "What this notebook shows" in intro.source
    assert re.search(r"about \d+ minutes?", intro.source), "the intro must say how long it takes"
    cells = _code_cells(nb)
    # a fresh kernel numbers the cells 1, 2, ... in order: nothing skipped, re-run or unrun
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name} holds an error output: {errors[0].get('ename')}"
    assert _images(nb) >= 1, f"{path.name} draws no figure"
    assert "notebook ran in" in "".join(o.get("text", "") for o in cells[-1].outputs)


def test_readme_names_the_command_that_opens_them():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "make lab" in readme and "make notebooks" in readme
    assert re.search(r"^lab:.*\n(\t.*\n)*\t.*jupyter lab notebooks", makefile, re.M)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom_in_a_fresh_kernel(path):
    """Executes the notebook in a new kernel from its own folder; with
    EFFJAX_WRITE_NOTEBOOKS=1 (`make notebooks`) writes the executed notebook back."""
    import nbclient  # noqa: PLC0415 (the slow tier's dependency)

    nb = nbformat.read(path, as_version=4)
    start = time.time()
    nbclient.NotebookClient(nb, timeout=1800, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}).execute()
    print(f"{path.name}: {time.time() - start:.0f} s")
    cells = _code_cells(nb)
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    assert _images(nb) >= 1
    if os.environ.get("EFFJAX_WRITE_NOTEBOOKS") == "1":
        nbformat.write(nb, path)

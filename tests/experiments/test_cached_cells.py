"""The committed cell caches (`experiments/results/*.json`) are found under the keys the
studies compute for their configs, so a rerun reuses them rather than starting afresh."""

import json
import pathlib

import pytest

import effjax
from experiments.common import file_digest

RESULTS = pathlib.Path(__file__).parents[2] / "experiments" / "results"
SHIPPED = pathlib.Path(effjax.__file__).parent / "data" / "zoo"  # the package's trained models


def _cached(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    return json.loads(path.read_text())


def _missing(keys, cache) -> list[str]:
    return [k for k in keys if k not in cache]


def test_batquant_rows():
    from configs.batquant import get_config
    from experiments.batquant import _key

    c = get_config()
    keys = [_key(c, "float")] + [_key(c, method, dict(o)) for _, method, o in c.rows]
    assert not _missing(keys, _cached("batquant"))


def test_hifloat_study_cells():
    from configs.hifloat_study import get_config
    from experiments.common import cell_key
    from experiments.hifloat_study import _cell_key, _cells, _stats_key

    c = get_config()
    keys = [_stats_key(c), cell_key("float", c.eval_corpus, c.eval_seq_len, c.eval_tokens)]
    keys += [_cell_key(c, *cell) for cell in _cells(c)]
    assert not _missing(keys, _cached("hifloat_study"))


def test_mxfp_ptq_study_core_cells():
    from configs.mxfp_ptq_study import get_config
    from experiments.mxfp_ptq_study import _cell_key

    c = get_config("core")
    keys = [_cell_key("float", ("float32", None, None, None), c)]
    keys += [_cell_key(m, column, c) for column in c.columns for m in c.methods]
    assert not _missing(keys, _cached("mxfp_ptq_study"))


def test_freeact_cells_of_the_shipped_weights():
    from configs.freeact import get_config
    from experiments.freeact import _key

    c = get_config()
    keys = [_key(c, model, "float") for model in c.models]
    keys += [_key(c, model, fmt, method, dict(o), seed) for model in c.models
             for fmt in c.formats for _, method, o in c.rows for seed in c.seeds]
    assert not _missing(keys, _cached("freeact"))


def test_hawk_cells_of_the_shipped_weights():
    cache = _cached("hawk")
    assert cache["weights"] == file_digest(SHIPPED / "shapes_vlm" / "model.safetensors")

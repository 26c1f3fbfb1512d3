"""BATQuant against RTN, QuaRot, SpinQuant, FlatQuant and MR-GPTQ on SmolLM2-135M in W4A4KV16
MXFP4, with its ablations (full blocks instead of GPK, orthogonal blocks, no clipping; the
global-affine ablation is FlatQuant's Kronecker transform), and the online transform's cost.

    python -m experiments.batquant [--config=configs/batquant.py[:tiny]]

Each row quantizes with `effjax.ptq.run` and reports perplexity and mean token KL against
float32 from one pass (`effjax.eval.kl_and_perplexity`), the recovered fraction of float
perplexity (float / quantized), the learned parameters and the online transform's stored
floats. Rows are cached in a JSON file as they finish.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import effjax
from effjax.ptq import batquant_parameter_count, gpk_split, kron_split
from effjax.transforms import block_apply, gpk_apply, kron_apply, online
from experiments.common import (
    cell_key,
    for_model,
    load_cells,
    main_with_config,
    markdown_table,
    median_seconds,
    model_line,
    ppl_and_kl,
    projection_recipe,
    run_ptq,
    stopwatch,
    verdict,
    write_report,
)


def _key(config, *parts) -> str:
    return cell_key(*parts, config.weight, config.activation, config.calib_corpus,
                    config.num_windows, config.window, config.eval_corpus, config.eval_seq_len,
                    config.eval_tokens)


def _row(lm, method, options, recipe, config, calib_texts, eval_texts) -> dict:
    elapsed = stopwatch()
    res = run_ptq(lm, method, recipe, calib_texts, options, num_windows=config.num_windows,
                  window=config.window)
    out = ppl_and_kl(lm, res.lm, eval_texts, recipe=recipe, seq_len=config.eval_seq_len,
                     max_tokens=config.eval_tokens)
    transforms = online.find(res.lm.params)
    out.update(online_floats=int(sum(x.size for x in jax.tree.leaves(transforms))),
               seconds=elapsed(), peak_rss_mb=res.peak_rss_mb)
    if method == "batquant":
        out["learned"] = batquant_parameter_count(
            lm.params, recipe, variant=options.get("variant", "gpk"),
            block=options.get("block", 32), clip=options.get("clip", True))
    return out


def overhead(config, lm) -> list[list]:
    """Per input width of the model's projection groups: the online transform's time as a
    fraction of the group's matmul time (jitted, float32, same run)."""
    c = lm.config
    kv = c.num_kv_heads * c.head_dim
    groups = (("q/k/v", c.hidden_size, c.num_heads * c.head_dim + 2 * kv),
              ("down_proj", c.intermediate_size, c.hidden_size))
    key = jax.random.PRNGKey(0)
    rows = []
    for name, d_in, d_out in groups:
        x = jax.random.normal(key, (config.overhead_tokens, d_in))
        w = jax.random.normal(key, (d_in, d_out))
        nb = d_in // 32
        g, p = gpk_split(32)
        m, n = kron_split(d_in)
        fns = {"matmul": (jax.jit(jnp.matmul), (x, w)),
               "GPK blocks": (jax.jit(gpk_apply), (x, jnp.eye(g), jnp.broadcast_to(
                   jnp.eye(p), (nb, p, p)))),
               "full blocks": (jax.jit(block_apply), (x, jnp.broadcast_to(jnp.eye(32),
                                                                          (nb, 32, 32)))),
               "global Kronecker": (jax.jit(kron_apply), (x, jnp.eye(m), jnp.eye(n)))}
        sec = {k: median_seconds(lambda f=f, a=a: jax.block_until_ready(f(*a)),
                                 config.overhead_repeats) for k, (f, a) in fns.items()}
        rows.append([f"{name} ({config.overhead_tokens} x {d_in} -> {d_out})",
                     sec["matmul"] * 1e3,
                     *[f"{sec[k] / sec['matmul']:.3f}" for k in
                       ("GPK blocks", "full blocks", "global Kronecker")]])
    return rows


def run(config) -> str:
    """Runs the missing rows and the overhead timing, then writes the report."""
    config = for_model(config)  # files named for a non-default model
    elapsed = stopwatch()
    lm = effjax.load(config.model)
    recipe = projection_recipe(config.weight, config.activation)
    calib = effjax.data.load_corpus(config.calib_corpus, split=config.calib_split).texts
    evals = effjax.data.load_corpus(config.eval_corpus, split=config.eval_split).texts
    cache = load_cells(config.cache)
    float_key = _key(config, "float")
    cache.compute(float_key, lambda: ppl_and_kl(lm, lm, evals, recipe=None,
                                                seq_len=config.eval_seq_len,
                                                max_tokens=config.eval_tokens))
    for label, method, options in config.rows if config.compute else ():
        cache.compute(_key(config, method, dict(options)),
                      lambda m=method, o=options: _row(lm, m, o, recipe, config, calib, evals),
                      log=label)
    report = _report(config, cache, float_key, overhead(config, lm), elapsed())
    return write_report(config.output, report)


def _report(config, cache, float_key, overhead_rows, seconds) -> str:
    flt = cache[float_key]
    rows, results = [], {}
    for label, method, options in config.rows:
        cell = cache.get(_key(config, method, dict(options)))
        if cell is None:
            rows.append([label, *["not run"] * 6])
            continue
        results[label] = cell
        learned = cell.get("learned")
        rows.append([label, cell["ppl"], cell["kl"], f"{flt['ppl'] / cell['ppl'] * 100:.1f}%",
                     "-" if learned is None else f"{learned['transform']:,} + "
                                                  f"{learned['clip']:,} clip",
                     f"{cell['online_floats']:,}", f"{cell['seconds']:.0f}"])
    return "\n".join([
        f"# BATQuant on {config.model}, W4A4KV16 MXFP4",
        "",
        model_line(config.model),
        "",
        "Command: `python -m experiments.batquant` (config `configs/batquant.py`); jax "
        f"{jax.__version__}. Weights {config.weight}, activations {config.activation}, KV "
        f"cache float. Calibration {config.num_windows} x {config.window} tokens of "
        f"{config.calib_corpus} {config.calib_split}; perplexity and mean token KL(float32 || "
        f"quantized) from one pass over the first {config.eval_tokens} tokens of "
        f"{config.eval_corpus} {config.eval_split} in windows of {config.eval_seq_len}; "
        f"float32 perplexity {flt['ppl']:.4g}. This run: {seconds:.0f} s (cached rows not "
        "counted).",
        "",
        markdown_table(["method", "perplexity", "token KL", "recovered (float ppl / ppl)",
                        "learned parameters", "online transform floats", "seconds"], rows),
        "",
        "**Online transform cost** (median of jitted calls on this CPU, as a fraction of the "
        "projection group's matmul time; identity matrices, the cost does not depend on "
        "the values)",
        "",
        markdown_table(["input", "matmul ms", "GPK blocks", "full blocks", "global Kronecker"],
                       overhead_rows),
        "",
        _claim(results),
    ])


def _claim(results: dict) -> str:
    if "BATQuant" not in results or len(results) < 2:
        return "Claim (best W4A4 MXFP4 among the methods): not measured."
    bat = results["BATQuant"]["ppl"]
    others = {k: v["ppl"] for k, v in results.items() if not k.startswith("BATQuant")}
    if not others:
        return "Claim (best W4A4 MXFP4 among the methods): not measured."
    best = min(others, key=others.get)
    ok = bat < others[best]
    return ("Claim: BATQuant is the best W4A4 MXFP4 method here: "
            f"{verdict(ok)} (BATQuant {bat:.4g}; best baseline {best} "
            f"{others[best]:.4g}; " + ", ".join(f"{k} {v:.4g}" for k, v in others.items())
            + ").")


if __name__ == "__main__":
    main_with_config(run, "batquant")

"""FreeAct against RTN, QuaRot and one shared transform in W4A4 (INT4, MXFP4) on the shipped
masked-diffusion agent (token types: masked / unmasked) and the shipped shapes VLM (vision /
text tokens), with an energy-threshold (rank) ablation.

    python -m experiments.freeact [--config=configs/freeact.py[:tiny]]

Metrics. The diffusion agent: accuracy and NLL of its one-step prediction of the masked
tokens of held-out noised trajectories (noise as in training, span attention mask). The
VLM: answer accuracy on the test and hard splits (the vision tower stays float; only the
language model is quantized). Cells are cached in a JSON file as they finish.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from effjax import zoo
from effjax.agents.episodes import MASK_ID, span_attention_mask, training_batch
from effjax.agents.train import AGENT_CONFIG, AgentTraining, load_agent
from effjax.data import shapes_vqa
from effjax.models import forward
from effjax.models.config import LMConfig
from effjax.models.diffusion import noise_tokens
from effjax.pruning import shapes_vlm
from effjax.ptq import LayerContext, flatquant, freeact, quarot
from effjax.quant import Recipe, quantize_params
from effjax.transforms import random_hadamard
from experiments.common import (
    cell_key,
    file_digest,
    load_cells,
    main_with_config,
    markdown_table,
    plus_minus,
    projection_recipe,
    pyplot,
    save_figure,
    stopwatch,
    write_report,
)

TYPE_NAMES = {"dllm": ("unmasked", "masked"), "vlm": ("text", "vision")}
EVAL_STREAM = 8  # the diffusion agent's held-out trajectory stream (not a calibration seed)
_BATCH = 32  # evaluation rows per forward


@dataclasses.dataclass(frozen=True)
class Windows:
    """Token windows with what the layers see (`LayerContext`) and what is scored.

    Attributes:
      tokens: (n, t) int32 model inputs (noised for the diffusion agent).
      context: embeds (VLM), positions (VLM), attention mask and token types.
      mask: (n, t) real (non-padding) tokens.
      targets: the diffusion agent: (n, t) clean tokens; the VLM: (n,) answers.
      scored: the diffusion agent: (n, t) masked tokens; the VLM: (n,) last prompt index.
    """

    tokens: np.ndarray
    context: LayerContext
    mask: np.ndarray
    targets: np.ndarray
    scored: np.ndarray


@dataclasses.dataclass(frozen=True)
class Setting:
    """One model: its language model's float parameters, calibration windows (one set per
    seed) and evaluation windows."""

    name: str
    params: dict
    config: LMConfig
    calib: dict[int, Windows]
    evals: dict[str, Windows]


def dllm_windows(seed: int, n: int) -> Windows:
    """n agent trajectories from stream `seed`, noised as in training (key `seed`)."""
    b = training_batch(seed, 0, n)
    noised, masked, _ = noise_tokens(jnp.asarray(b["tokens"]), jnp.asarray(b["noisable"]),
                                     jax.random.PRNGKey(seed), mask_id=MASK_ID)
    attn = (span_attention_mask(jnp.asarray(b["turn"]), jnp.asarray(b["is_action"]))
            & jnp.asarray(b["valid"])[:, None, :])
    return Windows(np.asarray(noised), LayerContext(attn_mask=attn,
                                                    token_types=masked.astype(jnp.int32)),
                   b["valid"], b["tokens"], np.asarray(masked))


def vlm_windows(params: dict, split: str, n: int, *, with_answer: bool,
                start: int = 0) -> Windows:
    """Questions start .. start + n - 1 of `split` (with their answers appended for
    calibration)."""
    b = shapes_vqa.batch([shapes_vqa.example(split, i) for i in range(start, start + n)],
                         with_answer=with_answer)
    b["positions"] = shapes_vlm.positions_of(b)
    embeds, positions, mask = shapes_vlm.lm_inputs(params, b)
    t = mask.shape[1]
    attn = jnp.tril(jnp.ones((t, t), bool))[None] & mask[:, None, :]
    types = jnp.asarray(b["tokens"] == shapes_vqa.IMAGE_ID, jnp.int32)
    return Windows(b["tokens"], LayerContext(embeds=embeds, positions=positions, attn_mask=attn,
                                             token_types=types),
                   b["mask"], b["answer"], b["last"])


def setting(name: str, config) -> Setting:
    """The diffusion agent ("dllm") or the shapes VLM ("vlm") with its windows: the
    calibration set of seed s is stream s of trajectories, or the s-th block of training
    questions; evaluation uses stream `EVAL_STREAM` / the test and hard splits."""
    n = config.calib_windows
    if name == "dllm":
        params = load_agent(AgentTraining()).params
        return Setting(name, params, AGENT_CONFIG, {s: dllm_windows(s, n) for s in config.seeds},
                       {"held-out": dllm_windows(EVAL_STREAM, config.eval_windows)})
    if name == "vlm":
        vlm = shapes_vlm.load_shapes_vlm()
        params, vlm_config = vlm.params, vlm.config
        return Setting(name, params["lm"], vlm_config.text,
                       {s: vlm_windows(params, "train", n, with_answer=True, start=s * n)
                        for s in config.seeds},
                       {sp: vlm_windows(params, sp, config.eval_windows, with_answer=False)
                        for sp in config.vlm_splits})
    raise ValueError(f"model must be 'dllm' or 'vlm', got {name!r}")


def evaluate(s: Setting, params, config: LMConfig, recipe: Recipe | None,
             rotation: jax.Array | None = None) -> dict[str, dict[str, float]]:
    """{eval set: {"accuracy", "nll"}} of the (quantized) language model; `rotation` is
    QuaRot's residual rotation, applied to given embeddings."""

    @jax.jit
    def logits(tokens, ctx, mask):
        embeds = ctx.embeds if rotation is None or ctx.embeds is None else ctx.embeds @ rotation
        return forward(params, tokens, config=config, positions=ctx.positions, mask=mask,
                       attn_mask=ctx.attn_mask, recipe=recipe, embeds=embeds,
                       token_types=ctx.token_types)[0]

    out = {}
    for split, w in s.evals.items():
        hits, nll, count = 0.0, 0.0, 0
        for i in range(0, len(w.tokens), _BATCH):
            sl = np.arange(i, min(i + _BATCH, len(w.tokens)))
            lg = logits(jnp.asarray(w.tokens[sl]), w.context.rows(sl), jnp.asarray(w.mask[sl]))
            logp = np.asarray(jax.nn.log_softmax(lg, axis=-1))
            if s.name == "dllm":
                at = w.scored[sl]
                lp, target = logp[at], w.targets[sl][at]
            else:
                lp, target = logp[np.arange(len(sl)), w.scored[sl]], w.targets[sl]
            hits += float(np.sum(lp.argmax(-1) == target))
            nll -= float(np.sum(np.take_along_axis(lp, target[:, None], axis=-1)))
            count += len(target)
        out[split] = {"accuracy": hits / count, "nll": nll / count}
    return out


def quantize(s: Setting, method: str, options: dict, recipe: Recipe | None, seed: int):
    """(params, config, residual rotation or None, info) of one method with the calibration
    set (and QuaRot's random signs) of `seed` (recipe None, for "rtn" and "quarot" only: the
    float model, rotated for "quarot")."""
    c = s.calib[seed]

    def rtn(params):
        return params if recipe is None else quantize_params(params, recipe)

    if method == "rtn":
        return rtn(s.params), s.config, None, {}
    if method == "quarot":
        k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
        r = random_hadamard(s.config.hidden_size, k1)
        rotated, config = quarot(s.params, key=k2, residual=r, config=s.config)
        return rtn(rotated), config, r, {}
    if method == "shared":
        q, _ = flatquant(s.params, c.tokens, recipe, context=c.context,
                         progress=False, **options, config=s.config)
        return q, s.config, None, {}
    if method == "freeact":
        q, info = freeact(s.params, c.tokens, recipe, context=c.context,
                          progress=False, **options, config=s.config)
        ranks = np.asarray(list(info["ranks"].values()), np.float64)
        return q, s.config, None, {"mean_rank": ranks.mean(axis=0).tolist(),
                                   "groups": len(ranks)}
    raise ValueError(f"method must be rtn, quarot, shared or freeact, got {method!r}")


@functools.cache
def weights_digest(model: str) -> str:
    """The `file_digest` of a setting's shipped weights: part of every cell's key, so a
    retrained model never reuses the old model's cells."""
    path = zoo.weights_dir(AgentTraining().name if model == "dllm" else "shapes_vlm")
    return file_digest(path / "model.safetensors")


def _key(config, model: str, *parts) -> str:
    return cell_key(model, weights_digest(model), *parts, config.calib_windows,
                    config.eval_windows)


def run(config) -> str:
    """Runs the missing cells, then writes the report and plot."""
    elapsed = stopwatch()
    cache = load_cells(config.cache)
    for model in config.models:
        s = setting(model, config)
        cache.compute(_key(config, model, "float"),
                      lambda s=s: evaluate(s, s.params, s.config, None))
        for fmt in config.formats:
            recipe = projection_recipe(fmt, fmt)
            for label, method, options in config.rows:
                for seed in config.seeds if config.compute else ():
                    cache.compute(_key(config, model, fmt, method, dict(options), seed),
                                  lambda s=s, m=method, o=dict(options), r=recipe, seed=seed:
                                  _seed_cell(s, m, o, r, seed),
                                  log=f"{model} {fmt} {label} {seed}")
    return write_report(config.output, _report(config, cache, elapsed()))


def _seed_cell(s: Setting, method: str, options: dict, recipe: Recipe, seed: int) -> dict:
    """One method with one calibration seed: "eval" (`evaluate`), "seconds" and what the
    method reports (`quantize`)."""
    elapsed = stopwatch()
    params, lm_config, rotation, info = quantize(s, method, options, recipe, seed)
    return {"eval": evaluate(s, params, lm_config, recipe, rotation), "seconds": elapsed(),
            **info}


def _splits(config, model: str) -> tuple[str, ...]:
    return ("held-out",) if model == "dllm" else tuple(config.vlm_splits)


def _cell(config, cache, model, fmt, method, options) -> dict | None:
    """A row's cells over the seeds (None unless every seed ran): "runs" (per seed), "eval"
    (per set: mean "accuracy" and "nll", their standard deviations "accuracy_sd",
    "nll_sd"), mean "seconds" and, for FreeAct, mean "mean_rank"."""
    runs = [cache.get(_key(config, model, fmt, method, dict(options), s)) for s in config.seeds]
    if any(r is None for r in runs):
        return None
    out = {"runs": runs, "seconds": float(np.mean([r["seconds"] for r in runs])), "eval": {}}
    for sp in runs[0]["eval"]:
        for m in ("accuracy", "nll"):
            v = [r["eval"][sp][m] for r in runs]
            out["eval"].setdefault(sp, {}).update({m: float(np.mean(v)),
                                                   f"{m}_sd": float(np.std(v))})
    if "mean_rank" in runs[0]:
        out["mean_rank"] = np.mean([r["mean_rank"] for r in runs], axis=0).tolist()
    return out


def _score(result: dict | None, model: str) -> str:
    """Accuracy (%) over the seeds (mean, and the standard deviation after a +-), with the
    NLL for the diffusion agent (whose accuracy saturates)."""
    if result is None:
        return "not run"
    acc = (plus_minus(result["accuracy"] * 100, result["accuracy_sd"] * 100)
           if "accuracy_sd" in result else f"{result['accuracy'] * 100:.1f}")
    if model != "dllm":
        return acc
    nll = (plus_minus(result["nll"], result["nll_sd"], 4) if "nll_sd" in result
           else f"{result['nll']:.4f}")
    return f"{acc} ({nll})"


def _model_table(config, cache, model: str) -> str:
    splits = _splits(config, model)
    header = ["method"] + [f"{fmt} {split}" for fmt in config.formats for split in splits]
    flt = cache.get(_key(config, model, "float"))
    rows = [["float32"] + [_score(flt and flt[sp], model)
                           for _ in config.formats for sp in splits]]
    for label, method, options in config.rows:
        row = [label]
        for fmt in config.formats:
            cell = _cell(config, cache, model, fmt, method, options)
            row += [_score(cell and cell["eval"][sp], model) for sp in splits]
        rows.append(row)
    return markdown_table(header, rows)


def _ablation(config, cache, model: str) -> str:
    names = TYPE_NAMES[model]
    splits = _splits(config, model)
    rows = []
    for label, method, options in config.rows:
        if method != "freeact":
            continue
        for fmt in config.formats:
            cell = _cell(config, cache, model, fmt, method, options)
            if cell is None:
                continue
            rows.append([label, fmt, *[f"{r:.1f}" for r in cell["mean_rank"]],
                         *[_score(cell["eval"][sp], model) for sp in splits],
                         f"{cell['seconds']:.0f}"])
    if not rows:
        return "(no FreeAct cell run)"
    return markdown_table(["row", "format", *[f"mean rank r_k, {n}" for n in names],
                           *[f"{sp}: accuracy (%)" + (" (NLL)" if model == "dllm" else "")
                             for sp in splits], "seconds"], rows)


def gains(config, cache) -> list[tuple[str, float, list[float], str]]:
    """Per (model, format, eval set) with the headline FreeAct and every baseline run:
    (setting, FreeAct's mean accuracy minus the best baseline's in points, its paired
    differences with the shared transform per seed (same calibration set; [nan] without a
    shared row), the best baseline's label)."""
    head = next((r for r in config.rows if r[0] == config.headline), None)
    base = [r for r in config.rows if r[1] != "freeact"]
    out = []
    if head is None or not base:
        return out
    for model in config.models:
        for fmt in config.formats:
            free = _cell(config, cache, model, fmt, head[1], head[2])
            cells = {r[0]: _cell(config, cache, model, fmt, r[1], r[2]) for r in base}
            if free is None or any(c is None for c in cells.values()):
                continue
            shared = next((r[0] for r in base if r[1] == "shared"), None)
            for sp in _splits(config, model):
                acc = {k: c["eval"][sp]["accuracy"] for k, c in cells.items()}
                best = max(acc, key=acc.get)
                paired = ([np.nan] if shared is None else
                          [(f["eval"][sp]["accuracy"] - b["eval"][sp]["accuracy"]) * 100
                           for f, b in zip(free["runs"], cells[shared]["runs"], strict=True)])
                out.append((f"{model} {fmt} {sp}",
                            (free["eval"][sp]["accuracy"] - acc[best]) * 100, paired, best))
    return out


def _paired(diffs: list[float]) -> str:
    if np.isnan(diffs).any():
        return "-"
    return (plus_minus(np.mean(diffs), np.std(diffs), signed=True) + " ("
            + ", ".join(f"{d:+.1f}" for d in diffs) + ")")


def _claim(config, cache) -> str:
    g = gains(config, cache)
    if not g:
        return "Claim (up to 5.3% over the baselines): not measured."
    top = max(g, key=lambda x: x[1])
    wins = sum(x[1] > 0 for x in g)
    every_seed = sum(all(d > 0 for d in x[2]) for x in g)
    verdict = ("confirmed" if top[1] >= 5.3 and wins == len(g) else
               "partly confirmed" if wins > 0 else "refuted")
    lines = [f"Claim (FreeAct improves on the baselines, by up to 5.3%): **{verdict}** here. "
             f"{config.headline} beats the best baseline (means over {len(config.seeds)} "
             f"calibration seeds) in {wins} of {len(g)} settings; its largest gain is "
             f"{top[1]:+.1f} points ({top[0]}, over {top[3]}). It beats the shared transform "
             f"on every seed in {every_seed} of {len(g)} settings.", "",
             markdown_table(["setting", "FreeAct - best baseline (points, means)",
                             "FreeAct - shared transform (points, paired by seed)",
                             "best baseline"],
                            [[s, f"{a:+.1f}", _paired(p), best] for s, a, p, best in g])]
    return "\n".join(lines)


def _plot(config, cache) -> None:
    plt = pyplot()
    panels = [(m, fmt, sp) for m in config.models for fmt in config.formats
              for sp in _splits(config, m)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (m, fmt, sp) in zip(axes[0], panels, strict=True):
        labels, vals = [], []
        for label, method, options in config.rows:
            cell = _cell(config, cache, m, fmt, method, options)
            if cell is not None:
                labels.append(label.replace("FreeAct, energy ", "FreeAct ").split(" (")[0])
                vals.append(cell["eval"][sp]["accuracy"] * 100)
        ax.bar(range(len(vals)), vals, color="tab:blue")
        flt = cache.get(_key(config, m, "float"))
        if flt:
            ax.axhline(flt[sp]["accuracy"] * 100, color="k", ls="--", lw=1, label="float32")
            ax.legend(fontsize=7)
        ax.set_xticks(range(len(vals)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{m} {fmt} {sp}", fontsize=9)
        ax.set_ylabel("accuracy (%)")
    fig.tight_layout()
    save_figure(fig, config.output.replace(".md", ".png"))


def _report(config, cache, seconds) -> str:
    _plot(config, cache)
    parts = [
        "# FreeAct: token-type-specific activation transforms, W4A4",
        "",
        "Command: `python -m experiments.freeact` (config `configs/freeact.py`); jax "
        f"{jax.__version__}. W4A4 on every attention / MLP projection of the language model "
        f"(formats: {', '.join(config.formats)}; KV cache float). Calibration: "
        f"{config.calib_windows} windows; evaluation: {config.eval_windows} per set. The "
        "shared transform is FlatQuant's Kronecker transform and clipping trained on the same "
        "type-balanced loss, steps and data as FreeAct (FreeAct with Z_k = 0); QuaRot is RTN "
        f"after QuaRot's rotations. This run: {seconds:.0f} s (cached cells not counted). "
        "Weights measured (SHA-256 prefixes of the shipped files): "
        + ", ".join(f"{m} `{weights_digest(m)}`" for m in config.models) + ".",
        "",
        "## Masked-diffusion agent (token types: unmasked / masked)",
        "",
        "Accuracy (%) and mean NLL (in parentheses) of the one-step prediction of the masked "
        "tokens of held-out noised trajectories.",
        "",
        _model_table(config, cache, "dllm") if "dllm" in config.models else "(not run)",
        "",
        "## Shapes VLM (token types: text / vision)",
        "",
        "Answer accuracy (%); only the language model is quantized.",
        "",
        _model_table(config, cache, "vlm") if "vlm" in config.models else "(not run)",
        "",
        "## Energy threshold (rank) ablation",
        "",
        "The rank r_k of each token type's row space (mean over the layers' projection "
        "groups) falls with the energy threshold; the complement Q_k Z_k acts on the rest.",
        "",
        *[f"{m}:\n\n{_ablation(config, cache, m)}\n" for m in config.models],
        "## Claim",
        "",
        _claim(config, cache),
        "",
        f"![accuracy per method]({config.output.rsplit('/', 1)[-1].replace('.md', '.png')})",
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    main_with_config(run, "freeact")

"""HAWK vs the visual token pruning baselines on the shapes VLM.

Accuracy and its retention (pruned accuracy / unpruned accuracy) at each pruning ratio for
every method on the test split and the held-out hard split; HAWK's head weights from a
calibration set; prefill and end-to-end latency and KV-cache bytes against no pruning,
measured in the same run. Results: experiments/results/hawk.{md,json,png}.

    python -m experiments.hawk                                # configs/hawk.py
    python -m experiments.hawk --config=configs/hawk.py:tiny  # seconds-long smoke run
"""

from __future__ import annotations

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from effjax import zoo
from effjax.data import shapes_vqa
from effjax.decoding import vlm_generate
from effjax.models import init_cache, patchify
from effjax.pruning import (
    PruneConfig,
    answer_logits,
    compact,
    head_importance,
    lm_inputs,
    load_shapes_vlm,
    normalize,
    positions_of,
    prune,
    token_roles,
    train_shapes_vlm,
    visionzip_scores,
)
from experiments.common import (
    file_digest,
    load_cells,
    main_with_config,
    markdown_table,
    pyplot,
    save_figure,
    timed_call,
    verdict,
    write_report,
)

NUM_VISUAL = shapes_vqa.IMAGE_TOKENS
CALIBRATION_OFFSET = 10**7  # training-split indices far past any training run's


def get_model(config):
    """The shapes VLM (trained first when missing and `train_missing`): (params, config, info,
    the weights' `file_digest`)."""
    path = pathlib.Path(config.model_dir) if config.model_dir else zoo.weights_dir("shapes_vlm")
    if not (path / "model.safetensors").is_file() and config.train_missing:
        train_shapes_vlm(path=path if config.model_dir else "zoo")
        path = path if config.model_dir else zoo.weights_dir("shapes_vlm")
    vlm = load_shapes_vlm(path)
    return vlm.params, vlm.config, vlm.extras["info"], file_digest(path / "model.safetensors")


def eval_batches(split: str, n: int, batch_size: int, seed: int, offset: int = 0) -> list[dict]:
    """`n` examples of a split as right-padded batches with positions, roles and kinds."""
    out = []
    for s in range(0, n, batch_size):
        exs = [shapes_vqa.example(split, offset + i, seed)
               for i in range(s, min(n, s + batch_size))]
        b = shapes_vqa.batch(exs)
        b["positions"] = positions_of(b)
        b["visual"], b["query"] = token_roles(b["tokens"], b["mask"], shapes_vqa.IMAGE_ID)
        b["kinds"] = np.array([e.kind for e in exs])
        out.append(b)
    return out


class Study:
    """The model's jitted pieces: encoder inputs, pruned prediction, pruned prefill."""

    def __init__(self, params, vcfg):
        self.params, self.vcfg = params, vcfg
        self._predict = {}

        def inputs(params, images, tokens, positions, mask):
            embeds, _, _ = lm_inputs(params, {"images": images, "tokens": tokens,
                                              "positions": positions, "mask": mask}, config=vcfg)
            patches, grid = patchify(normalize(images), vcfg.vision)
            return embeds, visionzip_scores(params["vision"], patches, config=vcfg.vision,
                                            grid=grid)

        self.inputs = jax.jit(inputs)

    def prepare(self, batch: dict) -> dict:
        """The batch's language-model inputs (the encoder runs once per batch)."""
        arr = {k: jnp.asarray(batch[k]) for k in ("images", "tokens", "positions", "mask",
                                                  "visual", "query")}
        embeds, vz = self.inputs(self.params, arr["images"], arr["tokens"], arr["positions"],
                                 arr["mask"])
        return {**arr, "embeds": embeds, "vision_scores": vz, "last": jnp.asarray(batch["last"]),
                "answer": batch["answer"], "kinds": batch["kinds"]}

    def pruned(self, method: PruneConfig):
        """A jitted (lm_params, prepared batch, head weights, key) -> `Pruned`."""
        if method not in self._predict:
            cfg = self.vcfg.text

            def run(lm_params, b, head_weights, key):
                return prune(method, lm_params, b["tokens"], b["embeds"], b["positions"],
                             b["mask"], b["visual"], b["query"], b["last"], config=cfg,
                             num_visual=NUM_VISUAL, head_weights=head_weights,
                             vision_scores=b["vision_scores"], key=key)

            def predict(lm_params, b, head_weights, key):
                p = run(lm_params, b, head_weights, key)
                return jnp.argmax(answer_logits(lm_params, p, config=cfg), -1)

            self._predict[method] = (jax.jit(run), jax.jit(predict))
        return self._predict[method]

    def accuracy(self, method: PruneConfig, batches: list[dict], head_weights, seed: int = 0,
                 lm_params=None) -> tuple[float, dict]:
        """(accuracy, accuracy by question kind) of `method` over prepared batches."""
        lm_params = self.params["lm"] if lm_params is None else lm_params
        predict = self.pruned(method)[1]
        hits, kinds = [], []
        for i, b in enumerate(batches):
            key = jax.random.fold_in(jax.random.PRNGKey(seed), i)
            sub = {k: v for k, v in b.items() if k not in ("answer", "kinds")}
            hits.append(np.asarray(predict(lm_params, sub, head_weights, key)) == b["answer"])
            kinds.append(b["kinds"])
        hits, kinds = np.concatenate(hits), np.concatenate(kinds)
        by_kind = {k: float(hits[kinds == k].mean()) for k in shapes_vqa.KINDS
                   if (kinds == k).any()}
        return float(hits.mean()), by_kind


def _method(config, name: str, ratio: float) -> PruneConfig:
    return PruneConfig(method=name, keep_ratio=round(1.0 - ratio, 6),
                       fastv_layer=config.fastv_layer, dart_pivots=config.dart_pivots)


def _strip(b: dict) -> dict:
    return {k: v for k, v in b.items() if k not in ("answer", "kinds")}


def latency_cell(config, study: Study, batch: dict, head_weights, name: str, ratio: float) -> dict:
    """Prefill and end-to-end wall time, prompt width and KV-cache bytes of one setting."""
    vcfg = study.vcfg
    method = _method(config, name, ratio) if name != "none" else PruneConfig(method="none")
    run, predict = study.pruned(method)
    b, key = _strip(batch), jax.random.PRNGKey(0)
    lm = study.params["lm"]
    first, prefill_s, _ = timed_call(
        lambda: jax.block_until_ready(predict(lm, b, head_weights, key)), config.repeats)
    cell = {"prefill_s": prefill_s, "width": int(run(lm, b, head_weights, key).mask.shape[1])}
    width = cell["width"]
    cache = jax.eval_shape(lambda: init_cache(vcfg.text, b["mask"].shape[0], width + 2))
    cell["kv_bytes"] = int(sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(cache)))
    if name == "fastv":  # per-layer masks over the full sequence: nothing to generate from
        return cell

    def end_to_end():
        prepared = study.prepare(batch)  # vision encoder + splice
        p = run(lm, _strip(prepared), head_weights, key)
        if name == "none":  # left-pad the unpruned prompt, as generation takes it
            embeds, tokens, positions, mask = compact(p.embeds, p.tokens, p.positions, p.mask,
                                                      p.mask, p.mask.shape[1])
        else:
            embeds, tokens, positions, mask = p.embeds, p.tokens, p.positions, p.mask
        feats = embeds[tokens == shapes_vqa.IMAGE_ID]
        return vlm_generate(study.params, tokens, feats, positions, max_new_tokens=2,
                            mask=mask, eos_id=shapes_vqa.EOS_ID, config=vcfg)

    out, cell["e2e_s"], _ = timed_call(end_to_end, config.repeats)
    cell["e2e_agrees_with_prefill"] = float(np.mean([o[0] == f for o, f in
                                                     zip(out, np.asarray(first), strict=True)]))
    return cell


def run(config) -> str:
    """Runs (or resumes) the study and writes the report; returns the report."""
    params, vcfg, info, digest = get_model(config)
    cells = load_cells(config.cache, weights=digest)
    study = Study(params, vcfg)
    cells["model"] = {k: info.get(k) for k in ("steps", "batch_size", "learning_rate",
                                               "seconds_this_run", "resumed_at")}

    def head_weights():
        calib = [study.prepare(b) for b in eval_batches("train", config.calibration,
                                                        config.batch_size, config.seed,
                                                        CALIBRATION_OFFSET)]
        none = PruneConfig(method="none")
        weights, drops = head_importance(
            lambda lp: study.accuracy(none, calib, None, lm_params=lp)[0], params["lm"],
            config=vcfg.text)
        return {"weights": weights.tolist(), "drops": drops.tolist(),
                "calibration": config.calibration}

    hw = jnp.asarray(cells.compute("head_weights", head_weights)["weights"], jnp.float32)
    for split, n in config.splits:
        cells.compute(f"{split}/blind", lambda split=split, n=n: _blind(config, split, n))
        keys = [f"{split}/none"] + [f"{split}/{m}/{r}" for m in config.methods
                                    for r in config.ratios]
        if all(k in cells for k in keys):
            continue
        batches = [study.prepare(b) for b in eval_batches(split, n, config.batch_size,
                                                          config.seed)]
        for key in keys:
            parts = key.split("/")
            method = (PruneConfig(method="none") if parts[1] == "none"
                      else _method(config, parts[1], float(parts[2])))

            def accuracy(method=method, batches=batches, n=n):
                acc, by_kind = study.accuracy(method, batches, hw, seed=config.seed)
                return {"accuracy": acc, "by_kind": by_kind, "n": n}

            cells.compute(key, accuracy, log=key)
    batch = eval_batches("test", config.latency_batch, config.latency_batch, config.seed)[0]
    prepared = study.prepare(batch)
    lat_keys = [("none", 0.0)] + [(m, r) for m in config.latency_methods
                                  for r in config.latency_ratios]
    if not all(f"latency/{m}/{r}" in cells for m, r in lat_keys):
        # Timings are compared within one run: recompute them all together.
        for m, r in lat_keys:
            cells[f"latency/{m}/{r}"] = latency_cell(config, study, {**prepared,
                                                                      "images": batch["images"]},
                                                     hw, m, r)
            print(f"latency/{m}/{r}: {cells[f'latency/{m}/{r}']}", flush=True)
        cells.save()
    report = write_report(config.output, _report(config, cells))
    _plot(config, cells)
    return report


def _blind(config, split: str, n: int) -> dict:
    """The accuracy of image-blind guessing (`shapes_vqa.blind_answers`) on a split."""
    guess = shapes_vqa.blind_answers(seed=config.seed)
    exs = [shapes_vqa.example(split, i, config.seed) for i in range(n)]
    return {"accuracy": float(np.mean([guess[e.kind] == e.answer for e in exs]))}


def retention(cells, split: str, method: str, ratio: float) -> float:
    """Pruned accuracy over unpruned accuracy."""
    base = cells[f"{split}/none"]["accuracy"]
    return cells[f"{split}/{method}/{ratio}"]["accuracy"] / base if base else math.nan


def claims(config, cells) -> list[str]:
    """The issue's targets, each confirmed or refuted by the numbers."""
    out, r = [], config.headline
    for split, _ in config.splits:
        ret = retention(cells, split, "hawk", r)
        others = ", ".join(f"{m} {100 * retention(cells, split, m, r):.1f}%"
                           for m in config.methods if m != "hawk")
        out.append(f"- HAWK keeps >= 95% of accuracy at {100 * r:.0f}% pruning on {split}: "
                   f"{verdict(ret >= 0.95, bold=True)} ({100 * ret:.1f}%; {others}).")
        for rival in ("fastv", "random"):
            if rival not in config.methods:
                continue
            wins = [q for q in config.ratios if cells[f"{split}/hawk/{q}"]["accuracy"]
                    > cells[f"{split}/{rival}/{q}"]["accuracy"]]
            ok = len(wins) == len(config.ratios)
            out.append(f"- HAWK above {rival} at every ratio on {split}: {verdict(ok, bold=True)} "
                       f"(above at {len(wins)} of {len(config.ratios)}).")
    base = cells["latency/none/0.0"]
    if f"latency/hawk/{r}" in cells:
        lat = cells[f"latency/hawk/{r}"]
        ratio = lat["prefill_s"] / base["prefill_s"]
        out.append(f"- HAWK's prefill latency at {100 * r:.0f}% pruning <= 0.75x no pruning: "
                   f"{verdict(ratio <= 0.75, bold=True)} ({ratio:.2f}x; end to "
                   f"end {lat['e2e_s'] / base['e2e_s']:.2f}x; KV cache "
                   f"{lat['kv_bytes'] / base['kv_bytes']:.2f}x).")
    return out


def _report(config, cells) -> str:
    m = cells["model"]
    lines = [
        "# HAWK: head-importance-aware visual token pruning on the shapes VLM",
        "",
        "Produced by `python -m experiments.hawk` (configs/hawk.py). Model: "
        f"`effjax.pruning.load_shapes_vlm()` (Qwen2.5-VL-shaped, {NUM_VISUAL} visual tokens per "
        f"64x64 image; trained by `train_shapes_vlm`: {m['steps']} steps of "
        f"{m['batch_size']}, {m['seconds_this_run']:.0f} s on this machine's CPU). Pruning "
        "ratio = fraction of visual tokens dropped; kept = ceil(64 x (1 - ratio)). "
        "Accuracy is exact match of the one-word answer (greedy); retention = pruned / "
        "unpruned accuracy.",
        "",
    ]
    for split, n in config.splits:
        base = cells[f"{split}/none"]["accuracy"]
        blind = cells.get(f"{split}/blind", {}).get("accuracy", math.nan)
        lines += [f"## {split} split ({n} questions; unpruned accuracy {100 * base:.1f}%, "
                  f"image-blind guess {100 * blind:.1f}%)", "",
                  markdown_table(["method", *(f"{100 * r:.0f}% pruned" for r in config.ratios)],
                                 [[meth, *(f"{100 * cells[f'{split}/{meth}/{r}']['accuracy']:.1f} "
                                           f"({100 * retention(cells, split, meth, r):.1f}%)"
                                           for r in config.ratios)]
                                  for meth in config.methods]),
                  "Cells: accuracy % (retention %).", ""]
    r = config.headline
    split0 = config.splits[0][0]
    kinds = []
    for meth in ("none", *config.methods):
        c = cells[f"{split0}/none"] if meth == "none" else cells[f"{split0}/{meth}/{r}"]
        kinds.append([meth, *(f"{100 * c['by_kind'].get(k, math.nan):.1f}"
                              for k in shapes_vqa.KINDS)])
    hw = cells["head_weights"]
    base = cells["latency/none/0.0"]
    latency = []
    for key in sorted(k for k in cells if k.startswith("latency/")):
        _, meth, q = key.split("/")
        c = cells[key]
        e2e = ([f"{1000 * c['e2e_s']:.1f}", f"{c['e2e_s'] / base['e2e_s']:.2f}x"]
               if "e2e_s" in c else ["n/a", "n/a"])
        latency.append([meth, f"{100 * float(q):.0f}%", c["width"], f"{1000 * c['prefill_s']:.1f}",
                        f"{c['prefill_s'] / base['prefill_s']:.2f}x", *e2e,
                        f"{c['kv_bytes'] / 1024:.0f}", f"{c['kv_bytes'] / base['kv_bytes']:.2f}x"])
    lines += [f"## By question kind ({split0}, {100 * r:.0f}% pruned; accuracy %)", "",
              markdown_table(["method", *shapes_vqa.KINDS], kinds),
              f"## HAWK head weights (layer 0, {hw['calibration']} calibration questions)", "",
              markdown_table(["head", "accuracy drop when ablated", "weight"],
                             [[h, f"{d:+.4f}", f"{w:+.3f}"] for h, (d, w) in
                              enumerate(zip(hw["drops"], hw["weights"], strict=True))]),
              f"## Latency and KV cache ({config.latency_batch} test prompts together, "
              f"median of {config.repeats} after a compiling call)", "",
              markdown_table(["method", "pruned", "prompt tokens", "prefill ms", "vs none",
                              "end to end ms", "vs none", "KV cache KiB", "vs none"], latency),
              "Prefill = scoring + compaction + the language model's forward over the prompt "
              "(image features precomputed); end to end = vision encoder + pruning + generating "
              "the answer and <eos> with the KV cache (`effjax.decoding.vlm_generate`). FastV "
              "here keeps the full sequence and masks dropped tokens after its layer K "
              f"(K = {config.fastv_layer}), so it saves no time or cache in this implementation; "
              "its end to end is not timed. Every row's first generated token was checked "
              "against its prefill's argmax: "
              + ", ".join(f"{k.split('/', 1)[1]} {c['e2e_agrees_with_prefill']:.2f}"
                          for k, c in sorted(cells.items())
                          if k.startswith("latency/") and "e2e_agrees_with_prefill" in c) + ".",
              "", "## Claims", "", *claims(config, cells), ""]
    return "\n".join(lines)


def _plot(config, cells) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(config.splits), figsize=(5 * len(config.splits), 4),
                             sharey=True)
    for ax, (split, _) in zip(np.atleast_1d(axes), config.splits, strict=True):
        for meth in config.methods:
            ax.plot([100 * r for r in config.ratios],
                    [100 * retention(cells, split, meth, r) for r in config.ratios], "o-",
                    label=meth)
        ax.axhline(95, color="gray", ls=":", lw=1)
        ax.set(title=f"{split} split", xlabel="visual tokens pruned (%)",
               ylabel="accuracy retention (%)")
        ax.grid(True, alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, config.plot)


if __name__ == "__main__":
    main_with_config(run, "hawk")

"""Diffusion vs autoregressive agents in one tool-use workflow (the DLLM-agent study).

An autoregressive agent and masked-diffusion agents of the same architecture
(`effjax.agents.AGENT_CONFIG`), trained on identical reference trajectories, run the same
episodes (`effjax.agents.run_episodes`) on held-out tasks. Per row: success, rounds, tool
calls (also conditioned on success), malformed actions, forward passes and end-to-end wall
time (the second of two identical passes, so compilation is not counted), both for
batches of episodes (throughput) and one episode at a time (an agent's latency). Ablations:
diffusion agents trained with bidirectional (unaligned) attention, and without the
tool-call-specific rows.

    python -m experiments.dllm_agent [--config configs/dllm_agent.py:tiny]
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

import numpy as np

from effjax import zoo
from effjax.agents.episodes import ACTION_LEN, ARPolicy, DiffusionPolicy, run_episodes
from effjax.agents.tools import KINDS, MALFORMED, tasks
from effjax.agents.train import AGENT_CONFIG, AgentTraining, load_agent, train_agent
from effjax.decoding.diffusion import DiffusionSampling
from experiments.common import (
    binomial_se,
    fmt_number,
    load_cells,
    main_with_config,
    markdown_table,
    plus_minus,
    pyplot,
    save_figure,
    stopwatch,
    verdict,
    within_two_se,
    write_report,
)

AGENTS = ("ar", "dllm", "dllm_unaligned", "dllm_nocall")


def agent_run(config, agent: str) -> AgentTraining:
    """The `AgentTraining` of an agent name under the config's training settings."""
    if agent not in AGENTS:
        raise ValueError(f"agent must be one of {AGENTS}, got {agent!r}")
    t = config.train
    common = dict(batch_size=t.batch_size, learning_rate=t.learning_rate, seed=t.seed)
    if agent == "ar":
        return AgentTraining(paradigm="ar", steps=t.ar_steps, **common)
    return AgentTraining(paradigm="diffusion", steps=t.dllm_steps,
                         aligned=agent != "dllm_unaligned",
                         call_focus=0.0 if agent == "dllm_nocall" else t.call_focus, **common)


def get_agent(config, agent: str):
    """The agent's (params, info): from `config.zoo` (default the zoo: a retrained copy in
    the user cache, else the shipped one) when trained with these settings, else trained
    and written to `config.zoo` or the user cache."""
    run = agent_run(config, agent)
    path = pathlib.Path(config.zoo) / run.name if config.zoo else zoo.weights_dir(run.name)
    if (path / "model.safetensors").is_file():
        lm = load_agent(run, path=path)
        if lm.extras["info"]["run"] == dataclasses.asdict(run):
            return lm.params, lm.extras["info"]
    if not config.train_missing:
        raise ValueError(f"no trained {run.name} with these settings in {str(path)!r}; set "
                         "train_missing=True to train it")
    print(f"training {run.name} ({run.steps} steps)", flush=True)
    return train_agent(run, path=pathlib.Path(config.zoo) / run.name if config.zoo else "zoo")


def make_policy(agent: str, params, sampler: dict):
    if agent == "ar":
        return ARPolicy(params, AGENT_CONFIG)
    sampling = DiffusionSampling(gen_length=ACTION_LEN, **{"steps": ACTION_LEN, **sampler})
    return DiffusionPolicy(params, AGENT_CONFIG, sampling, aligned=agent != "dllm_unaligned")


def summarize(results, seconds: float) -> dict:
    """The study's numbers for one row's episodes."""
    n = len(results)
    ok = [r for r in results if r.success]
    actions = sum(r.rounds for r in results)
    malformed = sum(sum(r.malformed.values()) for r in results)
    p = len(ok) / n
    mean = lambda xs: float(np.mean(xs)) if xs else math.nan
    return {
        "episodes": n, "success": p, "success_se": binomial_se(p, n),
        "rounds": mean([r.rounds for r in results]),
        "tool_calls": mean([r.tool_calls for r in results]),
        "rounds_if_success": mean([r.rounds for r in ok]),
        "calls_if_success": mean([r.tool_calls for r in ok]),
        "actions": actions, "malformed": malformed,
        "malformed_per_100_actions": 100 * malformed / max(actions, 1),
        "malformed_by_kind": {k: sum(r.malformed[k] for r in results) for k in MALFORMED},
        "forward_passes": mean([r.forward_passes for r in results]),
        "seconds": seconds, "ms_per_episode": 1000 * seconds / n,
        "success_by_kind": {k: mean([float(r.success) for r in results if r.task.kind == k])
                            for k in KINDS},
        "ends": {e: sum(r.end == e for r in results) for e in ("answer", "max_rounds",
                                                               "overflow")},
        "example": results[0].transcript,
    }


def row_cell(config, agent: str, sampler: dict, items) -> dict:
    params, info = get_agent(config, agent)
    policy = make_policy(agent, params, sampler)
    kw = dict(max_rounds=config.max_rounds, batch_size=config.batch_size)
    warm = run_episodes(policy, items, **kw)  # compiles every context width
    elapsed = stopwatch()
    results = run_episodes(policy, items, **kw)
    cell = summarize(results, elapsed())
    cell["deterministic"] = [r.success for r in warm] == [r.success for r in results]
    one = list(items[:config.latency_tasks])
    run_episodes(policy, one, max_rounds=config.max_rounds, batch_size=1)  # compiles
    single = run_episodes(policy, one, max_rounds=config.max_rounds, batch_size=1)
    per = [r.seconds for r in single]
    cell["latency_ms"] = 1000 * float(np.mean(per))
    cell["latency_p95_ms"] = 1000 * float(np.percentile(per, 95))
    cell["latency_success"] = float(np.mean([r.success for r in single]))
    cell["train_seconds"] = info.get("seconds")
    cell["final_loss"] = info["loss_curve"][-1][1] if info.get("loss_curve") else None
    return cell


def run(config) -> str:
    """Runs (or resumes) the study and writes the report; returns the report."""
    cells = load_cells(config.cache)
    if config.compute:
        items = tasks(config.test_seed, config.test_tasks, split="test")
        for label, agent, sampler in config.rows:
            cells.compute(label, lambda a=agent, s=dict(sampler): row_cell(config, a, s, items),
                          log=f"row: {label}")
    report = write_report(config.output, _report(config, cells))
    _plot(config, cells)
    return report


def _report(config, cells) -> str:
    rows = [(label, cells[label]) for label, _, _ in config.rows if label in cells]
    ar = cells.get(config.rows[0][0])
    lines = [
        "# Diffusion vs autoregressive agents (tool use)", "",
        "Command: `python -m experiments.dllm_agent`. Both paradigms share one architecture "
        f"({AGENT_CONFIG.num_layers} blocks, hidden {AGENT_CONFIG.hidden_size}, char "
        "vocabulary) and were trained on the same reference trajectories; "
        f"{config.test_tasks} held-out tasks (chains, chain + calculator, team/city "
        f"intersections, dates; 1-3 tool calls), at most {config.max_rounds} actions, "
        f"on this 2-core CPU. Time = the second of two identical passes (no compilation): "
        f"per episode in batches of {config.batch_size} (throughput) and, on the first "
        f"{config.latency_tasks} tasks, one episode at a time (latency); speed = AR time / "
        "row time.", "",
    ]
    table = []
    for label, c in rows:
        speed = {k: ar[k] / c[k] if ar else None for k in ("ms_per_episode", "latency_ms")}
        table.append([label, plus_minus(100 * c["success"], 100 * c["success_se"]),
                      *(fmt_number(c[k], ".2f") for k in ("rounds", "tool_calls",
                                                          "rounds_if_success", "calls_if_success")),
                      *(fmt_number(c[k], ".1f") for k in ("malformed_per_100_actions",
                                                          "forward_passes", "ms_per_episode")),
                      fmt_number(speed["ms_per_episode"], ".2f"),
                      fmt_number(c["latency_ms"], ".0f"), fmt_number(speed["latency_ms"], ".2f")])
    lines += [markdown_table(["row", "success %", "rounds", "tool calls", "rounds if ok",
                              "calls if ok", "malformed / 100 actions", "forward passes",
                              f"ms / episode (batch {config.batch_size})", "speed vs AR",
                              "ms / episode (alone)", "speed vs AR (alone)"], table), ""]
    lines += ["Success by task kind (%) and malformed actions by kind:", ""]
    lines += [markdown_table(["row", *KINDS, *MALFORMED], [
        [label, *(fmt_number(100 * c["success_by_kind"][k], ".1f") for k in KINDS),
         *(str(c["malformed_by_kind"][k]) for k in MALFORMED)] for label, c in rows]), ""]
    lines += ["## Claims", "", *(f"- {s}" for s in _claims(config, cells)), ""]
    if rows:
        lines += ["## Example episode (" + rows[-1][0] + ")", "", "```",
                  rows[-1][1]["example"].rstrip(), "```", ""]
    return "\n".join(lines)


def _comparable(a, b) -> bool:
    """Success rates within two standard errors of their difference."""
    return within_two_se(a["success"], b["success"], a["success_se"], b["success_se"])


def _claims(config, cells) -> list[str]:
    labels = {agent: label for label, agent, _ in config.rows}
    ar, fast = cells.get(config.rows[0][0]), cells.get(config.fast_row)
    out = []
    if ar and fast:
        speed = ar["latency_ms"] / fast["latency_ms"]
        batched = ar["ms_per_episode"] / fast["ms_per_episode"]
        comp = _comparable(ar, fast)
        out.append(
            "Diffusion agent over 30% faster end to end at comparable accuracy: "
            f"{verdict(speed >= 1.3 and comp, bold=True)} "
            f"— one episode at a time {config.fast_row} takes {fast['latency_ms']:.0f} ms vs "
            f"{ar['latency_ms']:.0f} ms for AR (speed {speed:.2f}x; in batches of "
            f"{config.batch_size}: {batched:.2f}x), success {100 * fast['success']:.1f}% vs "
            f"{100 * ar['success']:.1f}% ({'within' if comp else 'not within'} two standard "
            "errors).")
        if not math.isnan(fast["rounds_if_success"]) and not math.isnan(ar["rounds_if_success"]):
            fewer = (fast["rounds_if_success"] < 0.95 * ar["rounds_if_success"]
                     and fast["calls_if_success"] < 0.95 * ar["calls_if_success"])
            out.append(
                "Fewer rounds and tool calls when successful (by at least 5%): "
                f"{verdict(fewer, bold=True)} — rounds {fast['rounds_if_success']:.2f}"
                f" vs {ar['rounds_if_success']:.2f}, calls {fast['calls_if_success']:.2f} vs "
                f"{ar['calls_if_success']:.2f} (the reference solutions' depth bounds both).")
        more = fast["malformed_per_100_actions"] > ar["malformed_per_100_actions"]
        out.append(f"Diffusion policies more prone to malformed calls: "
                   f"{verdict(more, bold=True)} — "
                   f"{fast['malformed_per_100_actions']:.1f} vs "
                   f"{ar['malformed_per_100_actions']:.1f} malformed per 100 actions "
                   f"({fast['malformed']} of {fast['actions']} vs {ar['malformed']} of "
                   f"{ar['actions']}).")
    nocall, base = cells.get(labels.get("dllm_nocall")), None
    for label, agent, sampler in config.rows:  # the aligned agent under the ablations' sampler
        if agent == "dllm" and nocall and sampler == dict(next(
                s for lab, a, s in config.rows if a == "dllm_nocall")):
            base = cells.get(label)
    if nocall and base:
        helps = base["malformed_per_100_actions"] < nocall["malformed_per_100_actions"]
        out.append(f"Tool-call-specific data lowers malformed calls: "
                   f"{verdict(helps, bold=True)} — "
                   f"{base['malformed_per_100_actions']:.1f} with vs "
                   f"{nocall['malformed_per_100_actions']:.1f} without per 100 actions "
                   f"(success {100 * base['success']:.1f}% vs {100 * nocall['success']:.1f}%).")
    unaligned = cells.get(labels.get("dllm_unaligned"))
    if unaligned and base:
        worse = unaligned["success"] < base["success"] and not _comparable(unaligned, base)
        out.append(f"Without aligned attention masks performance degrades: "
                   f"{verdict(worse, bold=True)} — success "
                   f"{100 * unaligned['success']:.1f}% unaligned vs {100 * base['success']:.1f}% "
                   f"aligned ({'beyond' if worse else 'not beyond'} two standard errors when "
                   "lower).")
    return out


def _plot(config, cells) -> None:
    rows = [(label, cells[label]) for label, _, _ in config.rows if label in cells]
    if not rows:
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, c in rows:
        ax.errorbar(c["latency_ms"], 100 * c["success"], yerr=200 * c["success_se"],
                    fmt="o", capsize=3, label=label)
    ax.set(xlabel="wall time per episode (ms, one at a time)", ylabel="success (%, ±2 SE)",
           title="Tool-use agents: accuracy vs end-to-end time")
    ax.set_xscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, config.plot)


if __name__ == "__main__":
    main_with_config(run, "dllm_agent")

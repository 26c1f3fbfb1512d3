"""Multi-turn agent episodes: the token layout of context and action spans, the aligned
attention mask, training batches, the autoregressive and diffusion policies, the loop.

An episode is a sequence of turns. Turn 0's context is the question line "Q:...\\n";
each later turn's context is the previous call's tool output "R:...\\n". Every turn ends in
an action span: the model's JSON line, "\\n", then `FILL_ID` tokens up to `ACTION_LEN`
(the diffusion policy's canvas; the autoregressive policy stops at "\\n" and the loop
appends the same fill, so both policies see identical contexts).

Aligned masking (`span_attention_mask`): attention is block-causal over turns, and a
context token never sees its own turn's action; an action token sees its whole turn and
everything before. So when action spans are noised for diffusion training, no context
position reads a noised action of its own or a later turn, and at inference the context's
states do not depend on the canvas being denoised. The unaligned variant is plain
bidirectional attention.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Int

from effjax.agents.tools import KINDS, Task, check_action, make_task, run_tool, solve, split_of
from effjax.data.arithmetic import CharTokenizer
from effjax.decoding.diffusion import DiffusionSampling, sample
from effjax.decoding.generate import generate, prepare_prompts
from effjax.models.config import LMConfig
from effjax.models.decoder import Params

TOKENIZER = CharTokenizer()
NEWLINE = ord("\n")
FILL_ID = 1  # pads an action span to ACTION_LEN
MASK_ID = 127  # the diffusion mask token (DEL never occurs in text)
ACTION_LEN = 36
SEQ_LEN = 256
MALFORMED_OUTPUT = "error: malformed call"


@dataclasses.dataclass
class Context:
    """An episode's tokens so far, with each token's turn and span kind."""

    tokens: list[int] = dataclasses.field(default_factory=list)
    turn: list[int] = dataclasses.field(default_factory=list)
    is_action: list[bool] = dataclasses.field(default_factory=list)

    @property
    def current_turn(self) -> int:
        return self.turn[-1] if self.turn else 0

    def add_context(self, text: str, turn: int) -> None:
        ids = TOKENIZER.encode(text)
        self.tokens += ids
        self.turn += [turn] * len(ids)
        self.is_action += [False] * len(ids)

    def add_action(self, text: str) -> None:
        """Appends an action line (cut to fit ACTION_LEN with its newline) and its fill."""
        ids = TOKENIZER.encode(text)[: ACTION_LEN - 1] + [NEWLINE]
        ids += [FILL_ID] * (ACTION_LEN - len(ids))
        self.tokens += ids
        self.turn += [self.current_turn] * ACTION_LEN
        self.is_action += [True] * ACTION_LEN


def question_context(task: Task) -> Context:
    ctx = Context()
    ctx.add_context(f"Q:{task.question}\n", 0)
    return ctx


def trajectory_context(task: Task) -> tuple[Context, list[bool]]:
    """The reference trajectory's tokens, and per token whether it is in a tool-call span
    (an action that is not the final answer)."""
    ctx = question_context(task)
    steps = solve(task)
    is_call: list[bool] = [False] * len(ctx.tokens)
    for j, (action, output) in enumerate(steps):
        ctx.add_action(action)
        is_call += [j < len(steps) - 1] * ACTION_LEN
        if j < len(steps) - 1:
            before = len(ctx.tokens)
            ctx.add_context(f"R:{output}\n", j + 1)
            is_call += [False] * (len(ctx.tokens) - before)
    return ctx, is_call


def span_attention_mask(
    turn: Int[Array, "b t"], is_action: Bool[Array, "b t"], *, aligned: bool = True
) -> Bool[Array, "b t t"]:
    """Which key each query may attend to over interleaved context and action spans.

    Args:
      turn: each token's turn index.
      is_action: True on action-span tokens.
      aligned: block-causal over turns with contexts blind to their own turn's action
        (see the module docstring); False = bidirectional.

    Returns:
      allowed[b, query, key].
    """
    b, t = turn.shape
    if not aligned:
        return jnp.ones((b, t, t), bool)
    tq, tk = turn[:, :, None], turn[:, None, :]
    aq, ak = is_action[:, :, None], is_action[:, None, :]
    return (tk < tq) | ((tk == tq) & (aq | ~ak))


def training_batch(seed: int, position: int, batch: int, *, seq_len: int = SEQ_LEN,
                   call_focus: float = 0.0, kinds: Sequence[str] = KINDS
                   ) -> dict[str, np.ndarray]:
    """Batch number `position` of a deterministic stream of reference trajectories.

    Args:
      seed: stream seed.
      position: batch index (the same (seed, position) gives the same batch).
      batch: rows.
      seq_len: row length (right-padded).
      call_focus: fraction of rows whose noisable tokens are only the tool-call spans
        (tool-call-specific training data); the other rows noise every action span.
      kinds: task kinds drawn in turn.

    Returns:
      {"tokens", "valid", "turn", "is_action", "noisable", "targets"}: (batch, seq_len)
      arrays; "targets" marks the action tokens an autoregressive policy emits (the line
      and its newline, not the fill), "noisable" those a diffusion loss may mask.
    """
    if not 0.0 <= call_focus <= 1.0:
        raise ValueError(f"call_focus must be in [0, 1], got {call_focus}")
    rng = np.random.default_rng([seed, position])
    out = {k: np.zeros((batch, seq_len), dt) for k, dt in (
        ("tokens", np.int32), ("valid", bool), ("turn", np.int32), ("is_action", bool),
        ("noisable", bool), ("targets", bool))}
    focused = int(round(call_focus * batch))
    row = 0
    while row < batch:
        task = make_task(int(rng.integers(2**31)), kinds[int(rng.integers(len(kinds)))])
        if task is None or split_of(task.question) != "train":
            continue
        ctx, is_call = trajectory_context(task)
        n = len(ctx.tokens)
        if n > seq_len:
            raise ValueError(f"a trajectory needs {n} tokens, more than {seq_len=}")
        toks = np.asarray(ctx.tokens)
        action = np.asarray(ctx.is_action)
        out["tokens"][row, :n] = toks
        out["valid"][row, :n] = True
        out["turn"][row, :n] = ctx.turn
        out["is_action"][row, :n] = action
        out["noisable"][row, :n] = np.asarray(is_call) if row < focused else action
        out["targets"][row, :n] = action & (toks != FILL_ID)
        row += 1
    return out


class ARPolicy:
    """An autoregressive policy: greedy generation to the first newline, KV-cached."""

    def __init__(self, params: Params, config: LMConfig):
        self.params, self.config = params, config

    def act(self, contexts: Sequence[Context]) -> tuple[list[str], int]:
        """One action per context: (action texts, forward passes for the batch)."""
        outs = generate(self.params, [c.tokens for c in contexts],
                        max_new_tokens=ACTION_LEN - 1, eos_id=NEWLINE, config=self.config)
        return [TOKENIZER.decode(o).rstrip("\n") for o in outs], 1 + max(len(o) for o in outs)


class DiffusionPolicy:
    """A masked-diffusion policy: the action canvas denoised after the context.

    Args:
      params, config: the masked-diffusion LM.
      sampling: its sampler (gen_length must be ACTION_LEN).
      aligned: use the aligned span mask at inference (as in training).
      pad_to_multiple: context length bucket (limits recompilation).
    """

    def __init__(self, params: Params, config: LMConfig, sampling: DiffusionSampling, *,
                 aligned: bool = True, pad_to_multiple: int = 32):
        if sampling.gen_length != ACTION_LEN:
            raise ValueError(f"sampling.gen_length must be ACTION_LEN={ACTION_LEN}, got "
                             f"{sampling.gen_length}")
        self.params, self.config, self.sampling = params, config, sampling
        self.aligned, self.pad_to_multiple = aligned, pad_to_multiple

    def inputs(self, contexts: Sequence[Context]
               ) -> tuple[Int[Array, "b p"], Bool[Array, "b p"], Bool[Array, "b l l"]]:
        """What the sampler reads for a batch of contexts (l = p + ACTION_LEN).

        Args:
          contexts: one `Context` per episode.

        Returns:
          (left-padded context tokens, True on real tokens, the span attention mask over
          context + canvas): the arguments of `effjax.decoding.diffusion_sample`.
        """
        tokens, mask, _, _ = prepare_prompts(
            [c.tokens for c in contexts], self.config, max_new_tokens=ACTION_LEN,
            context=self.config.max_position_embeddings, pad_to_multiple=self.pad_to_multiple,
            eos_id=-1, key=None)
        b, width = tokens.shape
        turn = np.zeros((b, width + ACTION_LEN), np.int32)
        action = np.zeros((b, width + ACTION_LEN), bool)
        for i, c in enumerate(contexts):
            n = len(c.tokens)
            turn[i, width - n: width], action[i, width - n: width] = c.turn, c.is_action
            turn[i, width:], action[i, width:] = c.current_turn, True
        attn = span_attention_mask(jnp.asarray(turn), jnp.asarray(action),
                                   aligned=self.aligned)
        return tokens, mask, attn

    def act(self, contexts: Sequence[Context]) -> tuple[list[str], int]:
        """One action per context: (action texts, forward passes for the batch)."""
        tokens, mask, attn = self.inputs(contexts)
        out, nfe, _ = sample(self.params, tokens, mask, jax.random.PRNGKey(0), attn,
                             config=self.config, sampling=self.sampling, mask_id=MASK_ID)
        texts = []
        for row in np.asarray(out).tolist():
            row = row[: row.index(NEWLINE)] if NEWLINE in row else row
            texts.append(TOKENIZER.decode([t for t in row if t not in (FILL_ID, MASK_ID)]))
        return texts, int(nfe)


@dataclasses.dataclass
class EpisodeResult:
    """How one episode went.

    Attributes:
      task: the task.
      success: the final answer equals the task's.
      rounds: model actions taken.
      tool_calls: well-formed tool calls made.
      malformed: malformed actions, by `effjax.agents.tools.MALFORMED` kind.
      forward_passes: model forward passes over the episode's rounds (batched ones count
        once for every episode in the batch).
      seconds: wall time of the episode's rounds (a batch's time counts for each member).
      end: "answer", "max_rounds" or "overflow".
      transcript: the episode's text.
    """

    task: Task
    success: bool = False
    rounds: int = 0
    tool_calls: int = 0
    malformed: Counter = dataclasses.field(default_factory=Counter)
    forward_passes: int = 0
    seconds: float = 0.0
    end: str = ""
    transcript: str = ""


def run_episodes(policy, tasks: Sequence[Task], *, max_rounds: int = 6, batch_size: int = 32,
                 context_length: int = SEQ_LEN) -> list[EpisodeResult]:
    """Runs episodes in batches: every active episode acts, tools answer, repeat.

    Malformed actions never stop an episode: they are counted and answered with
    `MALFORMED_OUTPUT`, and the agent goes on.

    Args:
      policy: an object with `act(contexts) -> (texts, forward_passes)`.
      tasks: the tasks.
      max_rounds: actions allowed per episode.
      batch_size: episodes run together.
      context_length: an episode whose next canvas would not fit ends as "overflow".

    Returns:
      One `EpisodeResult` per task, in order.
    """
    if max_rounds <= 0 or batch_size <= 0:
        raise ValueError(f"max_rounds and batch_size must be positive, got {max_rounds=}, "
                         f"{batch_size=}")
    results = [EpisodeResult(task) for task in tasks]
    for lo in range(0, len(tasks), batch_size):
        chunk = list(range(lo, min(lo + batch_size, len(tasks))))
        contexts = {i: question_context(tasks[i]) for i in chunk}
        active = list(chunk)
        while active:
            t0 = time.perf_counter()
            texts, nfe = policy.act([contexts[i] for i in active])
            seconds = time.perf_counter() - t0
            still = []
            for i, text in zip(active, texts, strict=True):
                res, ctx = results[i], contexts[i]
                res.rounds += 1
                res.forward_passes += nfe
                res.seconds += seconds
                ctx.add_action(text)
                act = check_action(text)
                if act.kind == "answer":
                    res.success, res.end = act.answer == tasks[i].answer, "answer"
                    continue
                if act.kind == "tool":
                    res.tool_calls += 1
                    output = run_tool(act, tasks[i].kb)
                else:
                    res.malformed[act.error] += 1
                    output = MALFORMED_OUTPUT
                ctx.add_context(f"R:{output}\n", ctx.current_turn + 1)
                if res.rounds >= max_rounds:
                    res.end = "max_rounds"
                elif len(ctx.tokens) + ACTION_LEN > context_length:
                    res.end = "overflow"
                else:
                    still.append(i)
            active = still
        for i in chunk:
            results[i].transcript = TOKENIZER.decode(
                [t for t in contexts[i].tokens if t != FILL_ID])
    return results

"""QuantClaw: precision routing for agents.

A request's task type is detected (weighted rules first, an embedding-prototype detector
when the rules are not sure), a policy maps the task to a precision tier ("4bit", "8bit",
"16bit": quantized variants of one model), and the router generates with that variant,
escalating to the next tier when the detector was unsure or the result fails the task's
validator (a malformed tool call, an answer without a number). Each request reports its
cost: the bytes of weights the variant moves per generated token (decoding reads every
weight once per token) and the measured latency.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from effjax.formats import QArray

TIERS = ("4bit", "8bit", "16bit")

DEFAULT_RULES: dict[str, tuple[tuple[str, float], ...]] = {
    "arithmetic": ((r"\d+\s*[-+*/x×]\s*\d+", 2.0), (r"\b(calculate|compute|sum|product|how "
                   r"many|how much|total|plus|minus|times|divided)\b", 1.0),
                   (r"\bwhat is \d", 1.0)),
    "tool_call": ((r"\b(call|invoke|use)\b.{0,30}\b(tool|function|api)\b", 2.0),
                  (r"\b(weather|book|schedule|search the web|send an? (email|message)|"
                   r"set an? (alarm|timer|reminder))\b", 1.0), (r"[{]\s*\"name\"", 1.5)),
    "lookup": ((r"^\s*(who|when|where|which|what) (is|was|are|were|did)\b", 1.0),
               (r"\b(capital of|born|founded|located|population of|author of)\b", 1.5)),
    "summarization": ((r"\b(summari[sz]e|summary|tl;?dr|in short|key points|condense)\b", 2.0),),
    "continuation": ((r"\b(continue|complete|go on|keep writing|next sentence)\b", 2.0),
                     (r"(\.\.\.|…)\s*$", 1.0)),
}

DEFAULT_PROTOTYPES: dict[str, tuple[str, ...]] = {
    "arithmetic": ("What is 37 + 48?", "Compute 12 times 9.", "How much is 120 divided by 4?",
                   "If I have 3 apples and buy 5 more, how many do I have?"),
    "tool_call": ("Check the weather in Paris for tomorrow.", "Send an email to Bob saying hi.",
                  "Set a timer for ten minutes.", "Book a table for two at 7pm."),
    "lookup": ("Who wrote Pride and Prejudice?", "What is the capital of Canada?",
               "When was the Eiffel Tower built?", "Where is Mount Kilimanjaro?"),
    "summarization": ("Summarize this article in two sentences.", "Give me the key points.",
                      "TL;DR of the following text.", "Condense this paragraph."),
    "continuation": ("Continue the story: The old lighthouse keeper", "Keep writing this text.",
                     "Complete the paragraph below.", "Once upon a time there was"),
}

DEFAULT_POLICY: dict[str, str] = {"continuation": "4bit", "summarization": "8bit",
                                  "lookup": "8bit", "tool_call": "8bit", "arithmetic": "16bit"}


@dataclasses.dataclass(frozen=True)
class Detection:
    """A task decision: the task, a confidence in [0, 1], who decided, every task's score."""

    task: str
    confidence: float
    source: str
    scores: Mapping[str, float] = dataclasses.field(default_factory=dict)


class RuleDetector:
    """Weighted regular expressions per task; decides when the best score reaches
    `threshold` and beats the runner-up by `margin`.

    Args:
      rules: task -> ((pattern, weight), ...), patterns matched case-insensitively.
      threshold: the least winning score.
      margin: the least lead over the runner-up.
    """

    def __init__(self, rules: Mapping[str, Sequence[tuple[str, float]]] = DEFAULT_RULES, *,
                 threshold: float = 1.5, margin: float = 1.0):
        if not rules:
            raise ValueError("expected at least one task in rules")
        self.rules = {t: [(re.compile(p, re.I | re.M), float(w)) for p, w in rs]
                      for t, rs in rules.items()}
        self.threshold, self.margin = threshold, margin

    def scores(self, text: str) -> dict[str, float]:
        return {t: sum(w for p, w in rs if p.search(text)) for t, rs in self.rules.items()}

    def detect(self, text: str) -> Detection | None:
        scores = self.scores(text)
        ranked = sorted(scores.values(), reverse=True) + [0.0]
        best = max(scores, key=scores.get)
        if ranked[0] < self.threshold or ranked[0] - ranked[1] < self.margin:
            return None
        return Detection(best, (ranked[0] - ranked[1]) / ranked[0], "rule", scores)


class Encoder(Protocol):
    def encode(self, texts: list[str]) -> np.ndarray: ...


class EmbeddingDetector:
    """Nearest task prototypes in an embedding space.

    A task's score is 0.5 * (best similarity to its prototypes) + 0.5 * (mean of its top-3)
    + `keyword_bonus` per keyword of the task in the text; the confidence is the winner's
    lead over the runner-up, scaled by `scale` and clipped to [0, 1].

    Args:
      encoder: unit-norm text embeddings (`effjax.memory.Encoder`, or any).
      prototypes: task -> example requests.
      keywords: task -> words that add the bonus.
      keyword_bonus: added per keyword found.
      scale: lead that counts as full confidence.
    """

    def __init__(self, encoder: Encoder, prototypes: Mapping[str, Sequence[str]] =
                 DEFAULT_PROTOTYPES, *, keywords: Mapping[str, Sequence[str]] | None = None,
                 keyword_bonus: float = 0.05, scale: float = 0.15):
        if not prototypes or any(not p for p in prototypes.values()):
            raise ValueError("expected at least one prototype for every task")
        self.encoder = encoder
        self.tasks = list(prototypes)
        self.prototypes = {t: np.asarray(encoder.encode(list(p)), np.float32)
                           for t, p in prototypes.items()}
        self.keywords = {t: [k.lower() for k in ks] for t, ks in (keywords or {}).items()}
        self.keyword_bonus, self.scale = keyword_bonus, scale

    def scores(self, text: str) -> dict[str, float]:
        q = np.asarray(self.encoder.encode([text]), np.float32)[0]
        low = text.lower()
        out = {}
        for t, protos in self.prototypes.items():
            sims = np.sort(protos @ q)[::-1]
            bonus = self.keyword_bonus * sum(k in low for k in self.keywords.get(t, ()))
            out[t] = float(0.5 * sims[0] + 0.5 * sims[:3].mean() + bonus)
        return out

    def detect(self, text: str) -> Detection:
        scores = self.scores(text)
        ranked = sorted(scores.values(), reverse=True) + [float("-inf")]
        lead = ranked[0] - ranked[1] if np.isfinite(ranked[1]) else self.scale
        return Detection(max(scores, key=scores.get), float(np.clip(lead / self.scale, 0, 1)),
                         "embedding", scores)


class TaskDetector:
    """Rules first, then embeddings, then `default`; decisions cached by normalized text.

    Args:
      rules: a `RuleDetector` or None.
      embedding: an `EmbeddingDetector` or None.
      default: the task when neither decides (confidence 0).
      cache_size: decisions kept (least recently used dropped).
    """

    def __init__(self, rules: RuleDetector | None = None,
                 embedding: EmbeddingDetector | None = None, *, default: str = "continuation",
                 cache_size: int = 4096):
        self.rules, self.embedding, self.default = rules, embedding, default
        self.cache_size = cache_size
        self._cache: collections.OrderedDict[str, Detection] = collections.OrderedDict()
        self._lock = threading.Lock()

    def detect(self, text: str) -> Detection:
        key = " ".join(text.lower().split())
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return dataclasses.replace(self._cache[key], source="cache")
        found = self.rules.detect(text) if self.rules is not None else None
        if found is None and self.embedding is not None:
            found = self.embedding.detect(text)
        if found is None:
            found = Detection(self.default, 0.0, "default")
        with self._lock:
            self._cache[key] = found
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return found


@dataclasses.dataclass(frozen=True, kw_only=True)
class Policy:
    """Task type -> precision tier, with escalation.

    Attributes:
      tiers: task -> tier; tasks not listed get `default`.
      order: tiers from cheapest to most precise.
      default: the tier of unknown tasks.
      min_confidence: below it the detector counts as unsure and the task's tier is raised
        one step.
      no_escalation: tasks whose failed validation does not escalate (a profile found no
        more precise tier that passes the validator more often).
    """

    tiers: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(DEFAULT_POLICY))
    order: tuple[str, ...] = TIERS
    default: str = "16bit"
    min_confidence: float = 0.3
    no_escalation: frozenset[str] = frozenset()

    def __post_init__(self):
        for task, tier in {**self.tiers, "(default)": self.default}.items():
            if tier not in self.order:
                raise ValueError(f"expected the tier of {task!r} in {self.order}, got {tier!r}")
        if isinstance(self.no_escalation, str):
            raise ValueError("expected no_escalation to be a set of task names, got the "
                             f"string {self.no_escalation!r}")
        object.__setattr__(self, "no_escalation", frozenset(self.no_escalation))

    def choose(self, detection: Detection) -> str:
        tier = self.tiers.get(detection.task, self.default)
        if detection.confidence < self.min_confidence:
            tier = self.escalate(tier) or tier
        return tier

    def escalate(self, tier: str) -> str | None:
        """The next more precise tier, or None at the top."""
        i = self.order.index(tier)
        return self.order[i + 1] if i + 1 < len(self.order) else None

    def on_invalid(self, task: str, tier: str) -> str | None:
        """The tier to retry a result of `task` that failed validation at `tier`, or None."""
        return None if task in self.no_escalation else self.escalate(tier)

    def attempts(self, task: str, tier: str, passes: Callable[[str], bool],
                 max_escalations: int) -> list[str]:
        """Runs one request from `tier` up: `passes(t)` runs it at tier t and says whether
        the result passed validation; a failed result is retried at `on_invalid`'s tier, at
        most `max_escalations` times.

        Returns:
          The tiers tried, in order; the last one's result is the answer.
        """
        tried = [tier]
        while not passes(tier) and len(tried) <= max_escalations:
            tier = self.on_invalid(task, tier)
            if tier is None:
                break
            tried.append(tier)
        return tried


def parse_tool_call(text: str) -> dict | None:
    """The first JSON object in text with a string "name" and a dict "arguments", or None."""
    for m in re.finditer(r"\{", text):
        depth = 0
        for j in range(m.start(), len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0:
                try:
                    obj = json.loads(text[m.start():j + 1])
                except json.JSONDecodeError:
                    break
                if (isinstance(obj, dict) and isinstance(obj.get("name"), str)
                        and isinstance(obj.get("arguments"), dict)):
                    return obj
                break
    return None


def has_number(text: str) -> bool:
    return re.search(r"-?\d", text) is not None


VALIDATORS: dict[str, Callable[[str], bool]] = {
    "tool_call": lambda text: parse_tool_call(text) is not None,
    "arithmetic": has_number,
}


def weight_bytes(params: Any) -> int:
    """Bytes of a parameter pytree as stored: a QArray's codes and scales, other leaves'
    buffers (what one decoding step reads)."""
    leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, QArray))
    return sum(sum(q.storage_bits().values()) // 8 if isinstance(q, QArray)
               else int(np.prod(np.shape(q))) * np.dtype(q.dtype).itemsize for q in leaves)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One precision tier of a model: its parameters (float or with QArray weights), the
    compute dtype and an optional activation / KV recipe."""

    params: Any
    dtype: Any = jnp.float32
    recipe: Any = None

    @property
    def bytes(self) -> int:
        return weight_bytes(self.params)


@dataclasses.dataclass(frozen=True)
class RoutedOutput:
    """A routed generation and its cost.

    Attributes:
      text: the decoded continuation.
      tokens: its token ids.
      tier: the tier that produced it; `tiers_tried` every tier in order.
      detection: the task decision.
      valid: whether the task's validator accepted the text (True without a validator).
      latency_s: wall time of the whole request; routing_s: of detection and policy.
      bytes_moved: weight bytes read over all attempts (bytes per token x tokens).
    """

    text: str
    tokens: list[int]
    tier: str
    tiers_tried: tuple[str, ...]
    detection: Detection
    valid: bool
    latency_s: float
    routing_s: float
    bytes_moved: int
    prompt_tokens: int


class PrecisionRouter:
    """Routes each request to a precision variant of one model; the generate API of a model.

    Args:
      variants: tier -> `Variant` (all of one `config`).
      config: the model's `LMConfig`.
      tokenizer: a `transformers` tokenizer (encode / decode).
      detector: a `TaskDetector`; default rules only.
      policy: a `Policy`.
      validators: task -> (text -> bool); a failing result escalates.
      max_escalations: retries at higher tiers per request.
    """

    def __init__(self, variants: Mapping[str, Variant], config, tokenizer, *,
                 detector: TaskDetector | None = None, policy: Policy | None = None,
                 validators: Mapping[str, Callable[[str], bool]] = VALIDATORS,
                 max_escalations: int = 1):
        self.policy = policy or Policy(order=tuple(t for t in TIERS if t in variants))
        missing = [t for t in self.policy.order if t not in variants]
        if missing:
            raise ValueError(f"expected a variant for every tier of the policy "
                             f"{self.policy.order}, missing {missing}")
        self.variants, self.config, self.tokenizer = dict(variants), config, tokenizer
        self.detector = detector or TaskDetector(RuleDetector())
        self.validators = dict(validators)
        self.max_escalations = max_escalations
        self._bytes = {t: v.bytes for t, v in self.variants.items()}
        self._lock = threading.Lock()  # one generation at a time on the device

    def route(self, text: str, task: str | None = None) -> tuple[Detection, str]:
        """The task decision and the tier for a request (task forces the task)."""
        detection = (Detection(task, 1.0, "given") if task is not None
                     else self.detector.detect(text))
        return detection, self.policy.choose(detection)

    def generate(self, prompt: str, *, max_new_tokens: int = 64, task: str | None = None,
                 tier: str | None = None, stop: Sequence[str] = ()) -> RoutedOutput:
        """Generates a continuation of prompt at the routed tier (greedy).

        Args:
          prompt: the request text (already templated).
          max_new_tokens: tokens to generate (>= 1).
          task: skip detection and use this task.
          tier: skip routing and use this tier (no escalation).
          stop: strings that end the text (cut before them).

        Returns:
          A `RoutedOutput`.
        """
        from effjax.decoding import generate

        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"expected prompt to be a non-empty string, got {prompt!r}")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"expected max_new_tokens to be an int >= 1, got {max_new_tokens!r}")
        if tier is not None and tier not in self.variants:
            raise ValueError(f"expected tier in {list(self.variants)}, got {tier!r}")
        start = time.perf_counter()
        detection, chosen = self.route(prompt, task)
        if tier is not None:
            chosen = tier
        routing_s = time.perf_counter() - start
        ids = self.tokenizer(prompt)["input_ids"]
        check = self.validators.get(detection.task)
        results = {}

        def passes(t: str) -> bool:
            v = self.variants[t]
            with self._lock:
                out = generate(v.params, [ids], max_new_tokens=max_new_tokens,
                               dtype=v.dtype, recipe=v.recipe, config=self.config)[0]
            text = self.tokenizer.decode(out, skip_special_tokens=True)
            for s in stop:
                text = text.split(s)[0]
            results[t] = (out, text, check is None or check(text))
            return results[t][2]

        tried = self.policy.attempts(detection.task, chosen, passes,
                                     self.max_escalations if tier is None else 0)
        moved = sum(self._bytes[t] * len(results[t][0]) for t in tried)
        out, text, valid = results[tried[-1]]
        return RoutedOutput(text, list(out), tried[-1], tuple(tried), detection, valid,
                            time.perf_counter() - start, routing_s, moved, len(ids))


def build_variants(params, tiers: Mapping[str, str] | None = None) -> dict[str, Variant]:
    """Precision variants of one model's parameters.

    Args:
      params: the float parameter pytree.
      tiers: tier -> weight format of the projection kernels: "bf16", or an effjax format
        name (weight-only, round to nearest from the float kernels). Every other weight
        (embeddings, norms) is bfloat16 in every tier, and all compute in bfloat16.
        Default: 4bit MXFP4, 8bit MXFP8 E4M3, 16bit bfloat16.

    Returns:
      tier -> `Variant`.
    """
    from effjax.quant import quantize_params, recipe

    tiers = tiers or {"4bit": "mxfp4", "8bit": "mxfp8_e4m3", "16bit": "bf16"}

    def bf16(a):
        return a if isinstance(a, QArray) else a.astype(jnp.bfloat16)

    out = {}
    for tier, fmt in tiers.items():
        quantized = params if fmt == "bf16" else quantize_params(params, recipe(fmt))
        out[tier] = Variant(jax.tree.map(bf16, quantized, is_leaf=lambda x: isinstance(
            x, QArray)), dtype=jnp.bfloat16)
    return out


@dataclasses.dataclass(frozen=True)
class Sensitivity:
    """Quality of each task at each tier and the cheapest tier within tolerance.

    Attributes:
      quality: task -> tier -> mean quality (higher is better).
      tiers: task -> the cheapest tier whose paired quality drop against the most precise
        tier, plus `z` standard errors, is within `tolerance` (the policy map).
      valid: task -> tier -> fraction of results the task's validator accepted (tasks with
        a validator only).
      tolerance: the allowed quality drop.
      z: standard errors of the drop added before comparing with `tolerance`.
    """

    quality: Mapping[str, Mapping[str, float]]
    tiers: Mapping[str, str]
    valid: Mapping[str, Mapping[str, float]]
    tolerance: float
    z: float

    @property
    def no_escalation(self) -> frozenset[str]:
        """Tasks where no tier above the chosen one passes validation more often."""
        out = set()
        for task, rate in self.valid.items():
            order = list(rate)
            above = order[order.index(self.tiers[task]) + 1:]
            if all(rate[t] <= rate[self.tiers[task]] for t in above):
                out.add(task)
        return frozenset(out)

    def escalates(self, task: str) -> bool:
        """Whether a failed result of `task` is retried at a more precise tier: only a task
        with a validator (a task without one never fails) outside `no_escalation`."""
        return task in self.valid and task not in self.no_escalation

    def policy(self, **options) -> Policy:
        """A `Policy` with this task -> tier map (and its `no_escalation`)."""
        return Policy(tiers=dict(self.tiers), no_escalation=self.no_escalation, **options)


def cheapest_tier(scores: Mapping[str, Sequence[float]], *, tolerance: float,
                  z: float = 1.0) -> str:
    """The first tier (cheap to precise) whose paired quality drop against the last tier
    is within tolerance after adding z standard errors.

    Args:
      scores: tier -> per-request qualities (same requests, same order, for every tier),
        tiers ordered from cheapest to most precise.
      tolerance: the allowed mean drop.
      z: standard errors of the mean drop added to it (0: compare the means alone).

    Returns:
      The tier name.
    """
    order = list(scores)
    top = np.asarray(scores[order[-1]], np.float64)
    for tier in order:
        got = np.asarray(scores[tier], np.float64)
        if got.shape != top.shape:
            raise ValueError(f"expected {top.size} scores for tier {tier!r} (one per request), "
                             f"got {got.size}")
        drop = top - got
        se = drop.std(ddof=1) / np.sqrt(drop.size) if drop.size > 1 else 0.0
        if drop.mean() + z * se <= tolerance:
            return tier
    return order[-1]


def profile_sensitivity(router: PrecisionRouter,
                        tasks: Mapping[str, Sequence[tuple[str, Callable[[str], float]]]], *,
                        tolerance: float = 0.01, z: float = 1.0, max_new_tokens: int = 32,
                        stop: Sequence[str] = ()) -> Sensitivity:
    """Runs every task's requests at every tier and picks each task's cheapest safe tier.

    Args:
      router: the router whose variants are profiled (its policy's order: cheap to precise;
        its validators give the validity rates).
      tasks: task -> [(prompt, score(text) -> quality)].
      tolerance: the quality drop allowed against the most precise tier.
      z: standard errors of the paired drop added before the comparison (`cheapest_tier`).
      max_new_tokens: tokens generated per request.
      stop: stop strings for the generations.

    Returns:
      A `Sensitivity` (`.policy()` gives the routing policy).
    """
    if not tasks or any(not reqs for reqs in tasks.values()):
        raise ValueError("expected at least one request for every task")
    if tolerance < 0:
        raise ValueError(f"expected tolerance >= 0, got {tolerance}")
    if z < 0:
        raise ValueError(f"expected z >= 0, got {z}")
    order = router.policy.order
    quality, valid, tiers = {}, {}, {}
    for task, reqs in tasks.items():
        texts = {tier: [router.generate(prompt, max_new_tokens=max_new_tokens, task=task,
                                        tier=tier, stop=stop).text for prompt, _ in reqs]
                 for tier in order}
        scores = {tier: [score(t) for (_, score), t in zip(reqs, texts[tier], strict=True)]
                  for tier in order}
        quality[task] = {tier: float(np.mean(s)) for tier, s in scores.items()}
        tiers[task] = cheapest_tier(scores, tolerance=tolerance, z=z)
        check = router.validators.get(task)
        if check is not None:
            valid[task] = {tier: float(np.mean([check(t) for t in texts[tier]]))
                           for tier in order}
    return Sensitivity(quality, tiers, valid, tolerance, z)

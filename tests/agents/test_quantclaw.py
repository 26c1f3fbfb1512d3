"""QuantClaw: detectors, policy, validators, cost model and the router on a real decoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effjax.agents import (
    DEFAULT_PROTOTYPES,
    TIERS,
    Detection,
    EmbeddingDetector,
    Policy,
    PrecisionRouter,
    RuleDetector,
    Sensitivity,
    TaskDetector,
    Variant,
    build_variants,
    cheapest_tier,
    has_number,
    parse_tool_call,
    profile_sensitivity,
    weight_bytes,
)
from effjax.decoding import generate
from effjax.formats import QArray


@pytest.mark.parametrize("text,task", [
    ("What is 37 + 48?", "arithmetic"),
    ("Please summarize the following article in two lines", "summarization"),
    ("Call the weather tool for Paris", "tool_call"),
    ("Who was the author of Dune?", "lookup"),
    ("Continue the story: the ship drifted...", "continuation"),
])
def test_rule_detector(text, task):
    d = RuleDetector().detect(text)
    assert d.task == task and d.source == "rule" and 0 < d.confidence <= 1


def test_rule_detector_unsure_and_bad_rules():
    rd = RuleDetector()
    assert rd.detect("hello there") is None  # nothing matches
    assert rd.detect("summarize and continue") is None  # a tie: no margin
    assert rd.scores("summarize and continue")["summarization"] == 2.0
    with pytest.raises(ValueError, match="at least one task"):
        RuleDetector({})


def test_embedding_detector(bow):
    ed = EmbeddingDetector(bow, DEFAULT_PROTOTYPES, keywords={"lookup": ["capital"]})
    d = ed.detect("What is the capital of Peru?")
    assert d.task == "lookup" and d.source == "embedding" and 0 <= d.confidence <= 1
    scores = ed.scores("What is the capital of Peru?")
    plain = EmbeddingDetector(bow, DEFAULT_PROTOTYPES).scores("What is the capital of Peru?")
    assert scores["lookup"] == pytest.approx(plain["lookup"] + 0.05)
    assert ed.detect("Set a timer for ten minutes.").task == "tool_call"  # a prototype itself
    with pytest.raises(ValueError, match="prototype"):
        EmbeddingDetector(bow, {"x": []})


def test_task_detector_order_and_cache(bow):
    td = TaskDetector(RuleDetector(), EmbeddingDetector(bow), cache_size=2)
    assert td.detect("What is 2 + 2?").source == "rule"
    assert td.detect("what is 2   + 2?").source == "cache"  # normalized text
    assert td.detect("Book a table for two at 7pm.").source == "embedding"
    td.detect("third text")
    assert td.detect("What is 2 + 2?").source == "rule"  # evicted (cache of 2)
    assert TaskDetector().detect("anything").source == "default"


def test_policy():
    p = Policy()
    assert p.choose(Detection("continuation", 0.9, "rule")) == "4bit"
    assert p.choose(Detection("continuation", 0.1, "rule")) == "8bit"  # unsure: one up
    assert p.choose(Detection("arithmetic", 0.0, "rule")) == "16bit"  # already at the top
    assert p.choose(Detection("unknown task", 1.0, "rule")) == "16bit"
    assert p.escalate("4bit") == "8bit" and p.escalate("16bit") is None
    with pytest.raises(ValueError, match="tier of 'lookup'"):
        Policy(tiers={"lookup": "2bit"})
    q = Policy(no_escalation={"tool_call"})
    assert q.on_invalid("tool_call", "4bit") is None and q.on_invalid("lookup", "4bit") == "8bit"
    assert q.on_invalid("lookup", "16bit") is None
    with pytest.raises(ValueError, match="no_escalation"):
        Policy(no_escalation="tool_call")


def test_policy_attempts_escalate_until_a_pass_the_top_or_the_limit():
    q = Policy(no_escalation={"tool_call"})
    ran = []

    def passes_at(ok):
        def passes(t):
            ran.append(t)
            return t in ok
        return passes

    assert q.attempts("lookup", "4bit", passes_at({"8bit"}), 2) == ["4bit", "8bit"]
    assert ran == ["4bit", "8bit"]  # stops at the first pass
    assert q.attempts("lookup", "4bit", passes_at(set()), 5) == ["4bit", "8bit", "16bit"]
    assert q.attempts("lookup", "4bit", passes_at(set()), 1) == ["4bit", "8bit"]
    assert q.attempts("lookup", "4bit", passes_at(set()), 0) == ["4bit"]
    assert q.attempts("tool_call", "4bit", passes_at(set()), 2) == ["4bit"]  # no escalation


def test_cheapest_tier():
    same = [1.0, 0.0, 1.0, 1.0]
    # 8bit loses one of four requests: mean drop 0.25, standard error 0.25
    scores = {"4bit": [0.0, 0.0, 0.0, 0.0], "8bit": [1.0, 0.0, 1.0, 0.0], "16bit": same}
    assert cheapest_tier(scores, tolerance=0.3, z=0.0) == "8bit"
    assert cheapest_tier(scores, tolerance=0.3, z=1.0) == "16bit"  # 0.25 + 0.25 > 0.3
    assert cheapest_tier({"4bit": same, "16bit": same}, tolerance=0.0) == "4bit"
    # a cheap tier better on average but noisy: passes at z = 1, not at z = 2
    noisy = {"4bit": [1.0, 1.0, 0.0, 1.0, 1.0, 1.0], "16bit": [0.0, 0.0, 1.0, 1.0, 0.0, 1.0]}
    assert cheapest_tier(noisy, tolerance=0.01, z=1.0) == "4bit"  # drop -1/3, se 1/3
    assert cheapest_tier(noisy, tolerance=0.01, z=2.0) == "16bit"
    with pytest.raises(ValueError, match="expected 4 scores for tier '4bit'"):
        cheapest_tier({"4bit": [1.0], "16bit": same}, tolerance=0.0)


def test_validators():
    call = parse_tool_call('Sure! {"name": "weather", "arguments": {"city": "Paris"}} done')
    assert call == {"name": "weather", "arguments": {"city": "Paris"}}
    assert parse_tool_call('{"name": "weather"}') is None  # no arguments
    assert parse_tool_call('{"name": "w", "arguments": {') is None  # unterminated
    assert parse_tool_call('{"a": {"b": 1}} {"name": "x", "arguments": {}}')["name"] == "x"
    assert has_number("it is 42") and not has_number("forty-two")


def test_weight_bytes_and_variants(tiny_router_parts):
    config, params, _, variants = tiny_router_parts
    floats = sum(x.size * 4 for x in jax.tree.leaves(params))
    assert weight_bytes(params) == floats
    b4, b8, b16 = (variants[t].bytes for t in ("4bit", "8bit", "16bit"))
    assert b16 == floats // 2 and b4 < b8 < b16
    kernel = variants["4bit"].params["layers"][0]["mlp"]["up_proj"]["kernel"]
    assert isinstance(kernel, QArray) and kernel.fmt.name == "mxfp4"
    assert variants["16bit"].dtype == jnp.bfloat16
    assert set(build_variants(params, {"8bit": "int8"})) == {"8bit"}


def test_router_generates_what_the_variant_generates(tiny_router_parts, tiny_router):
    config, _, tokenizer, variants = tiny_router_parts
    prompt = "Continue the story: once upon a time"
    out = tiny_router.generate(prompt, max_new_tokens=4)
    assert out.detection.task == "continuation" and out.tier == "4bit"
    ids = tokenizer(prompt)["input_ids"]
    v = variants["4bit"]
    assert out.tokens == generate(v.params, [ids], max_new_tokens=4, dtype=v.dtype,
                                  recipe=v.recipe, config=config)[0]
    assert out.bytes_moved == v.bytes * 4 and out.prompt_tokens == len(ids)
    assert out.tiers_tried == ("4bit",) and out.valid and 0 <= out.routing_s < out.latency_s
    forced = tiny_router.generate(prompt, max_new_tokens=4, tier="16bit")
    assert forced.tier == "16bit"


def test_router_escalates_on_failed_validation(tiny_router_parts):
    config, _, tokenizer, variants = tiny_router_parts
    router = PrecisionRouter(variants, config, tokenizer, max_escalations=2,
                             validators={"continuation": lambda text: False})
    out = router.generate("Continue: the", max_new_tokens=4)
    assert out.tiers_tried == ("4bit", "8bit", "16bit") and out.tier == "16bit"
    assert not out.valid
    assert out.bytes_moved == 4 * sum(variants[t].bytes for t in out.tiers_tried)
    once = PrecisionRouter(variants, config, tokenizer, max_escalations=1,
                           validators={"continuation": lambda text: False})
    assert once.generate("Continue: the", max_new_tokens=4).tiers_tried == ("4bit", "8bit")


def test_router_bad_input(tiny_router_parts, tiny_router):
    config, _, tokenizer, variants = tiny_router_parts
    with pytest.raises(ValueError, match="prompt"):
        tiny_router.generate("")
    with pytest.raises(ValueError, match="max_new_tokens"):
        tiny_router.generate("hi", max_new_tokens=0)
    with pytest.raises(ValueError, match="tier in"):
        tiny_router.generate("hi", tier="2bit")
    with pytest.raises(ValueError, match="missing \\['8bit'\\]"):
        PrecisionRouter({"4bit": variants["4bit"], "16bit": variants["16bit"]}, config,
                        tokenizer, policy=Policy())
    assert isinstance(Variant(np.zeros(3, np.float32)).bytes, int)


def test_profile_sensitivity(tiny_router):
    # quality = whether the text equals what the 16-bit tier writes for that prompt
    prompts = ["Continue: the cat", "Continue: a dog"]
    want = {p: tiny_router.generate(p, max_new_tokens=4, tier="16bit").text for p in prompts}
    tasks = {"continuation": [(p, lambda text, p=p: float(text == want[p])) for p in prompts],
             "lookup": [(prompts[0], lambda text: 1.0)]}  # any tier is perfect
    prof = profile_sensitivity(tiny_router, tasks, tolerance=0.0, max_new_tokens=4)
    assert prof.quality["continuation"]["16bit"] == 1.0
    assert prof.tiers["lookup"] == "4bit"
    q = prof.quality["continuation"]
    expected = next(t for t in ("4bit", "8bit", "16bit") if q[t] >= 1.0)
    assert prof.tiers["continuation"] == expected
    assert prof.policy().tiers == prof.tiers
    assert prof.valid == {} and prof.no_escalation == frozenset()  # no validator for these
    with pytest.raises(ValueError, match="at least one request"):
        profile_sensitivity(tiny_router, {"lookup": []})
    with pytest.raises(ValueError, match="z >= 0"):
        profile_sensitivity(tiny_router, tasks, z=-1.0)


def test_profile_validity_and_no_escalation(tiny_router_parts):
    config, _, tokenizer, variants = tiny_router_parts
    # the tiny random model writes no JSON: no tier is ever valid, so escalating is useless
    router = PrecisionRouter(variants, config, tokenizer,
                             validators={"tool_call": lambda text: "{" in text,
                                         "continuation": lambda text: True})
    tasks = {"tool_call": [("Call the weather tool for Oslo", lambda text: 0.0)],
             "continuation": [("Continue: the", lambda text: 1.0)]}
    prof = profile_sensitivity(router, tasks, max_new_tokens=4)
    texts = {t: router.generate("Call the weather tool for Oslo", max_new_tokens=4, tier=t,
                                task="tool_call").text for t in TIERS}
    assert prof.valid["tool_call"] == {t: float("{" in texts[t]) for t in TIERS}
    assert prof.valid["continuation"] == {t: 1.0 for t in TIERS}
    assert prof.tiers == {"tool_call": "4bit", "continuation": "4bit"}
    expect = {"continuation"} | ({"tool_call"} if not any("{" in x for x in texts.values())
                                 else set())
    assert prof.no_escalation == expect
    policy = prof.policy()
    assert policy.no_escalation == expect and policy.on_invalid("continuation", "4bit") is None
    sens = Sensitivity({}, {"a": "4bit"}, {"a": {"4bit": 0.2, "8bit": 0.9, "16bit": 0.9}},
                       0.0, 1.0)
    assert sens.no_escalation == frozenset()  # 8bit is more often valid: escalate
    assert sens.escalates("a") and not sens.escalates("b")  # b has no validator
    assert not prof.escalates("continuation")

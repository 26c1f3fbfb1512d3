"""Speculative decoding: losslessness of exact sampling (a chi-square test), greedy identity,
the rules on hand-made logits, cache rollback across a batch, recompilation, bad input."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import effjax
from effjax.decoding import (
    AutoJudge,
    ExactSampling,
    GreedyMatch,
    KLJudge,
    SamplingConfig,
    TypicalAcceptance,
    Verdict,
    early_exit_draft,
    generate,
    kl_divergence,
    mine_mismatches,
    speculative_generate,
    train_judge,
)
from effjax.decoding.speculative import _speculate
from effjax.models import forward
from effjax.quant import quantize_params, recipe

ALPHA = 1e-3  # significance level of the distribution tests


def _model(vocab, seed, layers=2):
    config = effjax.models.LMConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                                    num_layers=layers, num_heads=2, num_kv_heads=1, head_dim=16)
    return config, effjax.models.init_params(config, jax.random.PRNGKey(seed))


@pytest.fixture(scope="module")
def pair():
    """The target and a draft that agrees with it often but not always (a noisy copy)."""
    tc, tp = _model(61, 0)
    leaves, tree = jax.tree.flatten(tp)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    dp = jax.tree.unflatten(tree, [x + 0.5 * jnp.std(x) * jax.random.normal(key, x.shape)
                                   for x, key in zip(leaves, keys, strict=True)])
    return tc, tp, tc, dp


def _joint(params, config, prompt, length):
    """Exact probabilities of every continuation of `length` tokens (float64 products)."""
    vocab = config.vocab_size
    seqs = np.array(list(itertools.product(range(vocab), repeat=length)))
    tokens = np.concatenate([np.tile(prompt, (len(seqs), 1)), seqs], axis=1)
    logits, _ = forward(params, jnp.asarray(tokens, jnp.int32), config=config)
    logp = np.asarray(jax.nn.log_softmax(logits, axis=-1), np.float64)
    p = len(prompt)
    steps = [logp[np.arange(len(seqs)), p - 1 + i, seqs[:, i]] for i in range(length)]
    return seqs, np.exp(np.sum(steps, axis=0))


def _chi2_pvalue(samples, seqs, probs):
    index = {tuple(s): i for i, s in enumerate(seqs.tolist())}
    counts = np.bincount([index[tuple(s)] for s in samples], minlength=len(seqs))
    expected = probs / probs.sum() * len(samples)
    big = expected >= 5  # pool the rare cells into one
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    chi2 = np.sum((obs - exp) ** 2 / exp)  # Pearson's statistic, len(obs) - 1 degrees
    return float(jax.scipy.special.gammaincc((len(obs) - 1) / 2, chi2 / 2))  # its p-value


@dataclasses.dataclass(frozen=True)
class _AcceptAll:
    """A wrong rule (keeps every draft token): the control the test must reject."""

    draft_sampling: SamplingConfig = SamplingConfig(temperature=1.0)

    def __call__(self, target_logits, draft_logits, draft_tokens, key):
        bonus = jax.random.categorical(key, target_logits, axis=-1).astype(jnp.int32)
        return Verdict(jnp.ones(draft_tokens.shape, bool), bonus)


@dataclasses.dataclass(frozen=True)
class _TargetCorrection(ExactSampling):
    """A subtly wrong rule: after a rejection, draws from p instead of max(p - q, 0)."""

    def __call__(self, target_logits, draft_logits, draft_tokens, key):
        verdict = super().__call__(target_logits, draft_logits, draft_tokens, key)
        fix = jax.random.categorical(jax.random.fold_in(key, 1), target_logits / self.temperature,
                                     axis=-1).astype(jnp.int32)
        return Verdict(verdict.accepted, fix)


def test_exact_sampling_reproduces_the_target_distribution():
    (tc, tp), (dc, dp) = _model(6, 0), _model(6, 1, layers=1)
    prompt, length, n = [1, 2], 3, 8000
    seqs, probs = _joint(tp, tc, prompt, length)
    _, draft_probs = _joint(dp, dc, prompt, length)
    assert 0.5 * np.abs(probs - draft_probs).sum() > 0.1  # the draft is really different

    def sample(rule):
        out = speculative_generate(tp, tc, dp, dc, [prompt] * n, k=2, rule=rule,
                                   max_new_tokens=length, key=jax.random.PRNGKey(7), eos_id=-1)
        assert all(len(t) == length for t in out.tokens)
        return out

    exact = sample(ExactSampling(1.0))
    assert 0 < exact.accepted.sum() < 2 * exact.target_calls.sum()  # some kept, some rejected
    assert _chi2_pvalue(exact.tokens, seqs, probs) > ALPHA
    # the test has power: it rejects a rule that keeps everything and one that is subtly wrong
    assert _chi2_pvalue(sample(_AcceptAll()).tokens, seqs, probs) < ALPHA
    assert _chi2_pvalue(sample(_TargetCorrection(1.0)).tokens, seqs, probs) < ALPHA


@pytest.mark.parametrize("k", [1, 3])
def test_greedy_match_equals_target_greedy_decoding(pair, k):
    tc, tp, dc, dp = pair
    prompts = [[5, 9, 14], [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3], [42]]
    ref = generate(tp, prompts, max_new_tokens=20, eos_id=-1, config=tc)
    out = speculative_generate(tp, tc, dp, dc, prompts, k=k, rule=GreedyMatch(),
                               max_new_tokens=20, eos_id=-1)
    assert out.tokens == ref
    # rows kept different numbers of drafts: the per-row cache rollback was exercised
    assert len(set(out.accepted.tolist())) > 1 and (out.accepted < k * out.target_calls).all()


def test_self_draft_keeps_every_token_and_quantized_self_draft_is_exact(pair):
    tc, tp, _, _ = pair
    prompts = [[5, 9, 14], [7, 7]]
    ref = generate(tp, prompts, max_new_tokens=17, eos_id=-1, config=tc)
    same = speculative_generate(tp, tc, tp, tc, prompts, k=4, rule=GreedyMatch(),
                                max_new_tokens=17, eos_id=-1)
    assert same.tokens == ref
    np.testing.assert_array_equal(same.target_calls, [4, 4])  # 5 + 5 + 5 + 2 tokens
    assert same.tokens_per_call == pytest.approx(2 * 20 / 8)
    r = recipe("mxfp4")
    quant = speculative_generate(tp, tc, quantize_params(tp, r), tc, prompts, k=4,
                                 rule=GreedyMatch(), max_new_tokens=17, eos_id=-1, draft_recipe=r)
    assert quant.tokens == ref


def test_early_exit_draft_is_the_first_blocks(pair):
    tc, tp, _, _ = pair
    tokens = jnp.array([[3, 1, 4, 1, 5]])
    full, fc = early_exit_draft(tp, tc.num_layers, config=tc)
    np.testing.assert_array_equal(forward(full, tokens, config=fc)[0],
                                  forward(tp, tokens, config=tc)[0])
    dp, dc = early_exit_draft(tp, 1, config=tc)
    assert dc.num_layers == 1 and list(dp["layers"]) == [0] and dp["layers"][0] is tp["layers"][0]
    one = forward(dp, tokens, config=dc)[0]
    assert not np.allclose(one, forward(tp, tokens, config=tc)[0])
    out = speculative_generate(tp, tc, dp, dc, [[5, 9, 14]], k=3, rule=GreedyMatch(),
                               max_new_tokens=10, eos_id=-1)
    assert out.tokens == generate(tp, [[5, 9, 14]], max_new_tokens=10, eos_id=-1, config=tc)
    with pytest.raises(ValueError, match=r"num_layers must be an integer in \[1, 2\], got 3"):
        early_exit_draft(tp, 3, config=tc)


def test_eos_stops_each_row(pair):
    tc, tp, dc, dp = pair
    prompts = [[5, 9, 14], [3, 1, 4]]
    free = generate(tp, prompts, max_new_tokens=12, eos_id=-1, config=tc)
    eos = free[0][4]
    out = speculative_generate(tp, tc, dp, dc, prompts, k=3, rule=GreedyMatch(),
                               max_new_tokens=12, eos_id=eos)
    assert out.tokens == generate(tp, prompts, max_new_tokens=12, eos_id=eos, config=tc)
    assert out.tokens[0][-1] == eos and len(out.tokens[0]) == free[0].index(eos) + 1


def test_the_jitted_loop_does_not_recompile(pair):
    tc, tp, dc, dp = pair
    kwargs = dict(k=2, rule=KLJudge(0.5), max_new_tokens=6, eos_id=-1)
    speculative_generate(tp, tc, dp, dc, [[1, 2, 3]], **kwargs)
    size = _speculate._cache_size()
    speculative_generate(tp, tc, dp, dc, [[4, 5, 6, 7]], key=jax.random.PRNGKey(3), **kwargs)
    assert _speculate._cache_size() == size


def _logits(probs):
    return jnp.log(jnp.asarray(probs, jnp.float32))


def test_greedy_and_kl_judge_on_hand_made_logits():
    # position 0: target sure of token 0; position 1: target unsure between 0 and 1
    target = _logits([[0.97, 0.01, 0.01, 0.01], [0.45, 0.44, 0.06, 0.05], [0.1, 0.2, 0.3, 0.4]])
    close = _logits([[0.01, 0.97, 0.01, 0.01], [0.44, 0.45, 0.06, 0.05]])  # argmax differs
    tokens = jnp.array([[1, 1]])
    t, d = target[None], close[None]
    key = jax.random.PRNGKey(0)
    greedy = GreedyMatch()(t, d, tokens, key)
    np.testing.assert_array_equal(greedy.accepted, [[False, False]])
    np.testing.assert_array_equal(greedy.correction, [[0, 0, 3]])
    kl = np.asarray(kl_divergence(target[:2], close))
    judged = KLJudge(tau=float(kl[1]) * 2)(t, d, tokens, key)
    np.testing.assert_array_equal(judged.accepted, [[False, True]])  # only the close one
    np.testing.assert_array_equal(KLJudge(0.0)(t, d, tokens, key).accepted, [[False, False]])
    guarded = KLJudge(tau=1e9, guard=0.9)(t, d, tokens, key)  # target sure at position 0
    np.testing.assert_array_equal(guarded.accepted, [[False, True]])
    reverse = KLJudge(tau=float(kl[1]) * 2, direction="reverse")(t, d, tokens, key)
    np.testing.assert_array_equal(reverse.accepted, [[False, True]])


def test_kl_divergence_matches_float64():
    rng = np.random.RandomState(0)
    a, b = rng.randn(5, 11) * 3, rng.randn(5, 11) * 3
    p = np.exp(a) / np.exp(a).sum(-1, keepdims=True)
    q = np.exp(b) / np.exp(b).sum(-1, keepdims=True)
    ref = np.sum(p * np.log(p / q), -1)
    np.testing.assert_allclose(kl_divergence(jnp.asarray(a), jnp.asarray(b)), ref, rtol=1e-4)
    np.testing.assert_allclose(kl_divergence(jnp.asarray(a), jnp.asarray(a)), 0, atol=1e-6)


def test_typical_acceptance_threshold():
    flat = _logits([0.25, 0.25, 0.25, 0.25])  # entropy log 4: threshold min(0.3, 0.09 / 4)
    peaked = _logits([0.9, 0.05, 0.03, 0.02])
    t = jnp.stack([flat, peaked, flat])[None]
    tokens = jnp.array([[3, 1]])
    got = TypicalAcceptance()(t, t[:, :2], tokens, jax.random.PRNGKey(0))
    # flat: p = 0.25 > 0.0225 stands; peaked: p = 0.05 < min(0.3, 0.09 * e^-H) = 0.061 fails
    h = -np.sum(np.array([0.9, 0.05, 0.03, 0.02]) * np.log([0.9, 0.05, 0.03, 0.02]))
    assert 0.05 < 0.09 * np.exp(-h) < 0.3
    np.testing.assert_array_equal(got.accepted, [[True, False]])
    np.testing.assert_array_equal(got.correction[0, 1:], [0, 0])


def test_exact_sampling_accepts_everything_when_draft_equals_target():
    logits = jax.random.normal(jax.random.PRNGKey(0), (4, 4, 9))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 3), 0, 9)
    got = ExactSampling(0.7)(logits, logits[:, :3], tokens, jax.random.PRNGKey(2))
    assert bool(got.accepted.all())


def test_autojudge_bias_sweeps_from_greedy_to_keep_everything(pair):
    tc, tp, dc, dp = pair
    prompts = [[5, 9, 14], [3, 1, 4, 1, 5]]
    zeros = np.zeros(2 * tc.hidden_size, np.float32)
    strict = speculative_generate(tp, tc, dp, dc, prompts, k=3, rule=AutoJudge(zeros, 30.0),
                                  max_new_tokens=12, eos_id=-1)
    assert strict.tokens == generate(tp, prompts, max_new_tokens=12, eos_id=-1, config=tc)
    loose = speculative_generate(tp, tc, dp, dc, prompts, k=3, rule=AutoJudge(zeros, -30.0),
                                 max_new_tokens=12, eos_id=-1)
    np.testing.assert_array_equal(loose.accepted, 3 * loose.target_calls)  # every draft stands
    with pytest.raises(ValueError, match="the judge has 5 weights but the models give 64"):
        speculative_generate(tp, tc, dp, dc, prompts, k=3, rule=AutoJudge(np.zeros(5), 0.0),
                             max_new_tokens=4)


def test_mined_labels_match_one_by_one_replays(pair):
    tc, tp, dc, dp = pair
    prompts, n = [[5, 9, 14], [8]], 8
    answer = lambda toks: toks[-1] % 2  # noqa: E731 (an "answer" that some changes keep)
    mined = mine_mismatches(tp, tc, dp, dc, prompts, answer, max_new_tokens=n, eos_id=-1,
                            batch_size=2)
    outs = generate(tp, prompts, max_new_tokens=n, eos_id=-1, config=tc)
    assert len(mined.important) > 2 and mined.features.shape == (len(mined.important), 64)
    for feat, imp, i, j in zip(*mined, strict=True):
        seq = jnp.asarray([prompts[i] + outs[i]])  # unpadded, one sequence
        at = len(prompts[i]) - 1 + j
        dl, _, found = forward(dp, seq, config=dc, capture=("hidden",))
        dh = found["hidden"]
        th = forward(tp, seq, config=tc, capture=("hidden",))[2]["hidden"]
        dtok = int(jnp.argmax(dl[0, at]))
        assert dtok != outs[i][j]
        np.testing.assert_allclose(feat, np.concatenate([th[0, at], dh[0, at]]), atol=1e-5)
        rest = generate(tp, [prompts[i] + outs[i][:j] + [dtok]], max_new_tokens=n - 1,
                        eos_id=-1, config=tc)[0][:n - j - 1]  # one length: one compilation
        assert imp == (answer(outs[i][:j] + [dtok] + rest) != answer(outs[i]))
    assert 0 < mined.important.sum() < len(mined.important)


def test_train_judge_separates_a_linear_rule():
    rng = np.random.RandomState(0)
    x = rng.randn(400, 6).astype(np.float32) * [1, 5, 1, 1, 1, 1] + 3
    y = x[:, 1] - 2 * x[:, 3] > 0
    w, b = train_judge(x, y, steps=800)
    assert np.mean((x @ w + b > 0) == y) > 0.95
    with pytest.raises(ValueError, match="both classes"):
        train_judge(x, np.zeros(400, bool))
    with pytest.raises(ValueError, match=r"features must be \(n, d\)"):
        train_judge(x[:, 0], y)


def test_bad_input(pair):
    tc, tp, dc, dp = pair
    with pytest.raises(ValueError, match=r"k must be an integer >= 1.*got 0"):
        speculative_generate(tp, tc, dp, dc, [[1]], k=0, rule=GreedyMatch(), max_new_tokens=4)
    oc, op = _model(60, 2)
    with pytest.raises(ValueError, match="target vocab_size=61, draft vocab_size=60"):
        speculative_generate(tp, tc, op, oc, [[1]], k=2, rule=GreedyMatch(), max_new_tokens=4)
    with pytest.raises(ValueError, match="tau must be >= 0, got -0.1"):
        KLJudge(-0.1)
    with pytest.raises(ValueError, match=r"guard must be in \(0, 1\], got 1.5"):
        KLJudge(0.1, guard=1.5)
    with pytest.raises(ValueError, match="direction must be"):
        KLJudge(0.1, direction="both")
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\], got 2"):
        AutoJudge(np.zeros(4), 0.0, threshold=2)
    with pytest.raises(ValueError, match="temperature must be > 0 for exact sampling"):
        ExactSampling(0.0)
    with pytest.raises(ValueError, match="rule must be an acceptance rule"):
        speculative_generate(tp, tc, dp, dc, [[1]], k=2, rule="greedy", max_new_tokens=4)
    with pytest.raises(ValueError, match="non-empty token lists"):
        speculative_generate(tp, tc, dp, dc, [[]], k=2, rule=GreedyMatch(), max_new_tokens=4)

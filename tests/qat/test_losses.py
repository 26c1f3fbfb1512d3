import jax
import numpy as np
import pytest

from effjax import qat


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    s = rng.standard_normal((2, 5, 11)).astype(np.float32) * 2
    t = rng.standard_normal((2, 5, 11)).astype(np.float32) * 2
    mask = rng.random((2, 5)) < 0.7
    mask[0, 0] = True
    return s, t, mask


def _mean(per_token, mask):
    return (per_token * mask).sum() / mask.sum()


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_divergences_match_float64(logits, temperature):
    s, t, mask = logits
    lq = _log_softmax(s.astype(np.float64) / temperature)
    lp = _log_softmax(t.astype(np.float64) / temperature)
    p, q = np.exp(lp), np.exp(lq)
    t2 = temperature**2
    fkl = _mean((p * (lp - lq)).sum(-1), mask) * t2
    rkl = _mean((q * (lq - lp)).sum(-1), mask) * t2
    m = 0.5 * (p + q)
    js = _mean((0.5 * p * np.log(p / m) + 0.5 * q * np.log(q / m)).sum(-1), mask) * t2
    np.testing.assert_allclose(qat.forward_kl(s, t, mask, temperature), fkl, rtol=1e-5)
    np.testing.assert_allclose(qat.reverse_kl(s, t, mask, temperature), rkl, rtol=1e-5)
    np.testing.assert_allclose(qat.jsd(s, t, mask, temperature), js, rtol=1e-5)
    assert fkl != pytest.approx(rkl)  # the two directions are different losses


def test_zero_at_equal_and_jsd_bounded(logits):
    s, t, mask = logits
    for fn in (qat.forward_kl, qat.reverse_kl, qat.jsd):
        assert abs(float(fn(s, s, mask))) < 1e-6
    far = np.zeros_like(t)
    far[..., 0], s2 = 60.0, np.zeros_like(t)
    s2[..., 1] = 60.0
    assert float(qat.jsd(s2, far, mask)) == pytest.approx(np.log(2), rel=1e-4)


def test_topk_kl(logits):
    s, t, mask = logits
    full = qat.topk_kl(s, qat.teacher_topk(t, 11), mask)
    np.testing.assert_allclose(full, qat.forward_kl(s, t, mask), rtol=1e-5)
    values, ids = qat.teacher_topk(t, 3)
    np.testing.assert_array_equal(ids, np.argsort(-t, -1)[..., :3])
    lp = _log_softmax(np.asarray(values, np.float64))
    lq = np.take_along_axis(_log_softmax(s.astype(np.float64)), np.asarray(ids), -1)
    np.testing.assert_allclose(qat.topk_kl(s, (values, ids), mask),
                               _mean((np.exp(lp) * (lp - lq)).sum(-1), mask), rtol=1e-5)
    with pytest.raises(ValueError, match="k must be in"):
        qat.teacher_topk(t, 12)


def test_cross_entropy_masks(logits):
    s, _, mask = logits
    targets = np.arange(10).reshape(2, 5) % 11
    nll = -np.take_along_axis(_log_softmax(s.astype(np.float64)), targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(qat.cross_entropy(s, targets, mask), _mean(nll, mask), rtol=1e-5)
    # masked-out positions get no gradient
    g = jax.grad(lambda x: qat.cross_entropy(x, targets, mask))(s)
    assert np.all(np.asarray(g)[~mask] == 0) and np.any(np.asarray(g)[mask] != 0)


def test_jsd_beta_checked(logits):
    s, t, mask = logits
    with pytest.raises(ValueError, match="beta"):
        qat.jsd(s, t, mask, beta=1.0)

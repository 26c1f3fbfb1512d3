import numpy as np
import pytest

from effjax.data import shapes_vqa as S


def _answer(scene, question):
    """An independent reading of the question against the scene's objects."""
    w = question.split()
    objs = scene.objects
    if w[:3] == ["what", "color", "is"]:
        (match,) = [o for o in objs if o[3] == w[4]]
        return match[2]
    if w[:3] == ["what", "shape", "is"]:
        (match,) = [o for o in objs if o[2] == w[4]]
        return match[3]
    if w[:2] == ["how", "many"]:
        return str(sum(w[2] in (o[2], o[3]) for o in objs))
    if w[:2] == ["is", "there"]:
        return "yes" if any((o[2], o[3]) == (w[3], w[4]) for o in objs) else "no"
    (a,) = [o for o in objs if (o[2], o[3]) == (w[2], w[3])]
    (b,) = [o for o in objs if (o[2], o[3]) == (w[7], w[8])]
    return "yes" if a[1] < b[1] else "no"


def test_examples_are_deterministic_correct_and_split_apart():
    kinds = set()
    for split, (lo, hi) in (("train", (3, 6)), ("test", (3, 6)), ("hard", (7, 10))):
        for i in range(60):
            ex = S.example(split, i)
            assert lo <= len(ex.scene.objects) <= hi
            assert ex.answer == _answer(ex.scene, ex.question), (split, i, ex.question)
            assert ex.kind in S.KINDS and ex.image.shape == (64, 64, 3)
            kinds.add(ex.kind)
    assert kinds == set(S.KINDS)
    a, b = S.example("train", 7), S.example("train", 7)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.question == b.question
    assert not np.array_equal(a.image, S.example("test", 7).image)
    assert not np.array_equal(a.image, S.example("train", 7, seed=1).image)


def test_render_draws_each_object_in_its_cell():
    ex = S.example("test", 3)
    img = ex.image * 255
    occupied = {(r, c) for r, c, _, _ in ex.scene.objects}
    for r, c, color, _ in ex.scene.objects:
        cell = img[r * S.CELL:(r + 1) * S.CELL, c * S.CELL:(c + 1) * S.CELL].reshape(-1, 3)
        hits = np.all(np.abs(cell - np.asarray(S.COLORS[color])) < 1, axis=1)
        assert hits.sum() >= 6, (r, c, color)
    empty = next((r, c) for r in range(8) for c in range(8) if (r, c) not in occupied)
    r, c = empty
    assert img[r * S.CELL:(r + 1) * S.CELL, c * S.CELL:(c + 1) * S.CELL].max() < 80


def test_batch_layout():
    exs = [S.example("train", i) for i in range(5)]
    b = S.batch(exs, with_answer=True)
    assert b["tokens"].shape == (5, S.PROMPT_LEN + 2) and b["images"].shape == (5, 64, 64, 3)
    np.testing.assert_array_equal(b["tokens"][:, 2:2 + S.IMAGE_TOKENS], S.IMAGE_ID)
    assert (b["tokens"][:, 2 + S.IMAGE_TOKENS] == S.VISION_END_ID).all()
    for i, ex in enumerate(exs):
        row = S.prompt_tokens(ex.question)
        assert b["last"][i] == len(row) - 1
        assert list(b["tokens"][i, :len(row) + 2]) == row + [S.VOCAB[ex.answer], S.EOS_ID]
        assert b["mask"][i].sum() == len(row) + 2 and b["answer"][i] == S.VOCAB[ex.answer]
    p = S.batch(exs)
    assert p["tokens"].shape == (5, S.PROMPT_LEN)
    assert len(S.WORDS) <= S.VOCAB_SIZE and S.WORDS[S.IMAGE_ID] == "<image>"


def test_bad_input():
    with pytest.raises(ValueError, match="split must be one of"):
        S.example("val", 0)
    with pytest.raises(ValueError, match="outside the vocabulary.*'dog'"):
        S.encode("what color is the dog ?")

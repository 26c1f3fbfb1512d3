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


def test_blind_answers_are_each_kinds_most_common():
    guess = S.blind_answers(300)
    assert set(guess) == set(S.KINDS)
    for kind, answer in guess.items():
        answers = [e.answer for e in (S.example("train", i) for i in range(300)) if e.kind == kind]
        assert answers.count(answer) == max(answers.count(a) for a in answers)


def test_bad_input():
    with pytest.raises(ValueError, match="split must be one of"):
        S.example("val", 0)
    with pytest.raises(ValueError, match="outside the vocabulary.*'dog'"):
        S.encode("what color is the dog ?")


def test_training_batch_answers_each_question_in_turn():
    b = S.training_batch("train", [4, 9], questions=3)
    assert b["tokens"].shape == (2, S.PROMPT_LEN + 11 * 3 - 9)
    np.testing.assert_array_equal(b["last"], b["answer_at"][:, 0])
    for row, index in enumerate([4, 9]):
        image, scene, qas = S.scene_questions("train", index, 0, 3)
        np.testing.assert_array_equal(b["images"][row], image)
        cells = {(r * S.GRID + c, S.WORDS[S.VOCAB[col]], shp) for r, c, col, shp in scene.objects}
        tagged = {(i, list(S.COLORS)[b["cell_color"][row, i] - 1],
                   S.SHAPES[b["cell_shape"][row, i] - 1])
                  for i in np.flatnonzero(b["cell_color"][row])}
        assert tagged == cells and (np.flatnonzero(b["cell_shape"][row])
                                    == np.flatnonzero(b["cell_color"][row])).all()
        ex = S.example("train", index)
        assert qas[0][1:] == (ex.question, ex.answer)
        np.testing.assert_array_equal(image, ex.image)
        toks = b["tokens"][row]
        start = 3 + S.IMAGE_TOKENS
        for j, (_, question, answer) in enumerate(qas):
            at = b["answer_at"][row, j]
            words = [S.WORDS[t] for t in toks[start:at + 1]]
            assert " ".join(words) == question and S.WORDS[toks[at + 1]] == answer
            assert _answer(scene, question) == answer
            start = at + 2
        assert toks[start] == S.EOS_ID and b["mask"][row].sum() == start + 1
    with pytest.raises(ValueError, match="count must be >= 1"):
        S.scene_questions("train", 0, count=0)

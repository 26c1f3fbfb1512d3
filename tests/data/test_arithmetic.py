import numpy as np
import pytest

from effjax.data import arithmetic as ar


def _evaluate(prompt):
    chain = prompt[2:prompt.index("\n")]
    import re

    start, *ops = re.findall(r"[+\-*]?\d+", chain)
    value = int(start)
    for op in ops:
        b = int(op[1:])
        value = value + b if op[0] == "+" else value - b if op[0] == "-" else value * b
    return value


def test_problems_are_right_and_split():
    items = ar.problems(0, 200, split="test", levels=(1, 2, 3, 4))
    assert len({p.prompt for p in items}) == 200
    for p in items:
        assert ar.split_of(p.prompt) == "test"
        assert p.answer == _evaluate(p.prompt) and 0 <= p.answer <= 999
        assert p.solution.endswith(f"#{p.answer}\n") and p.solution.count(",") == p.level - 1
        for step in p.solution.split("#")[0].split(","):
            lhs, rhs = step.split("=")
            assert eval(lhs) == int(rhs)  # noqa: S307 (digits and one operator)
    train = ar.problems(0, 200, split="train")
    assert not {p.prompt for p in train} & {p.prompt for p in items}
    with pytest.raises(ValueError, match="split"):
        ar.problems(0, 1, split="valid")


def test_batches_are_deterministic_and_masked():
    a = ar.training_batch(3, 7, 16, 64)
    b = ar.training_batch(3, 7, 16, 64)
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
    assert not np.array_equal(a["tokens"], ar.training_batch(3, 8, 16, 64)["tokens"])
    tok = ar.CharTokenizer()
    for row, mask in zip(a["tokens"], a["loss_mask"], strict=True):
        text = tok.decode(row)
        assert ar.split_of(text[:text.index("A:") + 2]) == "train"
        assert tok.decode(row[mask]) == text[text.index("A:") + 2:]
    with pytest.raises(ValueError, match="seq_len"):
        ar.encode_examples(ar.problems(0, 4, levels=(4,)), 20)


def test_parse_and_exact_match():
    items = ar.problems(1, 3)
    outs = [items[0].solution, "1+1=2#" + str(items[1].answer + 1), "no answer"]
    assert ar.parse_answer("3+4=7#7\n") == 7 and ar.parse_answer("x") is None
    assert ar.exact_match(outs, items) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="outputs"):
        ar.exact_match(outs[:2], items)


def test_tokenizer_and_windows():
    tok = ar.CharTokenizer()
    assert tok.decode(tok.encode("Q:1+2\nA:")) == "Q:1+2\nA:"
    assert tok.encode("é") == [ord("?")]
    text = ar.problem_text(0, 5000)
    w = ar.text_windows(text, num_windows=4, window=100)
    assert w.shape == (4, 100) and tok.decode(w[0]) == text[:100]
    with pytest.raises(ValueError, match="fewer than one window"):
        ar.text_windows("short", num_windows=1, window=100)

import numpy as np
import pytest

from effjax.data import arithmetic as ar
from effjax.data import gsm8k


@pytest.fixture(scope="module")
def train():
    return gsm8k.load_gsm8k("train")


def test_load(train):
    assert len(train) > 7000
    p = train[0]  # Natalia's clips: 48 + 24
    assert p.answer == 72 and p.prompt.startswith("Question: Natalia") and p.prompt.endswith(
        "\nAnswer:")
    assert "<<" not in p.solution and p.solution.endswith("#### 72\n") and p.level == 2
    assert ar.parse_answer(p.solution) == 72
    assert len(gsm8k.load_gsm8k("test", limit=5)) == 5
    with pytest.raises(ValueError, match="split"):
        gsm8k.load_gsm8k("dev")
    with pytest.raises(ValueError, match=r"gsm8k split 'test' not found.*splits there: none"):
        gsm8k.load_gsm8k("test", root="/nonexistent")
    assert len(gsm8k.load_gsm8k("test")) == 1319  # every shipped answer is an integer


def test_encode_and_batches(train):
    tok = ar.CharTokenizer()
    rows = gsm8k.encode_problems(train[:3], tok, 512)
    for i, p in enumerate(train[:3]):
        n = len(p.prompt) + len(p.solution)
        assert tok.decode(rows["tokens"][i, :n]) == p.prompt + p.solution
        assert tok.decode(rows["tokens"][i][rows["loss_mask"][i]]) == p.solution
    width = len(train[0].prompt) + 10
    cut = gsm8k.encode_problems(train[:1], tok, width)
    assert cut["loss_mask"][0].sum() == 10
    a = gsm8k.batch_at(train, tok, 0, 5, 4, 256)
    np.testing.assert_array_equal(a["tokens"], gsm8k.batch_at(train, tok, 0, 5, 4, 256)["tokens"])
    assert not np.array_equal(a["tokens"], gsm8k.batch_at(train, tok, 0, 6, 4, 256)["tokens"])


def test_hf_tokenizer(smollm2):
    tok = gsm8k.HFTokenizer(smollm2.tokenizer)
    ids = tok.encode("Question: 2+2?")
    assert ids and tok.decode(ids) == "Question: 2+2?"
    assert tok.encode_prompt("Question: 2+2?") == ids  # SmolLM2 adds no prefix token
    assert ar.parse_answer("so 1,000 + 5 = 1,005\n#### 1,005") == 1005


def test_prompts_start_with_the_prefix_token():
    """A tokenizer that puts <bos> before text (Gemma's): each row's prompt starts with it,
    the solution follows without one, and the loss mask still covers the solution."""
    from tests.eval.test_perplexity import ByteTokenizer

    tok = gsm8k.HFTokenizer(ByteTokenizer(128, bos=2))
    assert tok.encode_prompt("ab") == [2, 97, 98] and tok.encode("ab") == [97, 98]
    p = ar.Problem(prompt="Q:1+1\nA:", solution=" 2\n#### 2\n", answer=2, level=1)
    rows = gsm8k.encode_problems([p], tok, 32)
    n = 1 + len(p.prompt) + len(p.solution)
    assert rows["tokens"][0, 0] == 2 and rows["tokens"][0, 1] == ord("Q")
    assert rows["loss_mask"][0].sum() == len(p.solution) and rows["loss_mask"][0, n - 1]

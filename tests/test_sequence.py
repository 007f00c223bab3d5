import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xprompt.errors import VocabularyError, XPromptError
from xprompt.sequence import (
    Seg,
    SequenceBuilder,
    build_sample,
    convert_mode,
    image_token_count,
    image_tokens,
    parse_image,
    split_items,
)
from xprompt.tokenizer.text import TextTokenizer
from xprompt.tokenizer.vocab import Vocabulary

CORPUS = ["remove the red circle", "add rain to the photo", "make it brighter", "a small blue square"] * 20


@pytest.fixture(scope="module")
def tok():
    return TextTokenizer.train(CORPUS, vocab_size=300, min_frequency=1)


@pytest.fixture(scope="module")
def vocab(tok):
    return Vocabulary.build(text_size=tok.vocab_size, num_image_codes=16, num_xp=4, max_grid=8)


def test_image_layout_exact(vocab):
    codes = np.array([[1, 2], [3, 4]])
    ids = image_tokens(vocab, codes)
    c = vocab.codes_to_ids
    expected = [
        vocab.boi_id,
        vocab.h_token(2),
        vocab.w_token(2),
        c(1),
        c(2),
        vocab.eol_id,
        c(3),
        c(4),
        vocab.eol_id,
        vocab.eoi_id,
    ]
    assert ids.tolist() == [int(x) for x in expected]
    assert len(ids) == image_token_count(2, 2)


@settings(max_examples=50, deadline=None)
@given(h=st.integers(1, 8), w=st.integers(1, 8), seed=st.integers(0, 10**6))
def test_image_roundtrip_random_sizes(vocab, h, w, seed):
    codes = np.random.default_rng(seed).integers(0, 16, size=(h, w))
    np.testing.assert_array_equal(parse_image(vocab, image_tokens(vocab, codes)), codes)


def test_parse_image_rejects_malformed(vocab):
    ids = image_tokens(vocab, np.zeros((2, 3), int))
    with pytest.raises(VocabularyError):
        parse_image(vocab, ids[:-1])
    broken = ids.copy()
    broken[3 + 3] = vocab.codes_to_ids(np.array([0]))[0]  # an <eol> replaced by a code
    with pytest.raises(VocabularyError, match="<eol>"):
        parse_image(vocab, broken)
    with pytest.raises(VocabularyError, match="too large"):
        image_tokens(vocab, np.zeros((9, 2), int))


def test_text_roundtrip_unicode(tok):
    for s in ["héllo wörld", "雨を取り除く 🌧️", "tabs\tand\nnewlines", ""]:
        assert tok.decode(tok.encode(s)) == s


def test_build_sample_layout_xp(vocab, tok):
    a, b, q, ans = (np.full((2, 2), k) for k in range(4))
    s = build_sample(vocab, tok, mode="xp", instruction="derain", examples=[(a, b)], query=q, answer=ans)
    segs = s.segs.tolist()
    n_img = image_token_count(2, 2)
    n_instr = len(tok.encode("derain")) + 1  # + <eot>
    assert segs == [Seg.PREFIX] * (1 + n_instr) + [Seg.IE] * (2 * n_img) + [Seg.XP] * 4 + [Seg.TD] * (
        2 * n_img + 1
    )
    # loss only on the answer and <eos>
    assert s.loss.sum() == n_img + 1 and s.loss[-(n_img + 1) :].all()
    items = split_items(vocab, tok, s.ids)
    assert items[0] == "derain"
    for got, want in zip(items[1:], [a, b, q, ans], strict=True):
        np.testing.assert_array_equal(got, want)


def test_modes_and_convert(vocab, tok):
    a, b, q, ans = (np.full((2, 2), k) for k in range(4))
    kw = {"instruction": "derain", "examples": [(a, b), (b, a)], "query": q, "answer": ans}
    xp = build_sample(vocab, tok, mode="xp", **kw)
    for mode in ("full", "none"):
        direct = build_sample(vocab, tok, mode=mode, **kw)
        conv = convert_mode(xp, mode)
        np.testing.assert_array_equal(direct.ids, conv.ids)
        np.testing.assert_array_equal(direct.segs, conv.segs)
        np.testing.assert_array_equal(direct.loss, conv.loss)
    assert (convert_mode(xp, "full").segs != Seg.XP).all()
    assert not np.isin(convert_mode(xp, "none").segs, [Seg.IE, Seg.XP]).any()
    with pytest.raises(XPromptError, match="context mode"):
        build_sample(vocab, tok, mode="bogus")


def test_text_answer_and_multi_input_query(vocab, tok):
    a, b = np.zeros((1, 2), int), np.ones((1, 2), int)
    s = build_sample(vocab, tok, examples=[((a, b), "make it brighter")], query=(b, a), answer="add rain")
    items = split_items(vocab, tok, s.ids)
    assert [type(i).__name__ for i in items] == ["ndarray", "ndarray", "str", "ndarray", "ndarray", "str"]
    assert items[-1] == "add rain"
    assert s.ids[-1] == vocab.eos_id and s.ids[-2] == vocab.eot_id


def test_prompt_without_answer_ends_after_query(vocab, tok):
    q = np.zeros((2, 2), int)
    s = build_sample(vocab, tok, mode="none", query=q)
    assert s.ids[-1] == vocab.eoi_id and not s.loss.any()


def test_builder_requires_tokenizer_for_text(vocab):
    with pytest.raises(XPromptError, match="text tokenizer"):
        SequenceBuilder(vocab).text("hi", Seg.TD)

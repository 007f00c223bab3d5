"""Mask-constrained decoding (``MaskedGrid``): forced positions equal the query, all-False = the query,
all-True = unconstrained decoding with the same seed; every mode, batched, CFG, compiled contexts."""

import numpy as np
import pytest
import torch
from gen_helpers import CharTok, codes, tiny_model, tiny_vocab

from xprompt.compiled import compile_prompt
from xprompt.errors import XPromptError
from xprompt.generation import generate_images, td_only
from xprompt.sampling import ImageGrid, MaskedGrid, SamplingConfig
from xprompt.sequence import Seg, TokenSequence, build_sample

TOK = CharTok()
SIZES = [(3, 4), (2, 5)]


def setup(mode, seed=0):
    vocab, rng = tiny_vocab(), np.random.default_rng(seed)
    model = tiny_model(vocab)
    ex = [(codes(rng, 3, 4), codes(rng, 3, 4))] if mode != "none" else []
    queries = [codes(rng, *s) for s in SIZES]
    seqs = [build_sample(vocab, TOK, mode=mode, instruction="red", examples=ex, query=q) for q in queries]
    return vocab, model, queries, seqs, rng


@pytest.mark.parametrize("mode", ["xp", "full", "none"])
@pytest.mark.parametrize(
    "sampling", [{"seed": 3, "image_top_k": 6}, {"greedy": True}, {"seed": 1, "cfg_scale": 2.0}]
)
def test_forced_positions_equal_query_for_random_masks(mode, sampling):
    vocab, model, queries, seqs, rng = setup(mode)
    for _ in range(3):
        masks = [rng.random(q.shape) < 0.4 for q in queries]
        out = generate_images(
            model, vocab, seqs, SIZES, SamplingConfig(**sampling), keep=list(zip(queries, masks, strict=True))
        )
        for o, q, m in zip(out, queries, masks, strict=True):
            assert o.shape == q.shape
            np.testing.assert_array_equal(o[~m], q[~m])


@pytest.mark.parametrize("mode", ["xp", "full", "none"])
def test_all_false_mask_returns_the_query_and_all_true_equals_unconstrained(mode):
    vocab, model, queries, seqs, _ = setup(mode)
    cfg = SamplingConfig(seed=7, image_top_k=8)
    zero = [(q, np.zeros(q.shape, bool)) for q in queries]
    for o, q in zip(generate_images(model, vocab, seqs, SIZES, cfg, keep=zero), queries, strict=True):
        np.testing.assert_array_equal(o, q)
    free = generate_images(model, vocab, seqs, SIZES, cfg)
    ones = [(q, np.ones(q.shape, bool)) for q in queries]
    for a, b in zip(free, generate_images(model, vocab, seqs, SIZES, cfg, keep=ones), strict=True):
        np.testing.assert_array_equal(a, b)
    # a None row is unconstrained, and rows do not disturb each other (greedy: no shared random stream)
    g = SamplingConfig(greedy=True)
    mixed = generate_images(model, vocab, seqs, SIZES, g, keep=[None, zero[1]])
    np.testing.assert_array_equal(mixed[0], generate_images(model, vocab, seqs[:1], SIZES[:1], g)[0])
    np.testing.assert_array_equal(mixed[1], queries[1])


def test_masked_decoding_conditions_on_the_forced_tokens():
    """Greedy masked decoding equals re-running greedy step by step with the query's tokens fed in."""
    vocab, model, queries, seqs, _rng = setup("xp")
    q, seq = queries[0], seqs[0]
    m = np.zeros(q.shape, bool)
    m[1, 1:3] = True
    got = generate_images(model, vocab, [seq], [q.shape], SamplingConfig(greedy=True), keep=[(q, m)])[0]
    h, w = q.shape
    head = [vocab.boi_id, vocab.h_token(h), vocab.w_token(w)]
    body = list(head)
    for r in range(h):
        for c in range(w):
            if m[r, c]:
                ids = np.concatenate([seq.ids, body])
                pos = torch.arange(len(ids))[None]
                hid = model(torch.as_tensor(ids)[None], position_ids=pos, return_hidden=True)[:, -1]
                lg = model.lm_head(hid)[0]
                img = torch.as_tensor(vocab.image_ids)
                body.append(int(img[lg[img].argmax()]))
            else:
                body.append(int(vocab.codes_to_ids(q[r, c])))
        body.append(vocab.eol_id)
    ref = np.array([b for b in body[3:] if b != vocab.eol_id]).reshape(h, w)
    np.testing.assert_array_equal(got, vocab.ids_to_codes(ref))


def test_masked_decoding_with_a_compiled_context():
    vocab, model, queries, seqs, rng = setup("xp")
    keep = seqs[0].segs != int(Seg.TD)
    ctx = TokenSequence(seqs[0].ids[keep], seqs[0].segs[keep], seqs[0].loss[keep])
    cp = compile_prompt(model, vocab, ctx)
    masks = [rng.random(q.shape) < 0.5 for q in queries]
    kp = list(zip(queries, masks, strict=True))
    g = SamplingConfig(greedy=True)
    a = generate_images(model, vocab, seqs, SIZES, g, keep=kp)
    b = generate_images(
        model, vocab, [td_only(s) for s in seqs], SIZES, g, context=cp.cache, context_segs=cp.segs, keep=kp
    )
    for x, y, q, m in zip(a, b, queries, masks, strict=True):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x[~m], q[~m])


def test_masked_grid_table_and_errors():
    vocab = tiny_vocab()
    q = np.arange(6).reshape(2, 3)
    m = np.array([[True, False, False], [False, False, True]])
    proc = MaskedGrid(vocab, [2], [3], [q], [m])
    base = ImageGrid(vocab, [2], [3])
    want = [-1, vocab.codes_to_ids(1), vocab.codes_to_ids(2), vocab.eol_id]
    want += [vocab.codes_to_ids(3), vocab.codes_to_ids(4), -1, vocab.eol_id, vocab.eoi_id]
    assert [int(proc.forced(s)[0]) for s in range(proc.steps)] == [int(x) for x in want]
    assert [proc.all_forced(s) for s in range(proc.steps)] == [x >= 0 for x in want]
    assert [bool(proc.is_image(s)[0]) for s in range(proc.steps)] == [x < 0 for x in want]
    assert proc.steps == base.steps
    with pytest.raises(XPromptError, match="must both match the grid"):
        MaskedGrid(vocab, [2], [3], [q], [m[:, :2]])
    with pytest.raises(XPromptError, match="one \\(codes, mask\\) pair per row"):
        MaskedGrid(vocab, [2, 2], [3, 3], [q], [m])
    with pytest.raises(XPromptError, match="one \\(codes, mask\\) pair or None per prompt"):
        generate_images(
            tiny_model(vocab), vocab, [build_sample(vocab, TOK, mode="none", query=q)], [(2, 3)], keep=[]
        )

"""X-Prompt mask rule and position ids: exact 8-token toys, packed documents, and a property test."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xprompt.masks import (
    DocAttention,
    build_attention_mask,
    build_attention_mask_batch,
    document_layout,
    kept_entries,
    position_ids,
    position_ids_batch,
)
from xprompt.sequence import Seg

P, IE, XP, TD = int(Seg.PREFIX), int(Seg.IE), int(Seg.XP), int(Seg.TD)


def m(rows: str) -> np.ndarray:
    return np.array([[c == "1" for c in r] for r in rows.split()], dtype=bool)


def test_xp_document_cuts_td_to_ie_only():
    segs = [P, IE, IE, XP, XP, TD, TD, TD]
    expected = m("""
        10000000
        11000000
        11100000
        11110000
        11111000
        10011100
        10011110
        10011111
    """)
    np.testing.assert_array_equal(build_attention_mask(np.array(segs)), expected)


def test_full_document_is_plain_causal():
    segs = [P, IE, IE, IE, TD, TD, TD, TD]  # no XP tokens -> mode full -> no cut
    np.testing.assert_array_equal(build_attention_mask(np.array(segs)), np.tri(8, dtype=bool))


def test_none_document_is_plain_causal():
    np.testing.assert_array_equal(
        build_attention_mask(np.array([P, P, TD, TD, TD, TD, TD, TD])), np.tri(8, dtype=bool)
    )


def test_packed_documents_mix_modes():
    segs = [P, IE, XP, TD, P, IE, TD, TD]  # doc 0 in xp layout, doc 1 in full layout
    docs = [0, 0, 0, 0, 1, 1, 1, 1]
    expected = m("""
        10000000
        11000000
        11100000
        10110000
        00001000
        00001100
        00001110
        00001111
    """)
    np.testing.assert_array_equal(build_attention_mask(np.array(segs), np.array(docs)), expected)
    np.testing.assert_array_equal(position_ids(np.array(docs)), [0, 1, 2, 3, 0, 1, 2, 3])


def test_document_layout_gathers_each_document_with_its_own_mask():
    segs = np.array(
        [
            [P, IE, XP, TD, P, TD, P],  # row 0: xp document (4), none document (2), padding
            [P, IE, IE, TD, TD, P, P],
        ]
    )  # row 1: one full document (5), padding (2)
    docs = np.array([[0, 0, 0, 0, 1, 1, -1], [0, 0, 0, 0, 0, -1, -1]])
    index, valid, mask = document_layout(segs, docs)
    np.testing.assert_array_equal(index, [[0, 1, 2, 3, 0], [4, 5, 0, 0, 0], [7, 8, 9, 10, 11]])
    np.testing.assert_array_equal(valid, [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(
        mask[0],
        m("""
        10000
        11000
        11100
        10110
        00001
    """),
    )  # TD cut from IE; the unused slot sees only itself
    np.testing.assert_array_equal(
        mask[1],
        m("""
        10000
        11000
        00100
        00010
        00001
    """),
    )
    np.testing.assert_array_equal(mask[2], np.tri(5, dtype=bool))
    # the dense equivalent is the block-diagonal mask restricted to document tokens
    dense = DocAttention.from_layout(segs, docs).dense(2).numpy()
    in_doc = docs >= 0
    for r in range(2):
        want = build_attention_mask(segs[r], docs[r]) & in_doc[r][:, None] & in_doc[r][None, :]
        np.testing.assert_array_equal(dense[r], want)
    with pytest.raises(ValueError, match="must both be"):
        document_layout(segs[0], docs[0])


def test_torch_matches_numpy_and_batch():
    segs = np.array([[P, IE, XP, TD, P, IE, TD, TD], [P, IE, IE, XP, XP, TD, TD, TD]])
    docs = np.array([[0, 0, 0, 0, 1, 1, 1, 1], [5, 5, 5, 5, 5, 5, 7, 7]])
    npb = build_attention_mask_batch(segs, docs)
    tb = build_attention_mask_batch(torch.from_numpy(segs), torch.from_numpy(docs))
    assert tb.dtype == torch.bool and tb.shape == (2, 8, 8)
    np.testing.assert_array_equal(tb.numpy(), npb)
    np.testing.assert_array_equal(
        position_ids_batch(torch.from_numpy(docs)).numpy(), position_ids_batch(docs)
    )
    np.testing.assert_array_equal(position_ids(np.array([3, 3, 3, 1, 1, 9])), [0, 1, 2, 0, 1, 0])


def test_kept_entries():
    np.testing.assert_array_equal(kept_entries(np.array([P, IE, IE, XP, XP])), [0, 3, 4])
    np.testing.assert_array_equal(kept_entries(np.array([P, IE, IE])), [0, 1, 2])  # full: nothing dropped


def test_bad_shapes():
    with pytest.raises(ValueError):
        build_attention_mask(np.zeros((2, 2)))
    with pytest.raises(ValueError):
        build_attention_mask(np.zeros(3), np.zeros(4))


@st.composite
def layouts(draw):
    """A packed row of documents, each in mode xp, full or none, with random segment lengths."""
    segs, docs, modes = [], [], []
    for d in range(draw(st.integers(1, 4))):
        mode = draw(st.sampled_from(["xp", "full", "none"]))
        doc = [P] * draw(st.integers(1, 3))
        if mode != "none":
            doc += [IE] * draw(st.integers(1, 5))
        if mode == "xp":
            doc += [XP] * draw(st.integers(1, 3))
        doc += [TD] * draw(st.integers(1, 5))
        segs += doc
        docs += [d] * len(doc)
        modes += [mode] * len(doc)
    return np.array(segs), np.array(docs), modes


@settings(max_examples=150, deadline=None)
@given(layouts())
def test_mask_property(layout):
    segs, docs, modes = layout
    mask = build_attention_mask(segs, docs)
    t = len(segs)
    for i in range(t):
        for j in range(t):
            if docs[i] != docs[j] or j > i:
                assert not mask[i, j]  # nothing across documents, nothing from the future
            elif modes[i] == "xp" and segs[i] == TD and segs[j] == IE:
                assert not mask[i, j]  # compression: TD never sees IE in an xp document
            else:
                assert mask[i, j]  # everything else is causal
    pos = position_ids(docs)
    for d in np.unique(docs):
        np.testing.assert_array_equal(pos[docs == d], np.arange((docs == d).sum()))

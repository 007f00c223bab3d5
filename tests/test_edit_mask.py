"""Mask-guided editing: mask loading/validation, boxes, token masks, feathered blending (pure functions), and
``XPrompt.edit/generate/inpaint(mask=..., box=...)`` on a tiny checkpoint (outside the mask = the input)."""

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from gen_helpers import tiny_checkpoint

from xprompt.edit_mask import (
    blend,
    box_mask,
    changed_pixels,
    feather_alpha,
    fit_mask,
    load_mask,
    masks_for,
    parse_box,
    token_mask,
)
from xprompt.errors import XPromptError


def test_load_mask_forms_and_errors(tmp_path):
    m = np.zeros((8, 10), np.uint8)
    m[2:5, 3:7] = 255
    want = m == 255
    Image.fromarray(m).save(tmp_path / "m.png")
    Image.fromarray(np.repeat(m[..., None], 3, -1)).save(tmp_path / "rgb.png")
    for src in (
        tmp_path / "m.png",
        str(tmp_path / "rgb.png"),
        Image.fromarray(m),
        m,
        m > 0,
        (m > 0).astype(int),
    ):
        np.testing.assert_array_equal(load_mask(src, (8, 10)), want)
    np.testing.assert_array_equal(load_mask(None, (8, 10), box=(3, 2, 7, 5)), want)
    bad = [
        ((np.ones((8, 9), bool),), "the mask is 9x8 but the image is 10x8"),
        ((np.where(want, 200, 0).astype(np.uint8) + 1,), "not binary"),
        ((np.full((8, 10), 128, np.uint8),), "not binary"),
        ((np.zeros((8, 10), bool),), "the mask is empty"),
        ((np.dstack([m, m * 0, m]),), "coloured pixels"),
        ((np.zeros((8, 10, 2)),), "2-D binary image"),
    ]
    for args, msg in bad:
        with pytest.raises(XPromptError, match=msg):
            load_mask(*args, (8, 10))
    (tmp_path / "notimg.png").write_text("hello")
    with pytest.raises(XPromptError, match="cannot read the mask"):
        load_mask(tmp_path / "notimg.png", (8, 10))
    with pytest.raises(XPromptError, match="cannot read the mask: .*not found"):
        load_mask(tmp_path / "missing.png", (8, 10))
    with pytest.raises(XPromptError, match="not both"):
        masks_for([(8, 10)], m, (0, 0, 1, 1))
    with pytest.raises(XPromptError, match="one mask per image"):
        masks_for([(8, 10), (8, 10)], [m])


def test_boxes():
    assert parse_box("1, 2,3,4") == (1, 2, 3, 4)
    for text in ("1,2,3", "a,b,c,d", "1,2,3,4,5"):
        with pytest.raises(XPromptError, match="four integers"):
            parse_box(text)
    for box in ((0, 0, 11, 4), (3, 3, 3, 5), (-1, 0, 2, 2), (0, 5, 2, 3)):
        with pytest.raises(XPromptError, match="not inside the 10x8 image"):
            box_mask(box, (8, 10))
    two = masks_for([(8, 10), (8, 10)], box=[(0, 0, 1, 1), (1, 1, 3, 3)])
    assert [int(x.sum()) for x in two] == [1, 4]
    assert [int(x.sum()) for x in masks_for([(8, 10), (8, 10)], box=(0, 0, 2, 1))] == [2, 2]


def test_token_mask_cells_and_dilation():
    pm = np.zeros((16, 24), bool)
    pm[5, 9] = True  # one pixel in cell (1, 2) of a 4x factor grid
    t0 = token_mask(pm, 4, dilate=0)
    assert t0.shape == (4, 6) and t0.sum() == 1 and t0[1, 2]
    t1 = token_mask(pm, 4, dilate=1)
    want = np.zeros((4, 6), bool)
    want[0:3, 1:4] = True
    np.testing.assert_array_equal(t1, want)
    assert token_mask(pm, 4, dilate=5).all()
    with pytest.raises(XPromptError, match="not a multiple"):
        token_mask(np.ones((10, 10), bool), 4)


def test_fit_mask_follows_the_image_crop():
    m = np.zeros((20, 40), bool)
    m[:, 18:22] = True  # a central stripe: cover-resize to 10x20, centre crop columns 5..15
    f = fit_mask(m, (10, 10))
    want = np.zeros((10, 10), bool)
    want[:, 4:6] = True
    np.testing.assert_array_equal(f, want)
    edge = np.zeros((20, 40), bool)
    edge[:, :4] = True  # cropped away
    with pytest.raises(XPromptError, match="outside the part of the image"):
        fit_mask(edge, (10, 10))


@pytest.mark.parametrize("feather", [0, 1, 3])
def test_blend_keeps_every_pixel_outside_the_mask(feather):
    rng = np.random.default_rng(0)
    orig = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    dec = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    m = np.zeros((16, 16), bool)
    m[3:12, 4:14] = True
    out = blend(orig, dec, m, feather)
    np.testing.assert_array_equal(out[~m], orig[~m])
    a = feather_alpha(m, feather)
    assert (a[~m] == 0).all() and (a[m] > 0).all() and a.max() == 1.0
    core = m.copy()
    for _ in range(feather):  # beyond the feathered band inside the mask: the decoded pixels exactly
        core = core & np.roll(core, 1, 0) & np.roll(core, -1, 0) & np.roll(core, 1, 1) & np.roll(core, -1, 1)
        core = core & np.roll(np.roll(core, 1, 0), 1, 1) & np.roll(np.roll(core, -1, 0), -1, 1)
        core = core & np.roll(np.roll(core, 1, 0), -1, 1) & np.roll(np.roll(core, -1, 0), 1, 1)
    np.testing.assert_array_equal(out[core], dec[core])
    band = m & ~core
    if feather:
        lo = np.minimum(orig, dec)[band]
        hi = np.maximum(orig, dec)[band]
        assert ((out[band] >= lo) & (out[band] <= hi)).all()
    with pytest.raises(XPromptError, match="one size"):
        blend(orig, dec[:8], m)


def test_changed_pixels_are_the_changed_tokens_grown_within_the_mask():
    q = np.arange(16).reshape(4, 4)
    o = q.copy()
    o[1, 1] = 99  # one changed token
    tm = np.ones((4, 4), bool)
    tm[:, 3] = False  # the token mask leaves the last column
    want0 = np.zeros((4, 4), bool)
    want0[1, 1] = True
    np.testing.assert_array_equal(changed_pixels(q, o, tm, 2, grow=0), np.kron(want0, np.ones((2, 2), bool)))
    want1 = np.zeros((4, 4), bool)
    want1[0:3, 0:3] = True  # grown by one token (chessboard), cut to the token mask
    np.testing.assert_array_equal(changed_pixels(q, o, tm, 2, grow=1), np.kron(want1, np.ones((2, 2), bool)))
    assert not changed_pixels(q, q, tm, 2).any()  # nothing changed: nothing is composited
    with pytest.raises(XPromptError, match="one code grid"):
        changed_pixels(q, o[:3], tm, 2)


@pytest.fixture(scope="module")
def xp(tmp_path_factory):
    from xprompt.pipeline import XPrompt

    return XPrompt.from_pretrained(tiny_checkpoint(tmp_path_factory.mktemp("mask") / "ck", image_size=32))


def test_masked_edit_generate_inpaint_keep_the_outside(xp, tmp_path):
    rng = np.random.default_rng(1)
    query = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    ex = [
        (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    ]
    m = np.zeros((32, 32), bool)
    m[8:20, 4:14] = True
    res = xp.edit(query, "Remove the square", k=0, mask=m, seed=0)
    np.testing.assert_array_equal(res.image[~m], query[~m])
    np.testing.assert_array_equal(res.mask, m)
    boxed = xp.edit(query, "Remove the square", k=0, box=(4, 8, 14, 20), seed=0)
    np.testing.assert_array_equal(boxed.image, res.image)  # the box is the same region
    Image.fromarray(m.astype(np.uint8) * 255).save(tmp_path / "m.png")
    for mode in ("xp", "full", "none"):
        out = xp.generate(
            ex if mode != "none" else (), query=[query, query], mode=mode, mask=tmp_path / "m.png"
        )
        for o in out:
            np.testing.assert_array_equal(o[~m], query[~m])
    filled = xp.inpaint(query, m, greedy=True)
    np.testing.assert_array_equal(filled[~m], query[~m])
    with_ex = xp.inpaint(query, box=(4, 8, 14, 20), examples=ex, greedy=True)
    np.testing.assert_array_equal(with_ex[~m], query[~m])
    task = xp.compile_prompt(ex, instruction="swap")
    comp = xp.generate_from(task, query, mask=m, greedy=True)
    np.testing.assert_array_equal(comp[~m], query[~m])
    # an all-ones mask is unconstrained generation; dilation/feathering never touch the outside
    full = np.ones((32, 32), bool)
    np.testing.assert_array_equal(
        xp.generate(ex, query=query, mask=full, feather=0, seed=4), xp.generate(ex, query=query, seed=4)
    )


def test_masked_api_errors(xp):
    query = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(XPromptError, match="the mask is empty"):
        xp.edit(query, "Remove the square", k=0, mask=np.zeros((32, 32), bool))
    with pytest.raises(XPromptError, match="not binary"):
        xp.generate(query=query, mode="none", mask=np.full((32, 32), 7, np.uint8))
    with pytest.raises(XPromptError, match="needs a mask"):
        xp.inpaint(query)
    with pytest.raises(XPromptError, match="not inside"):
        xp.inpaint(query, box=(0, 0, 40, 10))


def test_changed_blend_keeps_the_query_where_the_model_kept_its_tokens(xp):
    rng = np.random.default_rng(2)
    query = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    m = np.zeros((32, 32), bool)
    m[4:28, 4:28] = True
    q = xp._queries([query], m, None, dilate=1)
    f = int(xp.image_tok.factor)
    out = q.codes[0].copy()
    out[2, 2] = (out[2, 2] + 1) % xp.vocab.num_image_codes  # the "model" changes one token
    got = xp._finish([out], q, feather=0, keep_model_size=True, blend="changed")[0]
    whole = xp._finish([out], q, feather=0, keep_model_size=True, blend="mask")[0]
    region = np.zeros((32, 32), bool)
    region[(2 - 1) * f : (2 + 2) * f, (2 - 1) * f : (2 + 2) * f] = True  # the changed token grown by one
    region &= m
    np.testing.assert_array_equal(got[region], whole[region])  # the decoded pixels where it changed
    np.testing.assert_array_equal(got[~region], q.fitted[0][~region])  # the query's own pixels elsewhere
    assert not np.array_equal(got, q.fitted[0])
    kept = xp._finish([q.codes[0]], q, feather=2, blend="changed")[0]  # no token changed: the input itself
    np.testing.assert_array_equal(kept, query)
    with pytest.raises(XPromptError, match="blend must be one of"):
        xp.edit(query, "Remove the square", k=0, mask=m, blend="soft")


def test_cfg_ref_query_guides_against_the_query_alone(xp):
    """``cfg_ref="query"``: with no instruction and no example the prompt is the query alone, so guidance
    against the query changes nothing (exactly); with an example it does, and a bad reference is an error."""
    rng = np.random.default_rng(3)
    query = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    ex = [(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), query)]
    plain = xp.generate(query=query, mode="none", greedy=True)
    np.testing.assert_array_equal(
        xp.generate(query=query, mode="none", greedy=True, cfg_scale=5.0, cfg_ref="query"), plain
    )
    assert not np.array_equal(xp.generate(query=query, mode="none", greedy=True, cfg_scale=5.0), plain)
    # "instruction": the prompt without its examples; with none, the reference is the prompt itself
    said = xp.generate(query=query, mode="none", instruction="swap", greedy=True)
    np.testing.assert_array_equal(
        xp.generate(
            query=query, mode="none", instruction="swap", greedy=True, cfg_scale=5.0, cfg_ref="instruction"
        ),
        said,
    )
    with_ex = xp.generate(
        ex, query=query, instruction="swap", greedy=True, cfg_scale=5.0, cfg_ref="instruction"
    )
    assert with_ex.shape == query.shape
    m = np.zeros((32, 32), bool)
    m[8:24, 8:24] = True
    out = xp.generate(ex, query=query, greedy=True, cfg_scale=3.0, cfg_ref="query", mask=m)
    np.testing.assert_array_equal(out[~m], query[~m])
    res = xp.edit(query, "Remove the square", k=0, box=(8, 8, 24, 24), cfg_scale=3.0, cfg_ref="query")
    np.testing.assert_array_equal(res.image[~m], query[~m])
    filled = xp.inpaint(query, m, greedy=True, cfg_scale=2.0, cfg_ref="query")
    np.testing.assert_array_equal(filled[~m], query[~m])
    for call in (
        lambda: xp.generate(query=query, mode="none", cfg_ref="prompt"),
        lambda: xp.edit(query, "Remove the square", k=0, cfg_ref="prompt"),
        lambda: xp.inpaint(query, m, cfg_ref="prompt"),
    ):
        with pytest.raises(XPromptError, match="cfg_ref must be one of empty, query"):
            call()


def test_guided_changed_blend_on_a_non_square_query_and_a_compiled_task(xp):
    """The changed blend is restored to the input's size like the image (non-square query: padded, then cut
    back), and the query reference works with a compiled task's context too; outside the mask, the input."""
    rng = np.random.default_rng(4)
    query = rng.integers(0, 256, (20, 36, 3), dtype=np.uint8)  # placed (padded) into the 32 px square
    ex = [
        (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    ]
    m = np.zeros((20, 36), bool)
    m[4:16, 6:30] = True
    for blend_ in ("mask", "changed"):
        out = xp.generate(ex, query=query, greedy=True, cfg_scale=2.0, cfg_ref="query", mask=m, blend=blend_)
        assert out.shape == query.shape
        np.testing.assert_array_equal(out[~m], query[~m])
    task = xp.compile_prompt(ex, instruction="swap")
    comp = xp.generate_from(task, query, mask=m, greedy=True, cfg_scale=2.0, cfg_ref="query", blend="changed")
    np.testing.assert_array_equal(comp[~m], query[~m])
    plain = xp.generate_from(task, query, greedy=True)
    guided = xp.generate_from(task, query, greedy=True, cfg_scale=2.0, cfg_ref="query")
    assert plain.shape == guided.shape == query.shape

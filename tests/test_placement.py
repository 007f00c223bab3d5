"""Outputs at the user's size (issue 14): ``xprompt.placement`` round trips and the pipeline API on square, wide,
tall, tiny and huge inputs, with and without masks, pad and bucket handling, ``keep_model_size``."""

from __future__ import annotations

import numpy as np
import pytest
from gen_helpers import tiny_checkpoint

from xprompt.errors import XPromptError
from xprompt.placement import place, place_mask, restore

SHAPES = {"square": (64, 64), "wide": (40, 96), "tall": (96, 40), "tiny": (5, 3), "huge": (1500, 2000)}


def _smooth(h, w, seed=0):
    """A smooth image (resampling barely changes it), so a round trip can be compared by value."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    c = rng.uniform(0.5, 2.0, 3)
    img = [127 + 100 * np.sin(c[k] * (x / max(w, 1) + y / max(h, 1)) * np.pi) for k in range(3)]
    return np.stack(img, -1).astype(np.uint8)


@pytest.mark.parametrize("name", list(SHAPES))
def test_pad_places_without_squashing_and_restores_the_size(name):
    h, w = SHAPES[name]
    img = _smooth(h, w)
    fitted, pl = place(img, 32, 8)
    assert fitted.shape == (32, 32, 3) and pl.restore_hw == (h, w)
    _, _, ch, cw = pl.box
    assert ch / cw == pytest.approx(h / w, rel=0.05)  # the aspect ratio is kept (rounded to whole pixels)
    assert max(ch, cw) == 32  # the long side fills the model's side; the short one is padded
    back = restore(fitted, pl)
    assert back.shape == img.shape
    if min(h, w) >= 32:  # downscaled and back up: close to the original on a smooth image
        assert np.abs(back.astype(int) - img.astype(int)).mean() < 6


def test_model_size_square_input_is_untouched():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    fitted, pl = place(img, 32, 8)
    np.testing.assert_array_equal(fitted, img)
    np.testing.assert_array_equal(restore(fitted, pl), img)


def test_pad_repeats_edges_and_masks_follow_the_image():
    img = _smooth(16, 64)
    fitted, pl = place(img, 32, 8)
    top, left, ch, cw = pl.box
    assert (top, left, ch, cw) == (12, 0, 8, 32)
    np.testing.assert_array_equal(fitted[0], fitted[top])  # the pad repeats the edge row
    m = np.zeros((16, 64), bool)
    m[:, 32:] = True
    pm = place_mask(m, pl)
    assert pm.shape == (32, 32) and not pm[:top].any() and not pm[top + ch :].any()  # the pad is "keep"
    assert pm[top : top + ch, 16:].all() and not pm[top : top + ch, :16].any()
    speck = np.zeros((16, 2560), bool)  # a one-pixel mask on a 160:1 strip is lost when scaled down 80x
    speck[0, 0] = True
    with pytest.raises(XPromptError, match="too thin"):
        place_mask(speck, place(_smooth(16, 2560), 32, 8)[1])


def test_bucket_crops_the_centre_at_the_input_scale():
    img = _smooth(60, 90)
    fitted, pl = place(img, 32, 8, aspect="bucket")
    assert fitted.shape[0] % 8 == 0 and fitted.shape[1] % 8 == 0 and fitted.shape[0] != fitted.shape[1]
    out = restore(fitted, pl)
    assert out.shape[:2] == pl.restore_hw and out.shape[0] <= 60 and out.shape[1] <= 90
    with pytest.raises(XPromptError, match="unknown aspect"):
        place(img, 32, 8, aspect="squash")


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from xprompt.pipeline import XPrompt

    return XPrompt.from_pretrained(tiny_checkpoint(tmp_path_factory.mktemp("place") / "ck", image_size=32))


@pytest.mark.parametrize("name", list(SHAPES))
def test_api_returns_the_query_size(pipe, name):
    h, w = SHAPES[name]
    out = pipe.generate(mode="none", query=_smooth(h, w, seed=1), greedy=True)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8


def test_every_image_api_returns_the_query_size(pipe):
    h, w = SHAPES["wide"]
    q = _smooth(h, w, seed=1)
    ex = [(_smooth(h, w, seed=2), _smooth(h, w, seed=3))]
    out = pipe.generate(ex, q, greedy=True)
    assert out.shape == (h, w, 3)
    assert pipe.generate(ex, q, greedy=True, keep_model_size=True).shape == (32, 32, 3)
    batch = pipe.generate(ex, [q, _smooth(32, 32)], greedy=True)  # a batch keeps each query's own size
    assert [b.shape for b in batch] == [(h, w, 3), (32, 32, 3)]
    np.testing.assert_array_equal(batch[0], out)
    assert pipe.generate_from(pipe.compile_prompt(ex), q, greedy=True).shape == (h, w, 3)
    assert pipe.edit(q, "Remove the red square", k=0, greedy=True).image.shape == (h, w, 3)


@pytest.mark.parametrize("name", ["tall", "huge"])
def test_api_masks_keep_every_outside_pixel_at_the_user_size(pipe, name):
    h, w = SHAPES[name]
    q = _smooth(h, w, seed=4)
    m = np.zeros((h, w), bool)
    m[h // 4 : h // 2, w // 3 : w // 2] = True
    res = pipe.edit(q, "Remove the red square", k=0, mask=m, seed=0)
    assert res.image.shape == (h, w, 3) and res.mask.shape == (h, w)
    np.testing.assert_array_equal(res.image[~m], q[~m])
    filled = pipe.inpaint(q, m, greedy=True)
    np.testing.assert_array_equal(filled[~m], q[~m])
    small = pipe.edit(q, "Remove the red square", k=0, mask=m, seed=0, keep_model_size=True)
    assert small.image.shape == (32, 32, 3) and small.mask.shape == (32, 32)


def test_bucket_mode_api(tmp_path):
    from xprompt.pipeline import XPrompt

    p = XPrompt.from_pretrained(tiny_checkpoint(tmp_path / "ck", image_size=32), aspect="bucket")
    q = _smooth(40, 80)
    out = p.generate(mode="none", query=q, greedy=True)
    # a centre crop of the input (the bucket nearest 2:1 within 16 codes is 3x5), at the input's scale
    assert 40 >= out.shape[0] and 80 >= out.shape[1] and 1.5 <= out.shape[1] / out.shape[0] <= 2.0
    with pytest.raises(XPromptError, match="unknown aspect"):
        XPrompt.from_pretrained(tiny_checkpoint(tmp_path / "ck2", image_size=32), aspect="stretch")

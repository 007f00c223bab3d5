"""Procedural scenes and image sources: determinism, exact captions, anti-aliasing, label maps, photo splits."""

import numpy as np
import pytest

from xprompt.errors import XPromptError
from xprompt.train import scenes, sources
from xprompt.train.scenes import Background, Obj, Scene


def test_scene_deterministic_and_valid():
    for seed in range(30):
        a = scenes.random_scene(np.random.default_rng(seed))
        b = scenes.random_scene(np.random.default_rng(seed))
        assert a == b
        assert 1 <= len(a.objects) <= scenes.MAX_OBJECTS
        assert len({o.cell for o in a.objects}) == len(a.objects)  # one object per cell
        assert len({(o.color, o.shape) for o in a.objects}) == len(a.objects)  # unambiguous names
        assert np.array_equal(scenes.render(a, 64), scenes.render(b, 64))
        assert Scene.from_dict(a.to_dict()) == a


@pytest.mark.parametrize("size", [64, 128])
def test_render_sizes(size):
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = scenes.render_maps(scenes.random_scene(rng), size)
        assert m["rgb"].shape == (size, size, 3) and m["rgb"].dtype == np.uint8
        assert m["label"].shape == (size, size) and m["depth"].shape == (size, size)
        assert 0 < m["depth"].min() and m["depth"].max() <= 1


def test_caption_exact():
    bg = Background("flat", "grey")
    sc = Scene(bg, (Obj("square", "blue", "large", (1, 1)), Obj("circle", "red", "small", (0, 0))))
    assert scenes.caption(sc) == (
        "a small red circle at the top left, a large blue square at the center, on a grey background"
    )
    # overlapping objects: front one first, "in front of"
    sc2 = Scene(bg, (Obj("square", "blue", "large", (1, 1)), Obj("circle", "red", "small", (1, 1), dx=0.05)))
    assert scenes.caption(sc2).startswith("a small red circle at the center in front of a large blue square")


def test_antialiasing_and_labels():
    sc = Scene(Background("flat", "navy"), (Obj("circle", "white", "large", (1, 1)),))
    m = scenes.render_maps(sc, 64)
    g = m["rgb"][..., 1]  # green: navy 35, white 250
    assert ((g > 45) & (g < 240)).sum() > 10  # soft edge pixels exist (supersampling)
    assert np.all(g[m["label"] == 0] > 142) and np.all(g[m["label"] == -1] < 143)
    # area of the label matches the disc area within a few percent
    area = (m["label"] == 0).sum() / 64**2
    assert abs(area - np.pi * 0.2**2) < 0.01


def test_front_object_owns_pixels():
    sc = Scene(
        Background("flat", "grey"),
        (Obj("square", "blue", "large", (1, 1)), Obj("circle", "red", "small", (1, 1))),
    )
    m = scenes.render_maps(sc, 64)
    assert m["label"][32, 32] == 1 and tuple(m["rgb"][32, 32]) == scenes.OBJ_COLORS["red"]
    assert m["depth"][32, 32] < m["depth"][32, 32 + 10] < m["depth"][2, 2]  # front < back < background


def test_photo_splits_disjoint(monkeypatch):
    assert not set(sources.EVAL_PHOTOS) & set(sources.TRAIN_PHOTOS)
    train_paths, eval_paths = set(sources.photo_names("train")), set(sources.photo_names("eval"))
    assert eval_paths and train_paths and not train_paths & eval_paths
    seen = []
    real = sources._load_rgb
    monkeypatch.setattr(sources, "_load_rgb", lambda p, cap=False: seen.append(p) or real(p, cap))
    rng = np.random.default_rng(0)
    for _ in range(60):
        crop = sources.photo_crop(rng, 64, split="train")
        assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    assert set(seen) <= train_paths and not set(seen) & eval_paths
    seen.clear()
    for _ in range(20):
        sources.photo_crop(rng, 128, split="eval")
    assert set(seen) <= eval_paths


def test_sources_contract_and_errors():
    rng = np.random.default_rng(1)
    img = sources.scene_image(rng, 64)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    with pytest.raises(XPromptError):
        sources.photo_crop(rng, 64, split="test")
    with pytest.raises(XPromptError):
        sources.scene_image(rng, 4)


def test_objects_stand_out_from_background():
    rng = np.random.default_rng(2)
    for _ in range(200):
        sc = scenes.random_scene(rng, keep_colors=["black"])
        low = scenes.low_contrast(scenes.bg_color_names(sc.background))
        assert "black" not in low
        assert not {o.color for o in sc.objects} & low

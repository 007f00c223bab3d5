"""The task suite: every task yields valid pairs at 64 and 128 px, exact ground truth, correct reverses, shared
task instances, eval instances."""

import numpy as np
import pytest

from xprompt.errors import XPromptError
from xprompt.train import scenes, sources
from xprompt.train.pairing import draw_group, draw_sample
from xprompt.train.scenes import Scene
from xprompt.train.tasks import FAMILIES, Instance, all_tasks, get_task, make_eval_instances
from xprompt.train.tasks_dense import (
    RESERVED_PALETTE,
    SEEN_PALETTES,
    decode_depth,
    encode_depth,
    height_field,
    normals_from_height,
)
from xprompt.train.tasks_edit import add_object, apply_edit, remove_object
from xprompt.train.tasks_style import NAMED_COLORS

TASKS = sorted(all_tasks())


def _check_item(x, size):
    if isinstance(x, str):
        assert x.strip()
    else:
        assert x.shape == (size, size, 3) and x.dtype == np.uint8


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("name", TASKS)
def test_every_task_valid(name, size):
    task = get_task(name)
    (inst,) = make_eval_instances(name, 1, size, seed=5)
    assert isinstance(inst, Instance) and inst.task == name and inst.instruction.strip()
    for x in [*inst.example_inputs, inst.example_output, *inst.query_inputs, inst.target]:
        _check_item(x, size)
    n_in = {"i2i": 1, "t2i": 1, "i2t": 1, "ii2t": 2}[task.kind]
    assert len(inst.example_inputs) == len(inst.query_inputs) == n_in
    assert isinstance(inst.target, str) == (task.kind in ("i2t", "ii2t"))


def test_registry_metadata():
    tasks = all_tasks()
    assert len(tasks) >= 40
    assert {t.family for t in tasks.values()} == set(FAMILIES)
    for t in tasks.values():
        assert len(set(t.instructions)) >= 5, t.name
        assert t.difference(t.sample_params(np.random.default_rng(0))).strip()
        if t.reverse:
            assert tasks[t.reverse].reverse == t.name, t.name
    assert {n for n, t in tasks.items() if t.never_train} == {"inpainting", "colorization"}


def test_unknown_task_and_bad_size():
    with pytest.raises(XPromptError, match="unknown task"):
        get_task("teleport")
    with pytest.raises(XPromptError):
        make_eval_instances("denoise", 1, 60)


SWAPPED = [n for n, t in all_tasks().items() if t.reverse and t.reverse != n and t.kind == "i2i"]


@pytest.mark.parametrize("name", sorted(SWAPPED))
def test_reverse_swaps(name):
    fwd = get_task(name)
    rev = get_task(fwd.reverse)
    params = fwd.sample_params(np.random.default_rng(1))
    a = fwd.make_pair(np.random.default_rng(2), params, 64)
    b = rev.make_pair(np.random.default_rng(2), params, 64)
    assert np.array_equal(a.inputs[0], b.output) and np.array_equal(a.output, b.inputs[0])
    assert a.scene_before == b.scene_after and a.scene_after == b.scene_before


def test_caption_and_t2i_are_reverses():
    c = get_task("caption").make_pair(np.random.default_rng(3), {}, 64)
    t = get_task("text_to_image").make_pair(np.random.default_rng(3), {}, 64)
    assert c.output == t.inputs[0] and np.array_equal(c.inputs[0], t.output)
    assert c.output == scenes.caption(Scene.from_dict(c.scene_before))


def test_remove_then_readd_restores_scene():
    rng = np.random.default_rng(0)
    for _ in range(40):
        sc = scenes.random_scene(rng, max_objects=5)
        for o in sc.objects:
            removed, obj, idx = remove_object(sc, o.color, o.shape)
            assert obj == o and len(removed.objects) == len(sc.objects) - 1
            back = add_object(removed, obj, idx)
            assert back == sc
            assert np.array_equal(scenes.render(back, 64), scenes.render(sc, 64))


@pytest.mark.parametrize(
    "name", ["add_object", "remove_object", "recolor", "move", "resize", "replace_background"]
)
def test_edit_ground_truth_exact(name):
    task = get_task(name)
    rng = np.random.default_rng(11)
    for _ in range(10):
        params = task.sample_params(rng)
        for pair in (task.make_pair(rng, params, 64), task.make_pair(rng, params, 64)):
            before, after = Scene.from_dict(pair.scene_before), Scene.from_dict(pair.scene_after)
            assert np.array_equal(pair.inputs[0], scenes.render(before, 64))
            assert np.array_equal(pair.output, scenes.render(after, 64))
            assert before != after
            assert apply_edit(name, before, params) == after  # remove_object shares add_object's params


@pytest.mark.parametrize("palette", [*SEEN_PALETTES, RESERVED_PALETTE])
def test_depth_palette_roundtrip(palette):
    sc = scenes.random_scene(np.random.default_rng(4))
    depth = scenes.render_maps(sc, 64)["depth"]
    dec = decode_depth(encode_depth(depth, palette), palette)
    assert np.abs(dec - depth).max() <= 0.5 / 255 + 1e-6


def test_depth_task_uses_palette_and_reserved_is_separate():
    rng = np.random.default_rng(0)
    depth = get_task("depth")
    drawn = {depth.sample_params(rng)["palette"] for _ in range(200)}
    assert drawn == set(SEEN_PALETTES) and RESERVED_PALETTE not in drawn
    p = get_task("depth_reserved").sample_params(rng)
    pair = get_task("depth_reserved").make_pair(rng, p, 64)
    truth = scenes.render_maps(Scene.from_dict(pair.scene_before), 64)["depth"]
    assert np.abs(decode_depth(pair.output, RESERVED_PALETTE) - truth).max() <= 0.5 / 255 + 1e-6


def test_normals_unit_and_flat():
    n = normals_from_height(np.zeros((32, 32), np.float32))
    assert np.allclose(n, [0, 0, 1])
    n = normals_from_height(height_field(np.random.default_rng(0), 64))
    assert np.allclose(np.linalg.norm(n, axis=-1), 1, atol=1e-5)


def test_instance_shared_by_example_and_query():
    # palette map: both outputs use exactly the instance's colours (every band is shown by the example)
    s = draw_sample(get_task("palette_map"), np.random.default_rng(7), 64, "train")
    want = {NAMED_COLORS[c] for c in s.params["colors"]}
    for pair in (s.example, s.query):
        got = {tuple(c) for c in pair.output.reshape(-1, 3)}
        assert got == want
    assert not np.array_equal(s.example.inputs[0], s.query.inputs[0])  # different content
    # channel swap: the same permutation on both
    s = draw_sample(get_task("channel_swap"), np.random.default_rng(8), 64, "train")
    for pair in (s.example, s.query):
        assert np.array_equal(pair.output, pair.inputs[0][..., s.params["perm"]])


def test_group_rotates_pairs():
    g = draw_group(get_task("recolor"), np.random.default_rng(0), 64, "train", k=3)
    assert len(g) == 3 and all(s.params == g[0].params for s in g)
    for j, s in enumerate(g):
        assert s.example is g[(j + 1) % 3].query and s.example is not s.query
    g2 = draw_group(get_task("recolor"), np.random.default_rng(0), 64, "train", k=1)
    assert g2[0].example is not g2[0].query


def test_difference_text_is_the_source_tasks():
    task = get_task("difference")
    rng = np.random.default_rng(0)
    params = task.sample_params(rng, ["recolor", "invert", "difference"])
    assert params["sources"] == ["invert", "recolor"]
    for _ in range(10):
        pair = task.make_pair(rng, params, 64)
        assert pair.source in ("invert", "recolor")
        if pair.source == "invert":
            assert pair.output == "the colours were inverted"
            assert np.array_equal(pair.inputs[1], 255 - pair.inputs[0])


def test_eval_instances_deterministic_and_eval_photos(monkeypatch):
    a = make_eval_instances("denoise", 3, 64, seed=1)
    b = make_eval_instances("denoise", 3, 64, seed=1)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.query, y.query) and np.array_equal(x.target, y.target)
        assert x.params == y.params and x.instruction == y.instruction
    seen = []
    real = sources._load_rgb
    monkeypatch.setattr(sources, "_load_rgb", lambda p, cap=False: seen.append(p) or real(p, cap))
    make_eval_instances("sepia", 20, 64, seed=2)
    photos = [
        p for p in seen if "texture" not in p and not p.endswith(("brick.png", "grass.png", "gravel.png"))
    ]
    assert photos and set(photos) <= set(sources.photo_names("eval"))
    inst = make_eval_instances("recolor", 1, 64)[0]
    assert apply_edit("recolor", Scene.from_dict(inst.scene_before), inst.params) == Scene.from_dict(
        inst.scene_after
    )


@pytest.mark.parametrize("name", ["add_object", "recolor", "move", "resize", "replace_background"])
def test_edit_colours_visible(name):
    task = get_task(name)
    rng = np.random.default_rng(12)
    for _ in range(30):
        params = task.sample_params(rng)
        pair = task.make_pair(rng, params, 64)
        for graph in (pair.scene_before, pair.scene_after):
            sc = Scene.from_dict(graph)
            low = scenes.low_contrast(scenes.bg_color_names(sc.background))
            assert not {o.color for o in sc.objects} & low, (name, params)


def test_edges_find_isoluminant_shapes():
    from xprompt.train.scenes import Background, Obj
    from xprompt.train.tasks_dense import edge_map

    sc = Scene(Background("flat", "dark grey"), (Obj("cross", "red", "large", (1, 1)),))
    e = edge_map(scenes.render(sc, 64), 2.0)[..., 0] > 0
    assert e.mean() > 0.02  # the outline is found although grey levels barely differ
    assert not e[:8, :8].any()  # and the flat background has none

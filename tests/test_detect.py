"""The procedural detector on clean renders of the task suite's scenes (its ceiling) and on edits."""

import dataclasses

import numpy as np
import pytest

from xprompt.errors import XPromptError
from xprompt.eval import detect as D
from xprompt.train import scenes as sc

SIZE = 64


def _flat_scene(objs):
    return sc.Scene(sc.Background("flat", "grey"), tuple(objs))


RED_CIRCLE = sc.Obj("circle", "red", "medium", (0, 0))
BLUE_SQUARE = sc.Obj("square", "blue", "large", (1, 1), angle=0.2)
GREEN_TRI = sc.Obj("triangle", "green", "medium", (2, 2))


def test_detects_each_object_of_a_simple_scene():
    dets = D.detect_objects(sc.render(_flat_scene([RED_CIRCLE, BLUE_SQUARE, GREEN_TRI]), SIZE))
    got = {(d.color, d.shape, d.size, d.cell) for d in dets}
    assert got == {
        ("red", "circle", "medium", (0, 0)),
        ("blue", "square", "large", (1, 1)),
        ("green", "triangle", "medium", (2, 2)),
    }
    assert all(d.iou > 0.8 for d in dets)


def test_empty_background_has_no_objects():
    for bg in ("grey", "navy", "dark grey", "light grey"):
        assert D.detect_objects(sc.render(sc.Scene(sc.Background("flat", bg)), SIZE)) == []


def test_recall_on_random_scenes():
    rng = np.random.default_rng(123)
    hit = total = extra = 0
    for _ in range(25):
        s = sc.random_scene(rng)
        dets = D.detect_objects(sc.render(s, SIZE))
        for o in s.objects:
            total += 1
            hit += any(d.key() == (o.color, o.shape) and d.cell == o.cell for d in dets)
        extra += max(0, len(dets) - len(s.objects))
    assert hit / total >= 0.95
    assert extra <= 3


def test_edit_success_add_remove_recolor():
    before = _flat_scene([RED_CIRCLE, BLUE_SQUARE])
    added = _flat_scene([RED_CIRCLE, BLUE_SQUARE, GREEN_TRI])
    add = {"kind": "add", "color": "green", "shape": "triangle", "cell": (2, 2)}
    assert D.edit_success(sc.render(added, SIZE), add)
    assert not D.edit_success(sc.render(before, SIZE), add)  # the copy baseline fails

    remove = {"kind": "remove", "color": "red", "shape": "circle", "cell": (0, 0)}
    assert D.edit_success(sc.render(_flat_scene([BLUE_SQUARE]), SIZE), remove)
    assert not D.edit_success(sc.render(before, SIZE), remove)

    recolored = _flat_scene([dataclasses.replace(RED_CIRCLE, color="yellow"), BLUE_SQUARE])
    rec = {"kind": "recolor", "color": "yellow", "old_color": "red", "shape": "circle", "cell": (0, 0)}
    assert D.edit_success(sc.render(recolored, SIZE), rec)
    assert not D.edit_success(sc.render(before, SIZE), rec)


def test_edit_success_move_resize_and_instances():
    from xprompt.train.tasks import make_eval_instances

    before = _flat_scene([RED_CIRCLE, BLUE_SQUARE])
    moved = _flat_scene([dataclasses.replace(RED_CIRCLE, cell=(2, 0)), BLUE_SQUARE])
    mv = {"kind": "move", "color": "red", "shape": "circle", "cell": (0, 0), "to": (2, 0)}
    assert D.edit_success(sc.render(moved, SIZE), mv) and not D.edit_success(sc.render(before, SIZE), mv)
    bigger = _flat_scene([dataclasses.replace(RED_CIRCLE, size="large"), BLUE_SQUARE])
    rs = {
        "kind": "resize",
        "color": "red",
        "shape": "circle",
        "cell": (0, 0),
        "new_size": "large",
        "old_size": "medium",
    }
    assert D.edit_success(sc.render(bigger, SIZE), rs) and not D.edit_success(sc.render(before, SIZE), rs)
    # on the task suite's own instances, the ground truth passes and the copy baseline fails
    for task in ("add_object", "remove_object", "recolor", "move", "resize"):
        passed_gt = passed_copy = 0
        insts = make_eval_instances(task, 6, SIZE, seed=7)
        for inst in insts:
            edit = D.edit_from_instance(task, inst.params, inst.scene_before)
            passed_gt += D.edit_success(inst.target, edit, reference=inst.target)
            passed_copy += D.edit_success(inst.query, edit, reference=inst.target)
        assert passed_gt >= 5 and passed_copy <= 1, (task, passed_gt, passed_copy)


def test_edit_success_requires_the_rest_of_the_scene_with_reference():
    gt = sc.render(_flat_scene([BLUE_SQUARE, GREEN_TRI]), SIZE)
    remove = {"kind": "remove", "color": "red", "shape": "circle", "cell": (0, 0)}
    blank = sc.render(sc.Scene(sc.Background("flat", "grey")), SIZE)
    assert D.edit_success(blank, remove)  # nothing left: "removed", without a reference
    assert not D.edit_success(blank, remove, reference=gt)  # but the scene was destroyed
    assert D.edit_success(gt, remove, reference=gt)


def test_edit_description_errors():
    img = sc.render(_flat_scene([RED_CIRCLE]), SIZE)
    with pytest.raises(XPromptError, match="kind"):
        D.edit_success(img, {"kind": "swap", "color": "red", "shape": "circle", "cell": (0, 0)})
    with pytest.raises(XPromptError, match="missing"):
        D.edit_success(img, {"kind": "add", "color": "red"})
    with pytest.raises(XPromptError, match="old_color"):
        D.edit_success(img, {"kind": "recolor", "color": "red", "shape": "circle", "cell": (0, 0)})
    with pytest.raises(XPromptError, match="square"):
        D.detect_objects(np.zeros((32, 48, 3), np.uint8))


def test_geneval_checks():
    s = _flat_scene([RED_CIRCLE, BLUE_SQUARE])
    assert D.geneval_checks(sc.render(s, SIZE), s) == {
        "object": True, "color": True, "count": True, "position": True, "overall": True,
    }  # fmt: skip
    wrong_color = _flat_scene([dataclasses.replace(RED_CIRCLE, color="yellow"), BLUE_SQUARE])
    c = D.geneval_checks(sc.render(wrong_color, SIZE), s)
    assert c["count"] and not c["color"] and not c["object"] and not c["overall"]
    moved = _flat_scene([dataclasses.replace(RED_CIRCLE, cell=(2, 0)), BLUE_SQUARE])
    c = D.geneval_checks(sc.render(moved, SIZE), s)
    assert c["color"] and not c["position"]
    c = D.geneval_checks(sc.render(_flat_scene([BLUE_SQUARE]), SIZE), s)
    assert not c["count"] and not c["object"]

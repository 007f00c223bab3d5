"""Editing tasks with exact ground truth on procedural scenes: add / remove / recolour / move / resize an
object, replace the background.

Design choices:
- Edits are pure functions on the scene graph (``add_object``, ``remove_object``, ...); both images are
  rendered from graphs, so the target is exact and "remove then re-add" gives back identical pixels.
- The *edit* is the instance parameter (which object, which colour, which cell, which background); the scene
  it is applied to is drawn per pair, conditioned so that the edit is possible and unambiguous (the named
  object exists exactly once, the destination cell is free, the new (colour, shape) is not already present).
  Hence the example pair shows exactly the edit the query needs.
- ``add_object`` and ``remove_object`` are each other's reverse (one generator, swapped). Recolour, move, resize
  and background replacement are closed under inversion (the reverse of "make the red circle blue" is the
  recolour instance "make the blue circle red"), so their reverse is the task itself.
"""

from __future__ import annotations

import dataclasses

from xprompt.scene_vocab import EDIT_TEMPLATES
from xprompt.train import scenes
from xprompt.train.scenes import POSITIONS, Obj, Scene
from xprompt.train.tasks import Pair, Task, choice, register, register_pair

# ----------------------------------------------------------------------------------- graph operations


def add_object(scene: Scene, obj: Obj, index: int | None = None) -> Scene:
    """Insert ``obj`` at depth ``index`` (default: in front of everything)."""
    objs = list(scene.objects)
    objs.insert(len(objs) if index is None else index, obj)
    return scene.replace(objects=tuple(objs))


def find(scene: Scene, color: str, shape: str) -> int:
    for i, o in enumerate(scene.objects):
        if o.color == color and o.shape == shape:
            return i
    raise KeyError(f"no {color} {shape} in the scene")


def remove_object(scene: Scene, color: str, shape: str) -> tuple[Scene, Obj, int]:
    """Remove the (colour, shape) object; returns (new scene, the removed object, its depth index)."""
    i = find(scene, color, shape)
    objs = list(scene.objects)
    obj = objs.pop(i)
    return scene.replace(objects=tuple(objs)), obj, i


def _update(scene: Scene, which_color: str, which_shape: str, /, **changes) -> Scene:
    i = find(scene, which_color, which_shape)
    objs = list(scene.objects)
    objs[i] = dataclasses.replace(objs[i], **changes)
    return scene.replace(objects=tuple(objs))


def recolor(scene: Scene, color: str, shape: str, new_color: str) -> Scene:
    return _update(scene, color, shape, color=new_color)


def move(scene: Scene, color: str, shape: str, cell: tuple[int, int]) -> Scene:
    return _update(scene, color, shape, cell=tuple(cell), dx=0.0, dy=0.0)


def resize(scene: Scene, color: str, shape: str, size: str) -> Scene:
    return _update(scene, color, shape, size=size)


def replace_background(scene: Scene, bg: scenes.Background) -> Scene:
    return scene.replace(background=bg)


# ------------------------------------------------------------------------------- conditioned scenes


def base_scene(rng, avoid_cells=(), avoid_combos=(), max_objects: int = 3, keep_colors=()) -> Scene:
    """A random scene without objects in ``avoid_cells`` or with a (colour, shape) in ``avoid_combos``, on a
    background that every colour of ``keep_colors`` (the edit's colours) stands out on."""
    sc = scenes.random_scene(rng, max_objects=max_objects, keep_colors=keep_colors)
    cells = {tuple(c) for c in avoid_cells}
    keep = tuple(o for o in sc.objects if o.cell not in cells and (o.color, o.shape) not in set(avoid_combos))
    return sc.replace(objects=keep)


def with_target(rng, sc: Scene, color: str, shape: str, avoid_cells=(), size: str | None = None) -> Scene:
    """Insert a (colour, shape) object at a random free cell, random size (or ``size``), random depth."""
    free = [c for c in sc.free_cells() if c not in {tuple(a) for a in avoid_cells}]
    cell = choice(rng, free)
    o = scenes.random_obj(rng, cell)
    o = dataclasses.replace(
        o, color=color, shape=shape, size=size or o.size, angle=0.0 if shape == "circle" else o.angle
    )
    return add_object(sc, o, int(rng.integers(len(sc.objects) + 1)))


def _obj_params(rng) -> dict:
    return {"color": choice(rng, list(scenes.OBJ_COLORS)), "shape": choice(rng, scenes.SHAPES)}


def _pair(before: Scene, after: Scene, size: int) -> Pair:
    return Pair(
        [scenes.render(before, size)], scenes.render(after, size), before.to_dict(), after.to_dict(), "scene"
    )


# ------------------------------------------------------------------------------------------- tasks


def _add_params(rng) -> dict:
    p = _obj_params(rng)
    p["size"] = choice(rng, list(scenes.SIZES))
    p["cell"] = list(choice(rng, list(POSITIONS)))
    return p


def _add_gen(rng, p, size, split) -> Pair:
    cell = tuple(p["cell"])
    before = base_scene(
        rng, avoid_cells=[cell], avoid_combos=[(p["color"], p["shape"])], keep_colors=[p["color"]]
    )
    after = add_object(before, Obj(p["shape"], p["color"], p["size"], cell))
    return _pair(before, after, size)


def _obj_values(p) -> dict:
    v = {k: p[k] for k in ("color", "shape") if k in p}
    if "size" in p:
        v["size"] = p["size"]
    if "cell" in p:
        v["pos"] = POSITIONS[tuple(p["cell"])]
    if "new_color" in p:
        v["new_color"] = p["new_color"]
    if "new_size" in p:
        v["new_size"] = p["new_size"]
    if "to" in p:
        v["to"] = POSITIONS[tuple(p["to"])]
    return v


register_pair(
    Task("add_object", "edit", "i2i",
         EDIT_TEMPLATES["add_object"],
         "a {size} {color} {shape} was added at the {pos}", _add_gen, params_fn=_add_params, values_fn=_obj_values),
    "remove_object", "edit",
    EDIT_TEMPLATES["remove_object"],
    "the {size} {color} {shape} at the {pos} was removed",
)  # fmt: skip


def _recolor_params(rng) -> dict:
    p = _obj_params(rng)
    p["new_color"] = choice(rng, [c for c in scenes.OBJ_COLORS if c != p["color"]])
    return p


def _recolor_gen(rng, p, size, split) -> Pair:
    sc = base_scene(rng, avoid_combos=[(p["color"], p["shape"]), (p["new_color"], p["shape"])],
                    keep_colors=[p["color"], p["new_color"]])  # fmt: skip
    before = with_target(rng, sc, p["color"], p["shape"])
    return _pair(before, recolor(before, p["color"], p["shape"], p["new_color"]), size)


def _move_params(rng) -> dict:
    p = _obj_params(rng)
    p["to"] = list(choice(rng, list(POSITIONS)))
    return p


def _move_gen(rng, p, size, split) -> Pair:
    to = tuple(p["to"])
    sc = base_scene(rng, avoid_cells=[to], avoid_combos=[(p["color"], p["shape"])], keep_colors=[p["color"]])
    before = with_target(rng, sc, p["color"], p["shape"], avoid_cells=[to])
    return _pair(before, move(before, p["color"], p["shape"], to), size)


def _resize_params(rng) -> dict:
    p = _obj_params(rng)
    p["new_size"] = choice(rng, list(scenes.SIZES))
    return p


def _resize_gen(rng, p, size, split) -> Pair:
    sc = base_scene(rng, avoid_combos=[(p["color"], p["shape"])], keep_colors=[p["color"]])
    old = choice(rng, [s for s in scenes.SIZES if s != p["new_size"]])
    before = with_target(rng, sc, p["color"], p["shape"], size=old)
    return _pair(before, resize(before, p["color"], p["shape"], p["new_size"]), size)


def _bg_params(rng) -> dict:
    return {"background": dataclasses.asdict(scenes.random_background(rng))}


def _bg_values(p) -> dict:
    bg = p["background"]
    return {"bg": scenes.Background(**{**bg, "crop": tuple(bg["crop"])}).phrase()}


def _bg_gen(rng, p, size, split) -> Pair:
    bg = scenes.Background(**{**p["background"], "crop": tuple(p["background"]["crop"])})
    before = scenes.random_scene(rng, max_objects=3, extra_bg_colors=scenes.bg_color_names(bg))
    while before.background == bg:
        before = before.replace(background=scenes.random_background(rng))
    return _pair(before, replace_background(before, bg), size)


register(Task(
    "recolor", "edit", "i2i",
    EDIT_TEMPLATES["recolor"],
    "the {color} {shape} became {new_color}", _recolor_gen, params_fn=_recolor_params, values_fn=_obj_values,
    reverse="recolor",
))  # fmt: skip
register(Task(
    "move", "edit", "i2i",
    EDIT_TEMPLATES["move"],
    "the {color} {shape} was moved to the {to}", _move_gen, params_fn=_move_params, values_fn=_obj_values,
    reverse="move",
))  # fmt: skip
register(Task(
    "resize", "edit", "i2i",
    EDIT_TEMPLATES["resize"],
    "the {color} {shape} became {new_size}", _resize_gen, params_fn=_resize_params, values_fn=_obj_values,
    reverse="resize",
))  # fmt: skip
register(Task(
    "replace_background", "edit", "i2i",
    EDIT_TEMPLATES["replace_background"],
    "the background was replaced with {bg}", _bg_gen, params_fn=_bg_params, values_fn=_bg_values,
    reverse="replace_background",
))  # fmt: skip


def apply_edit(task: str, scene: Scene, params: dict) -> Scene:
    """Apply an edit instance to a scene graph (for edit-success checks in evaluation)."""
    p = params
    if task == "add_object":
        return add_object(scene, Obj(p["shape"], p["color"], p["size"], tuple(p["cell"])))
    if task == "remove_object":
        return remove_object(scene, p["color"], p["shape"])[0]
    if task == "recolor":
        return recolor(scene, p["color"], p["shape"], p["new_color"])
    if task == "move":
        return move(scene, p["color"], p["shape"], tuple(p["to"]))
    if task == "resize":
        return resize(scene, p["color"], p["shape"], p["new_size"])
    if task == "replace_background":
        return replace_background(
            scene, scenes.Background(**{**p["background"], "crop": tuple(p["background"]["crop"])})
        )
    raise KeyError(f"{task} is not an edit task")

"""A procedural object detector for the task suite's scenes: edit success and GenEval-style checks.

The procedural scenes (``xprompt.train.scenes``) draw 1-5 flat-coloured objects from a closed set (5 shapes,
3 sizes, 10 colours, one object per cell of a 3x3 grid) over a background. That makes a *exact* detector
possible without any learned weights, so the edit-success rate and the text-to-image checks are read off the
generated image, not guessed:

1. **Colour classes.** Each pixel goes to its nearest colour among the 10 object colours and the 8 background
   colours (RGB Euclidean distance); it is an object pixel only when the nearest colour is an object colour
   and the distance is below ``max_color_dist`` (default 60; the closest object/background pair, black vs
   dark grey, is 78 apart). Including the background colours keeps navy/dark-grey/light-grey backgrounds
   from being read as blue/black/white objects.
2. **Components.** Connected components per object colour (``scipy.ndimage.label``, 8-connectivity) with at
   least ``min_area`` of the image (default 0.4 %, a small circle at 64 px covers ~3.8 %).
3. **Shape, size, position by template matching.** For each component, the scene renderer's own
   ``shape_mask`` is drawn at the component's centroid for every shape x size x rotation (rotations in the
   renderer's range, +-0.35 rad; the best few re-centred on a small grid), and the best IoU wins; below ``min_iou`` (0.5) the blob is not an object
   (noise, texture, a half-drawn shape). The cell is the 3x3 cell of the centroid.

Checks built on it
* ``edit_success(pred, edit)``: did an add / remove / recolour / move / resize happen? (added object detected
  at its cell; removed object no longer detected; recoloured object in its new colour and not the old one at
  its cell; moved object at its new cell only; resized object with the new size class). ``edit`` is a small
  dict; ``edit_from_instance`` builds it from a task-suite instance (params + the query's scene graph).
* ``geneval_checks(pred, scene)``: for a caption's scene -- *object* (each captioned shape present),
  *colour* (each captioned colour+shape present), *count* (number of detected objects equals the caption's),
  *position* (each colour+shape found in its captioned cell), and *overall* = all four true. Scores are the
  fraction of prompts passing, as in GenEval.
Measured on clean renders (the detector's ceiling) in ``tests/test_detect.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from xprompt.eval.metrics_image import as_image

from xprompt.errors import XPromptError

ANGLES = (-0.35, -0.175, 0.0, 0.175, 0.35)
CENTER_STEP = 0.03  # template centre search around the component centroid (normalised units)
REFINE_TOP = 6  # templates re-centred in the second matching stage


@dataclass(frozen=True)
class Detection:
    color: str
    shape: str
    size: str
    cell: tuple[int, int]
    center: tuple[float, float]  # (x, y) normalised
    area: float  # fraction of the image
    iou: float  # best template IoU

    def key(self) -> tuple[str, str]:
        return (self.color, self.shape)

    def to_dict(self) -> dict:
        return asdict(self)


def _scenes():
    from xprompt.train import scenes

    return scenes


@lru_cache(maxsize=4)
def _color_table() -> tuple[np.ndarray, tuple[str, ...], int]:
    """(K, 3) colours = object colours then background colours; names; number of object colours."""
    sc = _scenes()
    names = tuple(sc.OBJ_COLORS) + tuple(f"bg:{n}" for n in sc.BG_COLORS)
    cols = np.array(list(sc.OBJ_COLORS.values()) + list(sc.BG_COLORS.values()), np.float64)
    return cols, names, len(sc.OBJ_COLORS)


def color_labels(img, max_color_dist: float = 60.0) -> np.ndarray:
    """uint8 (H, W, 3) -> int (H, W): object colour index (order of ``OBJ_COLORS``) or -1 (not an object)."""
    from scipy.spatial import cKDTree

    img = as_image(img)
    cols, _, n_obj = _color_table()
    dist, idx = cKDTree(cols).query(img.reshape(-1, 3).astype(np.float64), k=1)  # (H*W,)
    lab = np.where((idx < n_obj) & (dist <= max_color_dist), idx, -1)
    return lab.reshape(img.shape[:2])


def _template(shape: str, size: str, angle: float, cx: float, cy: float, n: int) -> np.ndarray:
    sc = _scenes()
    obj = sc.Obj(shape, "red", size, (0, 0), dx=cx - 1 / 6, dy=cy - 1 / 6, angle=angle)
    return sc.shape_mask(obj, n)  # bool (n, n)


def _classify(mask: np.ndarray, free: np.ndarray) -> tuple[str, str, float]:
    """Best (shape, size, IoU) for a bool (n, n) component mask.

    All templates are tried at the centroid, then the ``REFINE_TOP`` best also at +-``CENTER_STEP`` around it
    (an occluded or image-clipped object's centroid is off its true centre); template pixels that another
    object covers (``free`` false) are not counted against it.
    """
    sc = _scenes()
    n = mask.shape[0]
    ys, xs = np.nonzero(mask)
    cx0, cy0 = (xs.mean() + 0.5) / n, (ys.mean() + 0.5) / n
    area = mask.sum()

    def iou(shape, size, angle, cx, cy) -> float:
        t = _template(shape, size, angle, cx, cy, n) & free  # (n, n)
        inter = np.logical_and(t, mask).sum()
        return float(inter / (area + t.sum() - inter))

    # stage 1: every shape x size x angle at the centroid; stage 2: the best few, re-centred
    cands = [
        (iou(shape, size, angle, cx0, cy0), shape, size, angle)
        for shape in sc.SHAPES
        for size in sc.SIZES
        for angle in ((0.0,) if shape == "circle" else ANGLES)
    ]
    cands.sort(key=lambda c: -c[0])
    best = (cands[0][1], cands[0][2], cands[0][0])
    for _, shape, size, angle in cands[:REFINE_TOP]:
        for ox in (-CENTER_STEP, 0.0, CENTER_STEP):
            for oy in (-CENTER_STEP, 0.0, CENTER_STEP):
                if ox or oy:
                    v = iou(shape, size, angle, cx0 + ox, cy0 + oy)
                    if v > best[2]:
                        best = (shape, size, v)
    return best


def detect_objects(
    img,
    max_color_dist: float = 60.0,
    min_area: float = 0.004,
    min_iou: float = 0.6,
    max_mean_dist: float = 35.0,
) -> list[Detection]:
    """Objects in a (square) scene image, largest first.

    A component must be flat-coloured (mean RGB distance to its colour <= ``max_mean_dist``: texture patches
    that happen to fall near an object colour are not) and match a shape template with IoU >= ``min_iou``.
    """
    from scipy import ndimage

    img = as_image(img)
    h, w = img.shape[:2]
    if h != w:
        raise XPromptError(f"the scene detector needs a square image, got {h}x{w}")
    sc = _scenes()
    names = list(sc.OBJ_COLORS)
    cols = np.array(list(sc.OBJ_COLORS.values()), np.float64)
    lab = color_labels(img, max_color_dist)  # (n, n)
    found: list[Detection] = []
    for ci in np.unique(lab[lab >= 0]):
        comps, k = ndimage.label(lab == ci, structure=np.ones((3, 3)))
        free = (lab < 0) | (lab == ci)  # (n, n): pixels no other object colour claims
        for j in range(1, k + 1):
            m = comps == j  # (n, n)
            frac = float(m.mean())
            if frac < min_area:
                continue
            if np.linalg.norm(img[m].astype(np.float64) - cols[ci], axis=1).mean() > max_mean_dist:
                continue
            shape, size, iou = _classify(m, free)
            if iou < min_iou:
                continue
            ys, xs = np.nonzero(m)
            cx, cy = float((xs.mean() + 0.5) / w), float((ys.mean() + 0.5) / h)
            cell = (min(2, int(cy * 3)), min(2, int(cx * 3)))
            found.append(Detection(names[int(ci)], shape, size, cell, (cx, cy), frac, iou))
    return sorted(found, key=lambda d: -d.area)


# ---------------------------------------------------------------------- edit success
EDIT_KINDS = ("add", "remove", "recolor", "move", "resize")


def preserved(dets: list[Detection], reference: list[Detection], exclude: set[tuple[str, str]]) -> bool:
    """Every object found in ``reference`` (except the ``exclude`` (colour, shape) keys) is in ``dets`` too,
    with the same colour, shape and cell."""
    have = {(d.key(), d.cell) for d in dets}
    return all((r.key(), r.cell) in have for r in reference if r.key() not in exclude)


def edit_success(pred, edit: dict, detections: list[Detection] | None = None, reference=None) -> bool:
    """Was the edit visible in ``pred`` (and, with ``reference``, was the rest of the scene kept)?

    ``reference`` is the ground-truth image (or its detections): then every other object the detector finds
    in it must also be found in ``pred`` at the same cell -- otherwise an output that destroys the scene would
    count as a successful removal.

    ``edit`` names the edited object in the vocabulary of ``train.scenes``: ``{"kind", "color", "shape",
    "cell"}`` plus ``"old_color"`` (recolor), ``"to"`` (move: the new cell; ``cell`` is the old one) or
    ``"new_size"`` (resize). Success: add -- the object is detected at its cell; remove -- it is detected
    nowhere; recolor -- the new colour is at the cell and the old one is not; move -- the object is at ``to``
    and not at ``cell``; resize -- the object at its cell has the new size class.
    """
    kind = edit.get("kind")
    if kind not in EDIT_KINDS:
        raise XPromptError(f"edit kind must be one of {EDIT_KINDS}, got {kind!r}")
    extra = {"recolor": "old_color", "move": "to", "resize": "new_size"}.get(kind)
    for k in ("color", "shape", "cell") + ((extra,) if extra else ()):
        if k not in edit:
            raise XPromptError(f"edit description ({kind}) is missing {k!r}: {edit}")
    dets = detect_objects(pred) if detections is None else detections
    key = (edit["color"], edit["shape"])
    cell = tuple(edit["cell"])
    if reference is not None:
        ref = reference if isinstance(reference, list) else detect_objects(reference)
        if not preserved(dets, ref, {key, (edit.get("old_color"), edit["shape"])}):
            return False
    at = lambda c, k=key: [d for d in dets if d.cell == tuple(c) and d.key() == k]
    if kind == "add":
        return bool(at(cell))
    if kind == "remove":
        return not any(d.key() == key for d in dets)
    if kind == "recolor":
        return bool(at(cell)) and not at(cell, (edit["old_color"], edit["shape"]))
    if kind == "move":
        return bool(at(edit["to"])) and not at(cell)
    return any(d.size == edit["new_size"] for d in at(cell))


def edit_from_instance(task: str, params: dict, scene_before: dict | None) -> dict | None:
    """The ``edit_success`` description of a task-suite edit instance (None for tasks it cannot judge)."""
    p = params
    if task in ("add_object", "remove_object"):
        kind = "add" if task == "add_object" else "remove"
        return {"kind": kind, "color": p["color"], "shape": p["shape"], "cell": tuple(p["cell"])}
    if task not in ("recolor", "move", "resize") or scene_before is None:
        return None
    obj = next(
        (o for o in scene_before["objects"] if o["color"] == p["color"] and o["shape"] == p["shape"]), None
    )
    if obj is None:
        return None
    cell = tuple(obj["cell"])
    if task == "recolor":
        return {"kind": "recolor", "color": p["new_color"], "old_color": p["color"], "shape": p["shape"],
                "cell": cell}  # fmt: skip
    if task == "move":
        return {"kind": "move", "color": p["color"], "shape": p["shape"], "cell": cell, "to": tuple(p["to"])}
    return {
        "kind": "resize",
        "color": p["color"],
        "shape": p["shape"],
        "cell": cell,
        "new_size": p["new_size"],
    }


# ---------------------------------------------------------------------- GenEval-style checks
def geneval_checks(pred, scene, detections: list[Detection] | None = None) -> dict[str, bool]:
    """Object / colour / count / position correctness of ``pred`` for the caption of ``scene``."""
    dets = detect_objects(pred) if detections is None else detections
    want = list(scene.objects)
    shapes = [d.shape for d in dets]
    keys = [d.key() for d in dets]
    obj_ok = all(shapes.count(s) >= sum(o.shape == s for o in want) for s in {o.shape for o in want})
    color_ok = all((o.color, o.shape) in keys for o in want)
    count_ok = len(dets) == len(want)
    pos_ok = all(any(d.key() == (o.color, o.shape) and d.cell == o.cell for d in dets) for o in want)
    return {
        "object": bool(obj_ok),
        "color": bool(color_ok),
        "count": bool(count_ok),
        "position": bool(pos_ok),
        "overall": bool(obj_ok and color_ok and count_ok and pos_ok),
    }

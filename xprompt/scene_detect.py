"""An exact detector for the procedural scenes' objects (no learned weights): colour classes, components, shapes.

The procedural scenes (``xprompt.scene_vocab``; drawn by ``xprompt.train.scenes``) hold 1-5 flat-coloured
objects from a closed set (5 shapes, 3 sizes, 10 colours, one object per cell of a 3x3 grid) over a
background, so objects can be found exactly:

1. **Colour classes.** Each pixel goes to its nearest colour among the 10 object colours and the 8 background
   colours (RGB Euclidean distance); it is an object pixel only when the nearest colour is an object colour
   and the distance is below ``max_color_dist`` (default 60; the closest object/background pair, black vs
   dark grey, is 78 apart). Including the background colours keeps navy/dark-grey/light-grey backgrounds
   from being read as blue/black/white objects.
2. **Components.** Connected components per object colour (``scipy.ndimage.label``, 8-connectivity) with at
   least ``min_area`` of the image (default 0.4 %, a small circle at 64 px covers ~3.8 %).
3. **Shape, size, position by template matching.** For each component, the renderer's own ``shape_mask`` is
   drawn at the component's centroid for every shape x size x rotation (rotations in the renderer's range,
   +-0.35 rad; the best few re-centred on a small grid), and the best IoU wins; below ``min_iou`` the blob is
   not an object (noise, texture, a half-drawn shape). The cell is the 3x3 cell of the centroid.

``detect_blobs`` is the lenient variant (colour components and their cells, no shape test) for images that
went through a 64-px VQ, which keeps an object's colour and place but blurs its outline. Both return their
components' pixel masks on request (``with_masks=True``): the instruction masks (``xprompt.instruction_mask``)
cut boxes around them. The edit-success and GenEval-style checks built on this live in ``xprompt.eval.detect``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from xprompt import scene_vocab as sv
from xprompt.errors import XPromptError
from xprompt.images import as_image

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


@dataclass(frozen=True)
class Blob:
    """A connected region of one object colour: the lenient unit of the edit checks."""

    color: str
    cell: tuple[int, int]
    area: float  # fraction of the image

    def key(self) -> tuple[str, tuple[int, int]]:
        return (self.color, self.cell)


@lru_cache(maxsize=4)
def _color_table() -> tuple[np.ndarray, tuple[str, ...], int]:
    """(K, 3) colours = object colours then background colours; names; number of object colours."""
    names = tuple(sv.OBJ_COLORS) + tuple(f"bg:{n}" for n in sv.BG_COLORS)
    cols = np.array(list(sv.OBJ_COLORS.values()) + list(sv.BG_COLORS.values()), np.float64)
    return cols, names, len(sv.OBJ_COLORS)


def color_labels(img, max_color_dist: float = 60.0) -> np.ndarray:
    """uint8 (H, W, 3) -> int (H, W): object colour index (order of ``OBJ_COLORS``) or -1 (not an object)."""
    from scipy.spatial import cKDTree

    img = as_image(img)
    cols, _, n_obj = _color_table()
    dist, idx = cKDTree(cols).query(img.reshape(-1, 3).astype(np.float64), k=1)  # (H*W,)
    lab = np.where((idx < n_obj) & (dist <= max_color_dist), idx, -1)
    return lab.reshape(img.shape[:2])


def shape_template(shape: str, size: str, angle: float, cx: float, cy: float, n: int) -> np.ndarray:
    obj = sv.Obj(shape, "red", size, (0, 0), dx=cx - 1 / 6, dy=cy - 1 / 6, angle=angle)
    return sv.shape_mask(obj, n)  # bool (n, n)


def _classify(mask: np.ndarray, free: np.ndarray) -> tuple[str, str, float]:
    """Best (shape, size, IoU) for a bool (n, n) component mask.

    All templates are tried at the centroid, then the ``REFINE_TOP`` best also at +-``CENTER_STEP`` around it
    (an occluded or image-clipped object's centroid is off its true centre); template pixels that another
    object covers (``free`` false) are not counted against it.
    """
    n = mask.shape[0]
    ys, xs = np.nonzero(mask)
    cx0, cy0 = (xs.mean() + 0.5) / n, (ys.mean() + 0.5) / n
    area = mask.sum()

    def iou(shape, size, angle, cx, cy) -> float:
        t = shape_template(shape, size, angle, cx, cy, n) & free  # (n, n)
        inter = np.logical_and(t, mask).sum()
        return float(inter / (area + t.sum() - inter))

    # stage 1: every shape x size x angle at the centroid; stage 2: the best few, re-centred
    cands = [
        (iou(shape, size, angle, cx0, cy0), shape, size, angle)
        for shape in sv.SHAPES
        for size in sv.SIZES
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


def _centroid_cell(m: np.ndarray) -> tuple[tuple[float, float], tuple[int, int]]:
    """(x, y) normalised centroid of a bool (H, W) mask and its 3x3 cell (row, col)."""
    h, w = m.shape
    ys, xs = np.nonzero(m)
    cx, cy = float((xs.mean() + 0.5) / w), float((ys.mean() + 0.5) / h)
    return (cx, cy), (min(2, int(cy * 3)), min(2, int(cx * 3)))


def detect_objects(
    img,
    max_color_dist: float = 60.0,
    min_area: float = 0.004,
    min_iou: float = 0.6,
    max_mean_dist: float = 35.0,
    *,
    with_masks: bool = False,
    colors=None,
) -> list[Detection] | list[tuple[Detection, np.ndarray]]:
    """Objects in a (square) scene image, largest first (``with_masks``: (detection, bool (H, W)) pairs;
    ``colors``: only objects of these colour names, the others' components are not classified).

    A component must be flat-coloured (mean RGB distance to its colour <= ``max_mean_dist``: texture patches
    that happen to fall near an object colour are not) and match a shape template with IoU >= ``min_iou``.
    """
    from scipy import ndimage

    img = as_image(img)
    h, w = img.shape[:2]
    if h != w:
        raise XPromptError(f"the scene detector needs a square image, got {h}x{w}")
    names = list(sv.OBJ_COLORS)
    cols = np.array(list(sv.OBJ_COLORS.values()), np.float64)
    lab = color_labels(img, max_color_dist)  # (n, n)
    found: list[tuple[Detection, np.ndarray]] = []
    for ci in np.unique(lab[lab >= 0]):
        if colors is not None and names[int(ci)] not in colors:
            continue
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
            center, cell = _centroid_cell(m)
            found.append((Detection(names[int(ci)], shape, size, cell, center, frac, iou), m))
    found.sort(key=lambda dm: -dm[0].area)
    return found if with_masks else [d for d, _ in found]


def detect_blobs(
    img, max_color_dist: float = 80.0, min_area: float = 0.008, *, with_masks: bool = False
) -> list[Blob] | list[tuple[Blob, np.ndarray]]:
    """Object-coloured components (no shape test) with the cell of their centroid, largest first
    (``with_masks``: (blob, bool (H, W)) pairs).

    Lenient on purpose: a VQ tokenizer at 64 px keeps an object's colour and place but blurs its outline (a
    cross comes back as a blob), so edits are judged by colour and cell, not by shape.
    """
    from scipy import ndimage

    img = as_image(img)
    names = list(sv.OBJ_COLORS)
    lab = color_labels(img, max_color_dist)  # (H, W)
    out: list[tuple[Blob, np.ndarray]] = []
    for ci in np.unique(lab[lab >= 0]):
        comps, k = ndimage.label(lab == ci, structure=np.ones((3, 3)))
        for j in range(1, k + 1):
            m = comps == j
            if m.mean() < min_area:
                continue
            _, cell = _centroid_cell(m)
            out.append((Blob(names[int(ci)], cell, float(m.mean())), m))
    out.sort(key=lambda bm: -bm[0].area)
    return out if with_masks else [b for b, _ in out]

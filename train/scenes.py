"""Procedural scenes: an exact scene graph, an anti-aliased renderer at any size, and an exact caption.

Design choices:
- A ``Scene`` is an immutable scene graph: a background (flat colour, two-colour gradient, or a tinted crop of
  a packaged grey-scale texture) and 1-5 ``Obj`` in back-to-front (painter's) order. Geometry is stored in
  normalised [0, 1] coordinates, so the same scene renders at 64 or 128 px; every task that edits a scene edits
  the graph, which makes edit ground truth exact (remove then re-add at the same index gives back the same
  graph, hence the same pixels).
- Objects are recognisable at 64 px: five shape classes with distinct silhouettes (circle, square, triangle,
  diamond, cross), three size classes (radius 0.11 / 0.15 / 0.20 of the side), ten well separated named
  colours, and each object sits in its own cell of a 3x3 grid (small jitter) so it has a caption position
  word ("top left", ..., "center"). Within a scene every (colour, shape) pair is unique, so "the red circle"
  names exactly one object.
- Anti-aliasing by supersampling: coverage masks are evaluated on a grid ``SS`` times finer and box-filtered
  down. ``render_maps`` also returns the per-pixel front-most object index (label map) and a depth map, used by
  the dense-prediction tasks.
- The closed vocabulary (shapes, sizes, colours, cells), ``Obj`` and ``shape_mask`` live in
  ``xprompt.scene_vocab`` (the inference package's detector and instruction masks need them) and are
  re-exported here: one copy of each table.
- Captions are a pure function of the graph: objects front to back, "in front of" between consecutive objects
  whose masks overlap, then the background.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

# the closed vocabulary, ``Obj`` and ``shape_mask`` live in the inference package (one copy; re-exported here)
from xprompt.scene_vocab import (  # noqa: F401
    BG_COLORS,
    CELL_OF_WORD,
    MAX_OBJECTS,
    MIN_CONTRAST,
    OBJ_COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    SS,
    TEXTURES,
    Obj,
    pixel_grid,
    shape_mask,
)


@dataclass(frozen=True)
class Background:
    kind: str  # "flat" | "gradient" | "texture"
    color: str  # BG_COLORS name (flat colour, gradient start, or texture tint)
    color2: str = ""  # gradient end
    direction: str = ""  # gradient: "vertical" | "horizontal"
    texture: str = ""  # TEXTURES name
    crop: tuple[float, float, float] = (
        0.0,
        0.0,
        1.0,
    )  # texture crop (y, x, side) as fractions of the short side

    def phrase(self) -> str:
        if self.kind == "flat":
            return f"a {self.color} background"
        if self.kind == "gradient":
            return f"a {self.color} to {self.color2} {self.direction} gradient background"
        return f"a {self.color} {self.texture} texture background"


@dataclass(frozen=True)
class Scene:
    background: Background
    objects: tuple[Obj, ...] = field(default_factory=tuple)  # back to front

    def replace(self, **kw) -> Scene:
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> Scene:
        bg = dict(d["background"])
        bg["crop"] = tuple(bg["crop"])
        objs = tuple(Obj(**{**o, "cell": tuple(o["cell"])}) for o in d["objects"])
        return Scene(Background(**bg), objs)

    def free_cells(self) -> list[tuple[int, int]]:
        used = {o.cell for o in self.objects}
        return [c for c in POSITIONS if c not in used]

    def has(self, color: str, shape: str) -> bool:
        return any(o.color == color and o.shape == shape for o in self.objects)


# ---------------------------------------------------------------------------------------------- sampling


def random_obj(
    rng: np.random.Generator,
    cell: tuple[int, int],
    exclude: set[tuple[str, str]] = frozenset(),
    avoid_colors: set[str] = frozenset(),
) -> Obj:
    """A random object in ``cell`` whose (colour, shape) is not in ``exclude`` and colour not in ``avoid_colors``."""
    colors = [c for c in OBJ_COLORS if c not in avoid_colors]
    while True:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        color = colors[int(rng.integers(len(colors)))]
        if (color, shape) not in exclude:
            break
    size = list(SIZES)[int(rng.integers(len(SIZES)))]
    j = 0.04
    return Obj(
        shape, color, size, cell,
        dx=round(float(rng.uniform(-j, j)), 4), dy=round(float(rng.uniform(-j, j)), 4),
        angle=round(float(rng.uniform(-0.35, 0.35)), 4) if shape != "circle" else 0.0,
    )  # fmt: skip


def random_background(
    rng: np.random.Generator, kinds: tuple[str, ...] = ("flat", "gradient", "texture")
) -> Background:
    names = list(BG_COLORS)
    kind = kinds[int(rng.integers(len(kinds)))]
    color = names[int(rng.integers(len(names)))]
    if kind == "flat":
        return Background("flat", color)
    if kind == "gradient":
        color2 = names[int(rng.integers(len(names) - 1))]
        if color2 == color:
            color2 = names[-1]
        return Background("gradient", color, color2, ("vertical", "horizontal")[int(rng.integers(2))])
    side = float(rng.uniform(0.2, 0.5))
    y, x = (round(float(v), 4) for v in rng.uniform(0, 1 - side, size=2))
    return Background(
        "texture", color, texture=TEXTURES[int(rng.integers(len(TEXTURES)))], crop=(y, x, round(side, 4))
    )


def bg_color_names(bg: Background) -> list[str]:
    return [bg.color] + ([bg.color2] if bg.kind == "gradient" else [])


def low_contrast(bg_colors) -> set[str]:
    """Object colours closer than ``MIN_CONTRAST`` (RGB distance) to any of the background colours."""
    return {
        o for o, oc in OBJ_COLORS.items()
        for b in bg_colors if float(np.linalg.norm(np.subtract(oc, BG_COLORS[b]))) < MIN_CONTRAST
    }  # fmt: skip


def random_scene(
    rng: np.random.Generator,
    n_objects: int | None = None,
    max_objects: int = 4,
    keep_colors=(),
    extra_bg_colors=(),
) -> Scene:
    """A random scene with ``n_objects`` (default: uniform in 1..max_objects) objects in distinct cells.

    Object colours never blend into the background (or into ``extra_bg_colors``, e.g. a background an edit
    will put in); the background is redrawn until every colour of ``keep_colors`` stands out on it."""
    n = int(rng.integers(1, max_objects + 1)) if n_objects is None else n_objects
    while True:
        bg = random_background(rng)
        if not set(keep_colors) & low_contrast(bg_color_names(bg)):
            break
    avoid = low_contrast([*bg_color_names(bg), *extra_bg_colors])
    cells = list(POSITIONS)
    order = rng.permutation(len(cells))[:n]
    objs: list[Obj] = []
    for i in order:
        objs.append(random_obj(rng, cells[int(i)], {(o.color, o.shape) for o in objs}, avoid))
    return Scene(bg, tuple(objs))


# --------------------------------------------------------------------------------------------- rendering


def _background(bg: Background, size: int) -> np.ndarray:
    """float32 (size, size, 3) in [0, 255]."""
    c1 = np.asarray(BG_COLORS[bg.color], np.float32)
    if bg.kind == "flat":
        return np.broadcast_to(c1, (size, size, 3)).copy()
    if bg.kind == "gradient":
        c2 = np.asarray(BG_COLORS[bg.color2], np.float32)
        x, y = pixel_grid(size)
        t = (y if bg.direction == "vertical" else x)[..., None]  # (size, size, 1)
        return (1 - t) * c1 + t * c2
    from xprompt.train.sources import _load_rgb, _resolve

    tex = _load_rgb(str(_resolve("skimage", f"{bg.texture}.png")))[..., 0]  # (H, W)
    short = min(tex.shape)
    cy, cx, cs = (round(f * short) for f in bg.crop)
    crop = tex[cy : cy + cs, cx : cx + cs]
    crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR), np.float32) / 255.0
    t = (crop - crop.mean()) / (crop.std() + 1e-6)  # normalise contrast across textures
    return np.clip(c1 * (1.0 + 0.25 * t[..., None]), 0, 255)


def render_maps(scene: Scene, size: int) -> dict[str, np.ndarray]:
    """Render a scene: ``rgb`` uint8 (size, size, 3), ``label`` int16 (size, size) (index of the front-most object
    covering > half the pixel, -1 = background), ``depth`` float32 (size, size) in (0, 1] (1 = far)."""
    n = size * SS
    img = _background(scene.background, size)  # (size, size, 3)
    label = np.full((size, size), -1, np.int16)
    _x, y = pixel_grid(size)
    depth = (0.95 - 0.25 * y).astype(np.float32)  # ground plane: bottom of the image is nearer
    k = len(scene.objects)
    for i, obj in enumerate(scene.objects):
        # evaluate the supersampled mask only inside the object's bounding box (in output pixels)
        (cx, cy), r = obj.center, obj.radius * 1.2
        px0, px1 = max(0, int((cx - r) * size)), min(size, int(np.ceil((cx + r) * size)) + 1)
        py0, py1 = max(0, int((cy - r) * size)), min(size, int(np.ceil((cy + r) * size)) + 1)
        if px1 <= px0 or py1 <= py0:
            continue
        hh, ww = py1 - py0, px1 - px0
        sub = shape_mask(obj, n, (py0 * SS, py1 * SS, px0 * SS, px1 * SS))  # (hh*SS, ww*SS)
        m = sub.reshape(hh, SS, ww, SS).mean(axis=(1, 3), dtype=np.float32)  # (hh, ww) coverage
        col = np.asarray(OBJ_COLORS[obj.color], np.float32)
        win = img[py0:py1, px0:px1]
        img[py0:py1, px0:px1] = win * (1 - m[..., None]) + col * m[..., None]
        own = m > 0.5
        label[py0:py1, px0:px1][own] = i
        # objects nearer than the background; later (front) objects nearer still; bigger objects slightly nearer
        depth[py0:py1, px0:px1][own] = 0.6 - 0.4 * (i + 1) / (k + 1) - 0.3 * (obj.radius - 0.11)
    rgb = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return {"rgb": rgb, "label": label, "depth": depth}


def render(scene: Scene, size: int) -> np.ndarray:
    """uint8 (size, size, 3)."""
    return render_maps(scene, size)["rgb"]


# ---------------------------------------------------------------------------------------------- captions


def _overlap(a: Obj, b: Obj) -> bool:
    (ax, ay), (bx, by) = a.center, b.center
    return float(np.hypot(ax - bx, ay - by)) < 0.85 * (a.radius + b.radius)


def caption(scene: Scene) -> str:
    """Exact English description: objects front to back, then the background."""
    objs = list(reversed(scene.objects))  # front first
    parts = [objs[0].phrase()] if objs else []
    for prev, o in itertools.pairwise(objs):
        parts.append((" in front of " if _overlap(prev, o) else ", ") + o.phrase())
    body = "".join(parts)
    return f"{body}, on {scene.background.phrase()}" if body else f"{scene.background.phrase()}"

"""The procedural scenes' closed vocabulary and object geometry, shared by training, evaluation and inference.

Design choices:
- One copy of the tables the task suite draws scenes from (``xprompt.train.scenes``), the detector reads them
  with (``xprompt.scene_detect``) and an edit instruction is parsed against (``xprompt.instruction_mask``):
  five shape classes, three size classes, ten object colours, eight background colours, three textures and
  the 3x3 grid of cells with their caption words. They live in the inference package because ``xprompt/`` may
  not import ``xprompt.train`` (docs/CONTRIBUTING.md); ``train/scenes.py`` re-exports every name.
- ``Obj`` and ``shape_mask`` (an object's exact coverage on a pixel grid) live here too: the detector matches
  components against the renderer's own shapes, so both must use one function. Backgrounds, scene sampling
  and rendering need the packaged textures and stay in ``train/scenes.py``.
- Geometry is in normalised [0, 1] coordinates (x right, y down); ``MAX_EXTENT`` bounds every shape at every
  rotation, so a box of ``MAX_EXTENT * radius`` around a centre covers the object whatever its angle.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

SS = 4  # supersampling factor for anti-aliasing

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
SIZES: dict[str, float] = {"small": 0.11, "medium": 0.15, "large": 0.20}  # radius as a fraction of the side
OBJ_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 225, 30),
    "green": (40, 170, 50),
    "cyan": (40, 210, 220),
    "blue": (30, 70, 220),
    "purple": (140, 50, 190),
    "pink": (245, 120, 190),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
BG_COLORS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "light grey": (195, 195, 195),
    "dark grey": (60, 60, 60),
    "beige": (225, 205, 160),
    "sky blue": (150, 190, 235),
    "pale green": (170, 215, 160),
    "navy": (25, 35, 90),
    "brown": (115, 75, 40),
}
TEXTURES: tuple[str, ...] = ("brick", "grass", "gravel")
# 3x3 grid cells (row, col) -> caption words
POSITIONS: dict[tuple[int, int], str] = {
    (0, 0): "top left", (0, 1): "top", (0, 2): "top right",
    (1, 0): "left", (1, 1): "center", (1, 2): "right",
    (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right",
}  # fmt: skip
CELL_OF_WORD = {v: k for k, v in POSITIONS.items()}
MAX_OBJECTS = 5
MIN_CONTRAST = 110.0  # minimum RGB distance between an object colour and the background colour(s)
# farthest point of any shape from its centre, in radii, at any rotation (the square's corner: 0.82 * sqrt 2)
MAX_EXTENT = 1.17


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str
    cell: tuple[int, int]  # (row, col) in the 3x3 grid
    dx: float = 0.0  # jitter of the centre inside its cell, fraction of the side
    dy: float = 0.0
    angle: float = 0.0  # rotation in radians (square/triangle/diamond/cross); not part of the caption

    @property
    def center(self) -> tuple[float, float]:
        """(x, y) centre in normalised coordinates."""
        r, c = self.cell
        return ((c + 0.5) / 3 + self.dx, (r + 0.5) / 3 + self.dy)

    @property
    def radius(self) -> float:
        return SIZES[self.size]

    def phrase(self) -> str:
        return f"a {self.size} {self.color} {self.shape} at the {POSITIONS[self.cell]}"

    def name(self) -> str:
        return f"the {self.color} {self.shape}"


def cell_center(cell: tuple[int, int]) -> tuple[float, float]:
    """(x, y) normalised centre of a 3x3 grid cell (where ``add``/``move`` put an object: no jitter)."""
    r, c = cell
    return ((c + 0.5) / 3, (r + 0.5) / 3)


@functools.lru_cache(maxsize=16)
def pixel_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of an n x n grid in [0, 1]: (x, y), each (n, n)."""
    t = (np.arange(n, dtype=np.float32) + 0.5) / n
    return np.meshgrid(t, t)


def shape_mask(obj: Obj, n: int, window: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Binary coverage of ``obj`` on an n x n grid: bool (n, n), or only on the grid rows/cols
    ``window = (y0, y1, x0, x1)`` (bool (y1 - y0, x1 - x0))."""
    x, y = pixel_grid(n)
    if window is not None:
        y0, y1, x0, x1 = window
        x, y = x[y0:y1, x0:x1], y[y0:y1, x0:x1]
    cx, cy = obj.center
    r = obj.radius
    ca, sa = np.cos(obj.angle), np.sin(obj.angle)
    u = ((x - cx) * ca + (y - cy) * sa) / r  # rotated, radius-normalised coordinates (n, n)
    v = (-(x - cx) * sa + (y - cy) * ca) / r
    if obj.shape == "circle":
        return u * u + v * v <= 1.0
    if obj.shape == "square":
        return (np.abs(u) <= 0.82) & (np.abs(v) <= 0.82)
    if obj.shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.05
    if obj.shape == "cross":
        return ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(v) <= 0.3) & (np.abs(u) <= 0.95))
    if obj.shape == "triangle":  # pointing up, vertices on the unit circle
        return (v <= 0.55) & (0.9 * np.abs(u) <= 0.5 * (v + 1.0))
    raise ValueError(f"unknown shape {obj.shape}")


# The edit tasks' instruction templates (``xprompt.train.tasks_edit`` registers the tasks with them; the
# instruction parser ``xprompt.instruction_mask`` matches them). Placeholders: {size} {color} {shape} {pos} (the
# object's cell) {new_color} {new_size} {to} (a move's destination cell) {bg} (a background phrase).
EDIT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "add_object": (
        "Add a {size} {color} {shape} at the {pos}.",
        "Put a {size} {color} {shape} in the {pos} of the picture.",
        "Place a {color} {shape} ({size}) at the {pos}.",
        "Insert a {size} {color} {shape} at the {pos}.",
        "Draw a {size} {color} {shape} at the {pos}, in front of everything.",
        "There should be a {size} {color} {shape} at the {pos}.",
    ),
    "remove_object": (
        "Remove the {color} {shape}.",
        "Delete the {size} {color} {shape} at the {pos}.",
        "Take the {color} {shape} out of the picture.",
        "Erase the {color} {shape} and show what is behind it.",
        "Get rid of the {color} {shape} at the {pos}.",
        "Make the {color} {shape} disappear.",
    ),
    "recolor": (
        "Make the {color} {shape} {new_color}.",
        "Change the colour of the {color} {shape} to {new_color}.",
        "Recolour the {color} {shape} {new_color}.",
        "Paint the {color} {shape} {new_color}.",
        "Turn the {color} {shape} into a {new_color} one.",
        "The {color} {shape} should be {new_color}.",
    ),
    "move": (
        "Move the {color} {shape} to the {to}.",
        "Put the {color} {shape} at the {to} instead.",
        "Shift the {color} {shape} to the {to}.",
        "Relocate the {color} {shape} to the {to} of the picture.",
        "Drag the {color} {shape} over to the {to}.",
        "The {color} {shape} should be at the {to}.",
    ),
    "resize": (
        "Make the {color} {shape} {new_size}.",
        "Resize the {color} {shape} to {new_size}.",
        "Change the size of the {color} {shape} to {new_size}.",
        "Scale the {color} {shape} so it is {new_size}.",
        "The {color} {shape} should be {new_size}.",
        "Turn the {color} {shape} into a {new_size} one.",
    ),
    "replace_background": (
        "Replace the background with {bg}.",
        "Change the background to {bg}.",
        "Put the objects on {bg}.",
        "Swap the backdrop for {bg}.",
        "Use {bg} behind the shapes.",
        "Give the picture {bg}.",
    ),
}

"""A pixel mask from the object an edit instruction names, for the procedural scenes (mask-guided editing).

Design choices
* **Parsing.** An instruction in one of the task suite's own templates (``scene_vocab.EDIT_TEMPLATES``, the
  strings the edit tasks are trained on) is matched exactly: each template becomes a regular expression whose
  placeholders are alternations of the closed vocabulary (colours, shapes, sizes, cell words), so every
  template parses to its fields and nothing is retyped. Other phrasings ("delete the circle", "make the red
  square bigger") go through a small keyword reader: the edit kind from its verb, the object from the
  vocabulary words in order (first colour = the object's, last = the new one; a second cell word = the
  destination). Neither understood -> ``XPromptError`` naming what is missing.
* **Finding the object.** The exact scene detector (``xprompt.scene_detect``) runs on the query. The named
  colour selects its objects (colour classes are exact); the named shape, size and cell narrow them only when
  some candidate has them -- the words describe, they do not veto, because template matching sometimes reads
  a rotated square or diamond, or two touching objects of one colour, as a circle. Without a colour the shape
  selects. A colour with no template-confirmed object falls back to its colour blobs. Several candidates
  ("the circle" with two circles, "the red square" read as a circle beside a red circle) -> the union of
  their boxes: the mask must cover the object the user meant, and a larger mask only lets more be decoded.
* **The mask** (bool, the image's size) is a union of boxes, each grown by ``margin`` px (default side/16,
  as the evaluation's ground-truth change box): remove / recolour -- the object's box; move -- the object's box
  and the destination (its 3x3 cell and the object's extent centred there); add -- the named cell and the new
  object's extent there (``large`` when no size is named); resize -- the object's box and the new size's
  extent around its centre; replace background -- the whole image (every background pixel changes).
  Extents use ``scene_vocab.MAX_EXTENT`` so any rotation fits.
* Detection runs on images of at most ``DETECT_SIDE`` px (larger ones are resized for it; boxes are
  normalised, so they map back to the input's pixels). Square images only: the scenes are square, and a
  non-square input is not a procedural scene.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from xprompt import scene_vocab as sv
from xprompt.errors import XPromptError

DETECT_SIDE = 128
HINT = "pass --mask or --box (mask=/box=) instead"
BACKGROUND = "replace_background"
# keyword reader: verbs (whole words, in this order of precedence) -> edit kind
VERBS: tuple[tuple[str, str], ...] = (
    ("background|backdrop", BACKGROUND),
    ("remove|delete|erase|disappear|rid|take", "remove_object"),
    ("recolou?r|paint|colou?r", "recolor"),
    ("resize|scale|size|bigger|larger|enlarge|smaller|shrink", "resize"),
    ("move|shift|relocate|drag|(?:put|place) the", "move"),
    ("add|insert|draw|place|put", "add_object"),
)
COMPARATIVES = {
    "bigger": "large",
    "larger": "large",
    "enlarge": "large",
    "smaller": "small",
    "shrink": "small",
}
ALIASES = {"centre": "center", "middle": "center", "colour": "color"}


@dataclass(frozen=True)
class EditSpec:
    """What an instruction asks for, in the task suite's terms (``kind`` is the edit task's name)."""

    kind: str  # add_object | remove_object | recolor | move | resize | replace_background
    color: str | None = None  # the object's colour (add: the new object's)
    shape: str | None = None
    size: str | None = None  # the object's size as named (add: the new object's)
    cell: tuple[int, int] | None = None  # the object's cell as named (add: where it goes)
    new_color: str | None = None
    new_size: str | None = None
    to: tuple[int, int] | None = None  # move: the destination cell
    background: str | None = None  # replace_background: the background phrase

    def to_dict(self) -> dict:
        return asdict(self)

    def object_phrase(self) -> str:
        words = [w for w in (self.size, self.color, self.shape or "object") if w]
        where = f" at the {sv.POSITIONS[self.cell]}" if self.cell and self.kind != "add_object" else ""
        return "the " + " ".join(words) + where


# ---------------------------------------------------------------------------------------------- parsing


def _alt(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))  # longest first: "top left"


def _normalise(text: str) -> str:
    t = " ".join(str(text).lower().replace("-", " ").split()).rstrip(".!")
    for a, b in ALIASES.items():
        t = re.sub(rf"\b{a}\b", b, t)
    return t


@lru_cache(maxsize=1)
def _template_patterns() -> tuple[tuple[str, re.Pattern], ...]:
    """(task, compiled fullmatch pattern) for every edit template, in the normalised spelling."""
    groups = {
        "color": _alt(sv.OBJ_COLORS), "new_color": _alt(sv.OBJ_COLORS), "shape": _alt(sv.SHAPES),
        "size": _alt(sv.SIZES), "new_size": _alt(sv.SIZES), "pos": _alt(sv.CELL_OF_WORD),
        "to": _alt(sv.CELL_OF_WORD), "bg": ".+?",
    }  # fmt: skip
    out = []
    for task, templates in sv.EDIT_TEMPLATES.items():
        for tpl in templates:
            parts = re.split(r"\{(\w+)\}", _normalise(tpl))  # literal, name, literal, name, ...
            rx = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{groups[p]})" for i, p in enumerate(parts))
            out.append((task, re.compile(rx)))
    return tuple(out)


def _spec(kind: str, f: dict) -> EditSpec:
    cell = sv.CELL_OF_WORD[f["pos"]] if f.get("pos") else None
    to = sv.CELL_OF_WORD[f["to"]] if f.get("to") else None
    return EditSpec(kind, f.get("color"), f.get("shape"), f.get("size"), cell, f.get("new_color"),
                    f.get("new_size"), to, f.get("bg"))  # fmt: skip


def _mentions(text: str) -> dict[str, list[tuple[int, str]]]:
    """Vocabulary words of ``text`` as (offset, word) in order: colours, shapes, sizes, cell words."""
    vocab = {"color": sv.OBJ_COLORS, "shape": sv.SHAPES, "size": sv.SIZES, "pos": sv.CELL_OF_WORD}
    return {
        name: [(m.start(), m.group(1)) for m in re.finditer(rf"\b({_alt(words)})s?\b", text)]
        for name, words in vocab.items()
    }


def _split(words: list[tuple[int, str]], at: int | None) -> tuple[list[str], list[str]]:
    """Words before / after offset ``at`` (the shape: "the red circle" names, "... blue" asks); without a
    shape the first word names and the rest ask."""
    if at is None:
        return [w for _, w in words[:1]], [w for _, w in words[1:]]
    return [w for o, w in words if o < at], [w for o, w in words if o > at]


def _kind(text: str, new_colors: list, new_sizes: list, comp: str | None) -> str | None:
    kind = next((k for pat, k in VERBS if re.search(rf"\b({pat})\b", text)), None)
    if kind is None and re.search(r"\b(make|turn|change|should)\b", text):  # "make the circle blue/bigger"
        kind = "resize" if (new_sizes or comp) else "recolor" if new_colors else None
    return kind


def _keyword_spec(text: str) -> EditSpec:
    """The keyword reader for instructions outside the templates (see the module docstring)."""
    w = _mentions(text)
    at = w["shape"][0][0] if w["shape"] else None
    colors, new_colors = _split(w["color"], at)
    sizes, new_sizes = _split(w["size"], at)
    comp = next((COMPARATIVES[c] for c in COMPARATIVES if re.search(rf"\b{c}\b", text)), None)
    kind = _kind(text, new_colors, new_sizes, comp)
    if kind is None:
        raise XPromptError(
            f"cannot tell which edit {text!r} asks for (remove / add / recolour / move / resize an object, or "
            f"replace the background); {HINT}"
        )
    if kind == BACKGROUND:
        return EditSpec(BACKGROUND, background=text)
    cells = [sv.CELL_OF_WORD[p] for _, p in w["pos"]]
    spec = EditSpec(
        kind,
        color=colors[-1] if colors else (new_colors[0] if new_colors and kind != "recolor" else None),
        shape=w["shape"][0][1] if w["shape"] else None,
        size=sizes[-1] if sizes else (new_sizes[0] if new_sizes and kind != "resize" else None),
        cell=(cells[0] if len(cells) >= 2 else None) if kind == "move" else (cells[0] if cells else None),
        new_color=new_colors[-1] if kind == "recolor" and new_colors else None,
        new_size=(comp or (new_sizes[-1] if new_sizes else None)) if kind == "resize" else None,
        to=cells[-1] if kind == "move" and cells else None,
    )
    _check_complete(spec, text)
    return spec


def _check_complete(spec: EditSpec, text: str) -> None:
    if spec.kind != "add_object" and spec.color is None and spec.shape is None:
        raise XPromptError(f"{text!r} names no object (a colour and/or a shape of the scenes); {HINT}")
    if spec.kind == "add_object" and spec.cell is None:
        raise XPromptError(f"{text!r} does not say where to add the object (top left ... center ...); {HINT}")
    if spec.kind == "move" and spec.to is None:
        raise XPromptError(
            f"{text!r} does not say where to move the object (top left ... center ...); {HINT}"
        )


def parse_instruction(text: str) -> EditSpec:
    """An edit instruction -> ``EditSpec``: the task suite's templates exactly, other phrasings by keywords."""
    t = _normalise(text)
    if not t:
        raise XPromptError(f"the instruction is empty; {HINT}")
    for task, rx in _template_patterns():
        m = rx.fullmatch(t)
        if m:
            return _spec(task, m.groupdict())
    return _keyword_spec(t)


# ---------------------------------------------------------------------------------------------- finding


Box = tuple[float, float, float, float]  # normalised (x0, y0, x1, y1)


def _bbox(m: np.ndarray) -> Box:
    h, w = m.shape
    ys, xs = np.nonzero(m)
    return (xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h)


def _narrow(cands: list, attr: str, want) -> list:
    """Keep the candidates whose ``attr`` is ``want`` when some are (a description narrows, never vetoes)."""
    if want is None:
        return cands
    hit = [c for c in cands if getattr(c[0], attr) == want]
    return hit or cands


def find_object(img: np.ndarray, spec: EditSpec) -> list[tuple[Box, tuple[float, float], str | None]]:
    """(box, centre, size class or None) of every object matching ``spec`` in a square uint8 image; [] if none.

    A named colour selects (the colour classes are exact); the cell, shape and size (in this order) narrow the
    colour's objects when some match them (template matching can read a rotated square or a merged pair as a circle).
    Without a colour the shape selects. A colour with no object that passes the template test falls back to
    its colour blobs."""
    from xprompt.scene_detect import detect_blobs, detect_objects

    dets = detect_objects(img, with_masks=True, colors=None if spec.color is None else {spec.color})
    cands = _narrow(dets, "cell", spec.cell)  # the cell first: a centroid is surer than a template
    if spec.color is None:
        cands = [d for d in cands if d[0].shape == spec.shape]
    else:
        cands = _narrow(cands, "shape", spec.shape)
    cands = _narrow(cands, "size", spec.size)
    if cands:
        return [(_bbox(m), d.center, d.size) for d, m in cands]
    if spec.color is None:
        return []
    blobs = _narrow(
        [b for b in detect_blobs(img, with_masks=True) if b[0].color == spec.color], "cell", spec.cell
    )
    out = []
    for _, m in blobs:
        box = _bbox(m)
        out.append((box, ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), None))
    return out


def _extent(center: tuple[float, float], size: str) -> Box:
    """The box any rotation of a ``size`` object centred at ``center`` fits in."""
    r = sv.MAX_EXTENT * sv.SIZES[size]
    return (center[0] - r, center[1] - r, center[0] + r, center[1] + r)


def _cell_box(cell: tuple[int, int]) -> Box:
    r, c = cell
    return (c / 3, r / 3, (c + 1) / 3, (r + 1) / 3)


def edit_boxes(img: np.ndarray, spec: EditSpec) -> list[Box]:
    """The normalised boxes an edit changes (before the margin); the whole image for a background."""
    if spec.kind == BACKGROUND:
        return [(0.0, 0.0, 1.0, 1.0)]
    if spec.kind == "add_object":
        return [_cell_box(spec.cell), _extent(sv.cell_center(spec.cell), spec.size or "large")]
    found = find_object(img, spec)
    if not found:
        raise XPromptError(f"could not find {spec.object_phrase()} in the image; {HINT}")
    boxes = [b for b, _, _ in found]
    if spec.kind == "move":
        for _, _, size in found:
            size = size or spec.size or "large"
            boxes += [_cell_box(spec.to), _extent(sv.cell_center(spec.to), size)]
    elif spec.kind == "resize":
        boxes += [_extent(c, spec.new_size or "large") for _, c, _ in found]
    return boxes


def _detect_view(img: np.ndarray) -> np.ndarray:
    """The square uint8 (n, n, 3) image the detector reads (resized to ``DETECT_SIDE`` when larger)."""
    from PIL import Image

    h, w = img.shape[:2]
    if h != w:
        raise XPromptError(
            f"a mask from the instruction needs a square procedural-scene image, got {w}x{h}; {HINT}"
        )
    if h > DETECT_SIDE:
        img = np.asarray(Image.fromarray(img).resize((DETECT_SIDE, DETECT_SIDE), Image.BILINEAR))
    return img


def instruction_mask(image, instruction: str, margin: int | None = None) -> np.ndarray:
    """bool (H, W): the region of ``image`` (uint8 (H, W, 3) or PIL, square) the ``instruction`` changes, as a union
    of boxes grown by ``margin`` px (default side/16); raises ``XPromptError`` when the instruction is not
    understood or its object not found."""
    from xprompt.images import as_image

    spec = parse_instruction(instruction)
    img = as_image(image, "the image")
    view = _detect_view(img)
    h, w = img.shape[:2]
    margin = max(1, max(h, w) // 16) if margin is None else int(margin)
    if margin < 0:
        raise XPromptError(f"the mask margin must be >= 0 px, got {margin}")
    m = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in edit_boxes(view, spec):
        px0, py0 = max(0, int(np.floor(x0 * w)) - margin), max(0, int(np.floor(y0 * h)) - margin)
        px1, py1 = min(w, int(np.ceil(x1 * w)) + margin), min(h, int(np.ceil(y1 * h)) + margin)
        m[py0:py1, px0:px1] = True
    return m


def instruction_masks(images: list, instructions: list[str], *, mask=None, box=None) -> list[np.ndarray]:
    """``XPrompt.edit(..., mask_from_instruction=True)``: one ``instruction_mask`` per (image, instruction)."""
    if mask is not None or box is not None:
        raise XPromptError("give a mask, a box or mask_from_instruction, not several")
    return [instruction_mask(im, t) for im, t in zip(images, instructions, strict=True)]

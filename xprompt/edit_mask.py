"""Edit masks for mask-guided editing and inpainting: loading and validation, boxes, the token mask, blending.

Design choices
* A mask is a binary image the size of the image it edits, white (or True / 1) = edit. Masks come from a file
  (PNG etc., read like any image), a PIL image, an array, or a box ``(x0, y0, x1, y1)`` in the image's pixel
  coordinates (x1, y1 exclusive). Anything else (wrong size, grey values, empty, not an image) is a one-line
  ``XPromptError``: a silently thresholded anti-aliased mask would edit pixels the user did not mark.
* The mask is fitted exactly like the image (``fit_image_any``: cover + centre crop, nearest neighbour so it
  stays binary), then lowered to the code grid: a token is editable when any pixel of its ``factor x factor``
  cell is, dilated by ``dilate`` tokens (chessboard) so the VQ decoder's receptive field around the border is
  regenerated coherently. Decoding samples only those tokens (``xprompt.sampling.MaskedGrid``).
* Blending (as BrushEdit blends): ``out = a * decoded + (1 - a) * original`` with ``a`` = 1 deep inside the
  pixel mask, ramping down over ``feather`` px towards its border, and exactly 0 outside it. The feather lies
  inside the mask, so every pixel outside the mask is bit-identical to the (fitted) input.
* Two blends (``BLENDS``). ``"mask"`` composites the decoded image over the whole mask. ``"changed"``
  composites it only over the tokens the model changed (its code differs from the query's), grown by the
  mask's dilation and cut to the mask: where the model kept the query's token, the output keeps the query's
  exact pixels instead of their VQ round trip (several dB at 64 px), so an edit is never charged for what it
  did not touch. The growth covers the decoder's receptive field, which carries a changed token into its
  neighbours' pixels. Inpainting always uses ``"mask"``: there the query's content is what is to be replaced.
* Pure numpy (chessboard distance by repeated 3x3 erosion), no I/O except reading a mask file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xprompt.errors import XPromptError


def parse_box(text: str, what: str = "--box") -> tuple[int, int, int, int]:
    """``"x0,y0,x1,y1"`` -> ints (the CLI's ``--box``; ``what`` names the field in the error)."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        box = tuple(int(p) for p in parts)
    except ValueError:
        box = ()
    if len(box) != 4:
        raise XPromptError(f"{what} must be four integers x0,y0,x1,y1 in pixels, got {text!r}")
    return box  # type: ignore[return-value]


def box_mask(box, shape: tuple[int, int]) -> np.ndarray:
    """A bool (H, W) mask, True inside ``box = (x0, y0, x1, y1)`` (pixels, x1/y1 exclusive)."""
    h, w = int(shape[0]), int(shape[1])
    try:
        x0, y0, x1, y1 = (int(v) for v in box)
    except (TypeError, ValueError):
        raise XPromptError(f"a box is four integers (x0, y0, x1, y1), got {box!r}") from None
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise XPromptError(
            f"box {x0},{y0},{x1},{y1} is not inside the {w}x{h} image with x0 < x1 and y0 < y1 "
            "(pixels, x1/y1 exclusive)"
        )
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def load_mask(mask, shape: tuple[int, int], *, box=None) -> np.ndarray:
    """A mask (path / PIL image / array, white = edit) or a ``box`` -> bool (H, W) for an image of ``shape``."""
    if (mask is None) == (box is None):
        raise XPromptError(
            "give either a mask or a box, not both" if mask is not None else "no mask or box given"
        )
    h, w = int(shape[0]), int(shape[1])
    if box is not None:
        m = box_mask(box, (h, w))
    else:
        m = _mask_array(mask)
        if m.shape != (h, w):
            raise XPromptError(
                f"the mask is {m.shape[1]}x{m.shape[0]} but the image is {w}x{h}; draw the mask on the image itself"
            )
    if not m.any():
        raise XPromptError("the mask is empty (no white pixel): mark the region to edit in white")
    return m


def masks_for(shapes: list[tuple[int, int]], mask=None, box=None) -> list[np.ndarray] | None:
    """One bool (H, W) mask per image of ``shapes`` from ``mask`` or ``box``; None when neither is given.

    ``mask``: one mask for every image, or a list/tuple with one per image; ``box``: one ``(x0, y0, x1, y1)``
    or a list of them."""
    if mask is None and box is None:
        return None
    if mask is not None and box is not None:
        raise XPromptError("give either a mask or a box, not both")
    n = len(shapes)
    if mask is not None:
        many = isinstance(mask, (list, tuple))
        items, kind = (list(mask) if many else [mask] * n), "mask"
    else:
        many = isinstance(box, (list, tuple)) and len(box) > 0 and isinstance(box[0], (list, tuple))
        items, kind = (list(box) if many else [box] * n), "box"
    if len(items) != n:
        raise XPromptError(f"give one {kind} per image (got {len(items)} for {n})")
    if kind == "mask":
        return [load_mask(m, s) for m, s in zip(items, shapes, strict=True)]
    return [load_mask(None, s, box=b) for b, s in zip(items, shapes, strict=True)]


def _mask_array(mask) -> np.ndarray:
    from xprompt.tokenizer.image_io import load_image

    if isinstance(mask, (str, Path)) or hasattr(mask, "convert"):
        try:
            arr = load_image(mask)
        except XPromptError as e:
            raise XPromptError(f"cannot read the mask: {e}") from None
    else:
        arr = np.asarray(mask)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = arr[..., :3]
        if not (rgb == rgb[..., :1]).all():
            raise XPromptError("the mask has coloured pixels; use black (keep) and white (edit) only")
        arr = rgb[..., 0]
    if arr.ndim != 2 or 0 in arr.shape or not np.issubdtype(arr.dtype, np.number):
        raise XPromptError(f"a mask is a 2-D binary image (H, W), got {arr.dtype} {arr.shape}")
    vals = set(np.unique(arr).tolist())
    top = 1 if vals <= {0, 1} else 255
    if not vals <= {0, top}:
        raise XPromptError(
            f"the mask is not binary (values {sorted(vals)[:4]}...); use black (0) = keep, white (255) = edit"
        )
    return arr == top


def fit_mask(mask: np.ndarray, target: tuple[int, int]) -> np.ndarray:
    """Fit a bool mask the way ``fit_image`` fits its image (cover + centre crop), nearest neighbour."""
    from PIL import Image

    th, tw = int(target[0]), int(target[1])
    h, w = mask.shape
    if (h, w) == (th, tw):
        return mask.copy()
    scale = max(th / h, tw / w)
    rh, rw = max(th, round(h * scale)), max(tw, round(w * scale))
    im = Image.fromarray(mask.astype(np.uint8) * 255).resize((rw, rh), Image.NEAREST)
    top, left = (rh - th) // 2, (rw - tw) // 2
    out = np.asarray(im.crop((left, top, left + tw, top + th))) > 127
    if not out.any():
        raise XPromptError(
            "the mask lies entirely outside the part of the image the model sees (centre crop)"
        )
    return out


def _dilate(m: np.ndarray, n: int) -> np.ndarray:
    """Chessboard dilation of a bool (H, W) array by ``n`` cells."""
    for _ in range(max(0, int(n))):
        p = np.pad(m, 1)
        m = np.zeros_like(m)
        for dy in range(3):
            for dx in range(3):
                m |= p[dy : dy + m.shape[0], dx : dx + m.shape[1]]
    return m


def token_mask(pixel_mask: np.ndarray, factor: int, dilate: int = 1) -> np.ndarray:
    """bool (H, W) pixels -> bool (H/f, W/f) tokens: any masked pixel in a cell, then dilated by ``dilate``."""
    f = int(factor)
    h, w = pixel_mask.shape
    if h % f or w % f:
        raise XPromptError(f"the mask is {w}x{h}, not a multiple of the image tokenizer's factor {f}")
    if dilate < 0:
        raise XPromptError(f"mask dilation must be >= 0 tokens, got {dilate}")
    cells = pixel_mask.reshape(h // f, f, w // f, f).any(axis=(1, 3))  # (h, w)
    return _dilate(cells, dilate)


BLENDS = ("mask", "changed")


def check_blend(blend: str) -> str:
    if blend not in BLENDS:
        raise XPromptError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")
    return blend


def changed_pixels(query_codes: np.ndarray, out_codes: np.ndarray, tmask: np.ndarray, factor: int,
                   grow: int = 1) -> np.ndarray:  # fmt: skip
    """bool (H, W) pixels of the ``"changed"`` blend: the tokens where ``out_codes`` differs from
    ``query_codes`` (both (h, w)), grown by ``grow`` tokens, inside the token mask ``tmask``, at ``factor``."""
    if query_codes.shape != out_codes.shape or tmask.shape != query_codes.shape:
        raise XPromptError(
            f"the changed blend needs one code grid: query {query_codes.shape}, output {out_codes.shape}, "
            f"mask {tmask.shape}"
        )
    cells = _dilate(np.asarray(query_codes) != np.asarray(out_codes), int(grow)) & tmask  # (h, w)
    f = int(factor)
    return cells.repeat(f, axis=0).repeat(f, axis=1)  # (h*f, w*f)


def feather_alpha(mask: np.ndarray, feather: int) -> np.ndarray:
    """float32 (H, W) blend weight of the decoded image: 0 outside ``mask``, (d / (feather + 1)) at chessboard
    distance d <= feather from the outside, 1 deeper inside."""
    if feather < 0:
        raise XPromptError(f"feather must be >= 0 px, got {feather}")
    alpha = np.zeros(mask.shape, np.float32)
    inner = mask.copy()
    for d in range(1, int(feather) + 2):
        alpha[inner] = min(1.0, d / (feather + 1))
        inner = ~_dilate(~inner, 1) & inner  # erode by one (the image border counts as inside)
        if not inner.any():
            break
    return alpha


def blend(original: np.ndarray, decoded: np.ndarray, mask: np.ndarray, feather: int = 2) -> np.ndarray:
    """Composite ``decoded`` into ``original`` (uint8 (H, W, 3) each) inside the bool ``mask`` with a feathered
    border; every pixel outside ``mask`` is ``original``'s, bit for bit."""
    if original.shape != decoded.shape or original.shape[:2] != mask.shape:
        raise XPromptError(
            f"blend needs one size: original {original.shape}, decoded {decoded.shape}, mask {mask.shape}"
        )
    a = feather_alpha(mask, feather)[..., None]  # (H, W, 1)
    mix = np.rint(a * decoded.astype(np.float32) + (1 - a) * original.astype(np.float32))
    return np.where(mask[..., None], np.clip(mix, 0, 255).astype(np.uint8), original)

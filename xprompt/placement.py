"""Where a user's image sits inside the model's square input, and how an output goes back to the user's size.

Design choices
* The models here are trained on square images of one size (``image_size``); an input of any size and aspect
  is processed at that size and the output is returned at the input's size and aspect (``restore``).
* ``aspect="pad"`` (the default): the image is scaled so its long side fills the model's side and the short
  side is padded (centred, the edge pixels repeated, so the pad looks like a continuation rather than a hard
  frame); nothing is squashed or cropped. ``restore`` cuts the padding off again and resizes the content back
  to the input's (H, W). A square input at the model's size is used as is, and its output is returned as is.
* ``aspect="bucket"``: Lumina-mGPT's aspect-ratio buckets (``fit_image_any``: cover + centre crop to a grid of
  at most side x side codes, ratio <= 2), for models trained on such grids. A crop cannot be undone, so the
  output covers the centre crop, at the scale of the input.
* Masks are placed exactly like their image (nearest neighbour, the pad is "keep"), so the token mask lines
  up with the pixels the model sees.
* Resampling is PIL LANCZOS for images (anti-aliased down, sharp up) and NEAREST for masks (stays binary).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xprompt.errors import XPromptError

ASPECTS = ("pad", "bucket")


@dataclass(frozen=True)
class Placement:
    """How one image was fitted: ``src_hw`` the input's (H, W), ``out_hw`` the fitted image's (H, W),
    ``box`` = (top, left, h, w) of the input's content inside the fitted image, ``restore_hw`` the size the
    output goes back to (the input's in pad mode; the centre crop's, at the input's scale, in bucket mode)."""

    src_hw: tuple[int, int]
    out_hw: tuple[int, int]
    box: tuple[int, int, int, int]
    restore_hw: tuple[int, int]
    aspect: str = "pad"


def _resize(img: np.ndarray, hw: tuple[int, int], nearest: bool = False) -> np.ndarray:
    from PIL import Image

    if img.shape[:2] == tuple(hw):
        return img.copy()
    im = Image.fromarray(np.ascontiguousarray(img))
    return np.asarray(im.resize((hw[1], hw[0]), Image.NEAREST if nearest else Image.LANCZOS))


def place(img: np.ndarray, side: int, factor: int, aspect: str = "pad") -> tuple[np.ndarray, Placement]:
    """uint8 (H, W, 3) -> (the fitted image, its ``Placement``); ``side`` is the model's image size in px."""
    from xprompt.tokenizer.image_io import fit_image_any

    if aspect not in ASPECTS:
        raise XPromptError(f"unknown aspect handling {aspect!r}; choose one of {', '.join(ASPECTS)}")
    h, w = img.shape[:2]
    if aspect == "bucket":
        n = max(1, side // factor)
        fitted = fit_image_any(img, n * n, factor, max_ratio=2.0)
        th, tw = fitted.shape[:2]
        scale = max(th / h, tw / w)  # fit_image's cover scale: the crop is (th, tw) / scale source pixels
        crop = (max(1, min(h, round(th / scale))), max(1, min(w, round(tw / scale))))
        return fitted, Placement((h, w), (th, tw), (0, 0, th, tw), crop, aspect)
    long = max(h, w)
    ch, cw = max(1, round(h * side / long)), max(1, round(w * side / long))  # content keeps the aspect ratio
    top, left = (side - ch) // 2, (side - cw) // 2
    content = _resize(img, (ch, cw))  # (ch, cw, 3)
    pads = ((top, side - ch - top), (left, side - cw - left), (0, 0))
    fitted = np.pad(content, pads, mode="edge")  # (side, side, 3)
    return fitted, Placement((h, w), (side, side), (top, left, ch, cw), (h, w), aspect)


def place_mask(mask: np.ndarray, pl: Placement) -> np.ndarray:
    """A bool (H, W) mask of the input -> bool mask of the fitted image (placed like the image)."""
    from xprompt.edit_mask import fit_mask

    if pl.aspect == "bucket":
        return fit_mask(mask, pl.out_hw)
    top, left, ch, cw = pl.box
    out = np.zeros(pl.out_hw, bool)
    small = _resize(mask.astype(np.uint8) * 255, (ch, cw), nearest=True) > 127  # (ch, cw)
    out[top : top + ch, left : left + cw] = small
    if not out.any():
        raise XPromptError(
            "the mask is too thin to survive scaling the image to the model's size; draw a larger region"
        )
    return out


def restore(img: np.ndarray, pl: Placement) -> np.ndarray:
    """An output at the fitted size -> the input's size and aspect (the padding cut off)."""
    top, left, ch, cw = pl.box
    return _resize(img[top : top + ch, left : left + cw], pl.restore_hw)


def restore_mask(mask: np.ndarray, pl: Placement) -> np.ndarray:
    """A bool mask at the fitted size -> bool at the input's size (``restore``, thresholded at half)."""
    return restore(mask.astype(np.uint8) * 255, pl) > 127

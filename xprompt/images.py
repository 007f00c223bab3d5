"""Image helpers for everything that shows images: PNG bytes and files, text tiles, labelled grids.

Used by the demo, the benchmark reports, ``xprompt data show``, ``xprompt edit --show-retrieved`` and the
stores/datasets that keep images as PNG bytes.

Design choices
* One grid layout for all of them: rows of cells of one size, an image cell resized to it with nearest
  neighbour (tiny generated images stay pixel-exact and visible), a text cell drawn as wrapped text on white,
  ``None`` left blank; optional column labels on top and a caption strip above each row; ``pad`` px of
  background between and around everything. Arrays in, a uint8 (H, W, 3) array out, so callers can test
  shapes and choose how to save.
* PNG files are written atomically (``xprompt.io_utils``): an interrupted run never leaves half an image.
* PIL is imported inside the functions, so importing this module stays cheap for the CLI.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np

from xprompt.errors import XPromptError

LINE = 12  # px per line of text (PIL's default bitmap font is 11 px high)


def as_image(x, name: str = "image") -> np.ndarray:
    """Check an RGB uint8 ``(H, W, 3)`` array (a PIL image is accepted too)."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x.convert("RGB"))  # PIL
        except AttributeError:
            raise XPromptError(
                f"{name} must be an RGB uint8 (H, W, 3) array, got {type(x).__name__}"
            ) from None
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3:
        raise XPromptError(f"{name} must be an RGB uint8 (H, W, 3) array, got {x.dtype} {x.shape}")
    return x


def png_bytes(img) -> bytes:
    """A uint8 (H, W, 3) array (or a PIL image) -> PNG file bytes."""
    from PIL import Image

    pil = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img, dtype=np.uint8))
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: str | Path, img) -> Path:
    """Write ``img`` as a PNG file, atomically."""
    from xprompt.io_utils import atomic_write_bytes

    atomic_write_bytes(path, png_bytes(img))
    return Path(path)


def text_tile(text: str, width: int, height: int) -> np.ndarray:
    """uint8 (height, width, 3): ``text`` wrapped to the width, black on white; lines that do not fit are cut."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(im)
    lines = textwrap.wrap(text, width=max(8, width // 6)) or [""]
    for i, line in enumerate(lines[: max(1, height // LINE)]):
        d.text((2, 2 + LINE * i), line, fill="black")
    return np.asarray(im)


def _cell(x, h: int, w: int, bg: int) -> np.ndarray:
    from PIL import Image

    if x is None:
        return np.full((h, w, 3), bg, np.uint8)
    if isinstance(x, str):
        return text_tile(x, w, h)
    x = np.asarray(x, dtype=np.uint8)
    if x.shape[:2] == (h, w):
        return x
    return np.asarray(Image.fromarray(x).resize((w, h), Image.NEAREST))


def image_grid(
    rows, cell: tuple[int, int], *, pad: int = 0, bg: int = 255, header=None, captions=None, strip: int = 16
) -> np.ndarray:
    """Rows of cells -> one uint8 (H, W, 3) image.

    ``cell`` is the (h, w) of every cell; a cell is an image (resized to it), a string (text) or None (blank);
    short rows are filled with blanks. ``header`` labels the columns and ``captions`` (one per row) go above
    their row, each in a strip ``strip`` px high; ``pad`` px of ``bg`` separate and surround everything.
    """
    h, w = cell
    ncol = max(len(r) for r in rows)
    width = ncol * (w + pad) + pad

    def band(tiles: list[np.ndarray]) -> np.ndarray:  # tiles of one height side by side, padded
        gap = np.full((tiles[0].shape[0], pad, 3), bg, np.uint8)
        return np.concatenate([gap] + [x for t in tiles for x in (t, gap)], axis=1)

    sep = np.full((pad, width, 3), bg, np.uint8)
    parts = [sep]
    if header is not None:
        labels = list(header) + [""] * (ncol - len(header))
        parts += [band([text_tile(str(t), w, strip) for t in labels]), sep]
    for r, row in enumerate(rows):
        if captions is not None:
            parts += [band([text_tile(captions[r], width - 2 * pad, strip)]), sep]
        cells = [_cell(x, h, w, bg) for x in row] + [_cell(None, h, w, bg)] * (ncol - len(row))
        parts += [band(cells), sep]
    return np.concatenate(parts, axis=0)

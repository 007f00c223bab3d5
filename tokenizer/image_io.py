"""Image files in, uint8 RGB arrays out; square and aspect-ratio-aware fitting to tokenizer sizes.

Design choices
* ``load_image`` reads only the header first, so a 0x0 image or one above ``max_pixels`` (a decompression
  bomb) is refused before any pixel is decoded; every failure (not an image, truncated data, unsupported
  mode) becomes one ``ImageInputError`` line naming the file.
* Mode conversion is explicit where PIL's ``convert("RGB")`` is lossy or wrong: transparency (RGBA, LA, PA,
  P with a transparency key) is composited over white; 16/32-bit integer and float grey images are rescaled
  to 8 bits (PIL would clip them); everything else (L, 1, CMYK, YCbCr, P, ...) goes through PIL. EXIF
  orientation is applied and only the first frame of an animation is read.
* ``fit_image`` scales the image to cover the target and centre-crops (no padding, no distortion), with
  LANCZOS resampling (anti-aliased downscaling).
* Aspect ratios follow Lumina-mGPT: ``crop_size_list(max_tokens, factor)`` enumerates every (H, W) whose
  code grid has at most ``max_tokens`` positions and aspect ratio <= ``max_ratio``; ``choose_crop_size``
  picks the one that keeps the largest share of the image (Lumina-mGPT's ``var_center_crop``).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xprompt.errors import ImageInputError

MAX_PIXELS = 40_000_000  # larger images are refused (decompression-bomb guard); ~6300x6300


def _to_rgb(im, name: str) -> np.ndarray:
    """Any PIL image -> uint8 (H, W, 3)."""
    from PIL import Image

    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode in ("L", "RGB") and "transparency" in im.info:
        im = im.convert("RGBA" if mode == "RGB" else "LA")
    mode = im.mode
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"), dtype=np.uint8)
    if mode.startswith("I") or mode == "F":  # I;16, I;16B, I, F: rescale instead of clipping
        arr = np.asarray(im).astype(np.float64)
        if mode == "F":
            hi = 1.0 if arr.size and np.nanmax(arr) <= 1.0 else 255.0
        else:
            hi = 255.0 if arr.size and arr.max() <= 255 else 65535.0
        grey = np.clip(np.nan_to_num(arr) / hi * 255.0, 0, 255).round().astype(np.uint8)  # (H, W)
        return np.repeat(grey[..., None], 3, axis=2)
    try:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (ValueError, OSError) as e:
        raise ImageInputError(f"{name}: cannot convert image mode {mode} to RGB ({e})") from None


def _png_header_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR (the first 24 bytes of the file), or None if it is not a PNG."""
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def load_image(path, max_pixels: int = MAX_PIXELS, name: str | None = None) -> np.ndarray:
    """Read an image file, encoded image bytes or a PIL image as uint8 (H, W, 3) RGB; bad input raises
    ``ImageInputError`` (``name`` labels bytes in messages)."""
    from PIL import Image

    if isinstance(path, Image.Image):
        return _to_rgb(path, name or "image")
    if isinstance(path, (bytes, bytearray, memoryview)):
        data = bytes(path)
        return _decode(io.BytesIO(data), name or "image data", max_pixels, data[:24])
    p = Path(path)
    name = str(p)
    if not p.exists():
        raise ImageInputError(f"{name}: file not found")
    if not p.is_file():
        raise ImageInputError(f"{name}: not a file")
    with open(p, "rb") as f:
        head = f.read(24)
    return _decode(p, name, max_pixels, head)


def _decode(src, name: str, max_pixels: int, head: bytes) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(src) as im:
                w, h = im.size  # header only: nothing decoded yet
                if w <= 0 or h <= 0:
                    raise ImageInputError(f"{name}: image has no pixels ({w}x{h})")
                if w * h > max_pixels:
                    raise ImageInputError(
                        f"{name}: image is too large ({w}x{h} = {w * h:,} pixels > {max_pixels:,}); downscale it first"
                    )
                im.seek(0)
                im.load()  # decode now, inside the error handling (truncated data fails here)
                im = ImageOps.exif_transpose(im)
                return _to_rgb(im, name)
        except ImageInputError:
            raise
        except UnidentifiedImageError:
            wh = _png_header_size(head)
            if wh is not None and 0 in wh:  # PIL refuses to identify a 0-sized PNG: say what is wrong
                raise ImageInputError(f"{name}: image has no pixels ({wh[0]}x{wh[1]})") from None
            raise ImageInputError(f"{name}: not a readable image file") from None
        except (
            Image.DecompressionBombError,
            Image.DecompressionBombWarning,
        ) as e:  # PIL's own, earlier guard
            msg = str(e).split(" could be")[0]
            raise ImageInputError(f"{name}: image is too large ({msg}); downscale it first") from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ImageInputError(f"{name}: image data is damaged or truncated ({msg})") from None


def _check_array(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ImageInputError(f"expected a uint8 (H, W, 3) image, got {img.dtype} {img.shape}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageInputError(f"image has no pixels ({img.shape[1]}x{img.shape[0]})")
    return img


def fit_image(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize (to cover) and centre-crop uint8 (H, W, 3) to ``size`` (int = square, or (H, W))."""
    from PIL import Image

    img = _check_array(img)
    th, tw = (size, size) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
    if th <= 0 or tw <= 0:
        raise ImageInputError(f"target size must be positive, got {th}x{tw}")
    h, w = img.shape[:2]
    if (h, w) == (th, tw):
        return img.copy()
    scale = max(th / h, tw / w)
    rh, rw = max(th, round(h * scale)), max(tw, round(w * scale))  # covers the target
    im = Image.fromarray(np.ascontiguousarray(img)).resize((rw, rh), Image.LANCZOS)
    top, left = (rh - th) // 2, (rw - tw) // 2
    return np.asarray(im.crop((left, top, left + tw, top + th)), dtype=np.uint8)


def crop_size_list(max_tokens: int, factor: int, max_ratio: float = 4.0) -> list[tuple[int, int]]:
    """All pixel sizes (H, W) with an (H/factor) x (W/factor) code grid of at most ``max_tokens`` positions,
    aspect ratio <= ``max_ratio``, maximal in the sense of Lumina-mGPT's ``generate_crop_size_list``."""
    if max_tokens < 1 or factor < 1 or max_ratio < 1.0:
        raise ImageInputError(
            f"need max_tokens >= 1, factor >= 1, max_ratio >= 1 (got {max_tokens}, {factor}, {max_ratio})"
        )
    sizes = []
    wp, hp = max_tokens, 1
    while wp > 0:  # walk the hyperbola hp * wp <= max_tokens from wide to tall
        if max(wp, hp) / min(wp, hp) <= max_ratio:
            sizes.append((hp * factor, wp * factor))
        if (hp + 1) * wp <= max_tokens:
            hp += 1
        else:
            wp -= 1
    return sizes


def choose_crop_size(hw: tuple[int, int] | np.ndarray, sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The (H, W) in ``sizes`` that keeps the largest share of an image of shape ``hw`` after cover-resize and
    centre crop (ties: the larger area). ``hw`` may be the image itself."""
    if isinstance(hw, np.ndarray) and hw.ndim == 3:
        hw = hw.shape[:2]
    h, w = int(hw[0]), int(hw[1])
    if h <= 0 or w <= 0:
        raise ImageInputError(f"image has no pixels ({w}x{h})")
    if not sizes:
        raise ImageInputError("no candidate crop sizes")

    def kept(s: tuple[int, int]) -> tuple[float, int]:
        rh, rw = s[0] / h, s[1] / w
        return (min(rh, rw) / max(rh, rw), s[0] * s[1])

    return tuple(max(sizes, key=kept))  # type: ignore[return-value]


def fit_image_any(img: np.ndarray, max_tokens: int, factor: int, max_ratio: float = 4.0) -> np.ndarray:
    """Fit an image of any aspect ratio to the best size from ``crop_size_list(max_tokens, factor)``."""
    img = _check_array(img)
    return fit_image(img, choose_crop_size(img, crop_size_list(max_tokens, factor, max_ratio)))

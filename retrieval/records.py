"""The store's rows: ``Record`` (one stored edit example), the metadata table's schema, image bytes in and out.

Design choices
* Split from ``store.py``: what a row of the store is, independent of FAISS and of the files, so store
  sources (``retrieval/sources.py``) can build tables in the store's schema without an index.
* Images are kept as encoded bytes in ``datasets.Image`` columns (PNG for arrays we encode, the original bytes
  otherwise) and decoded on demand through the bounded ``load_image``; a store is either without or with all
  of ``EXTRA_COLUMNS`` (nulls where a source has none), so tables of both kinds concatenate.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xprompt.errors import XPromptError
from xprompt.images import png_bytes

COLUMNS = ("instruction", "task", "source", "target", "description")
EXTRA_COLUMNS = (
    "mask",
    "turn_index",
    "img_id",
)  # optional; a store has all three or none (null where unknown)


@dataclass
class Record:
    """One stored edit example. ``source`` / ``target`` are encoded image bytes (PNG, JPEG...)."""

    id: int
    instruction: str
    task: str
    source: bytes
    target: bytes
    description: str | None = None
    mask: bytes | None = None  # encoded mask image (white = edited region), when the source set had one
    turn_index: int | None = None  # MagicBrush: 1 = the real image, >= 2 = an edit of the previous turn
    img_id: str | None = None

    def mask_array(self) -> np.ndarray | None:
        """bool (H, W): the edited region of the stored pair (white in the mask image), or None."""
        return None if self.mask is None else decode_image(self.mask).astype(np.float32).mean(-1) > 127.0

    def source_image(self) -> np.ndarray:
        return decode_image(self.source)

    def target_image(self) -> np.ndarray:
        return decode_image(self.target)

    def pair(self) -> tuple[np.ndarray, np.ndarray]:
        """(source, target) as uint8 (H, W, 3) arrays: the in-context example for RAIE."""
        return self.source_image(), self.target_image()


def encode_image(img: Any) -> bytes:
    """uint8 (H, W, 3|4|1) array, PIL image, encoded bytes or a datasets Image dict -> encoded image bytes."""
    from PIL import Image

    if isinstance(img, (bytes, bytearray)):
        return bytes(img)
    if isinstance(img, dict) and ("bytes" in img or "path" in img):
        if img.get("bytes"):
            return bytes(img["bytes"])
        if img.get("path"):
            return Path(img["path"]).read_bytes()
        raise XPromptError("image entry has neither bytes nor path")
    if isinstance(img, Image.Image):
        pil = img
    else:
        arr = np.asarray(img)
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
            raise XPromptError(f"expected a uint8 (H, W, 3) image array, got {arr.dtype} {arr.shape}")
        pil = Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)
    return png_bytes(pil)


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> uint8 (H, W, 3), bounded in pixels before decoding (``load_image``)."""
    from xprompt.errors import ImageInputError
    from xprompt.tokenizer.image_io import load_image

    try:
        return load_image(data, name="stored image")
    except ImageInputError as e:
        raise XPromptError(f"{e}; the store is corrupted") from None


def record_features(extra: bool = False):
    from datasets import Features, Image, Value

    f = {
        "instruction": Value("string"),
        "task": Value("string"),
        "source": Image(),
        "target": Image(),
        "description": Value("string"),
    }
    if extra:
        f.update({"mask": Image(), "turn_index": Value("int32"), "img_id": Value("string")})
    return Features(f)


def with_extra_columns(table):
    """``table`` with every ``EXTRA_COLUMNS`` column (null where it has none), in store order and types."""
    with quiet_datasets():
        for c in EXTRA_COLUMNS:
            if c not in table.column_names:
                table = table.add_column(c, [None] * len(table))
        table = table.select_columns([*COLUMNS, *EXTRA_COLUMNS])
        return table if table.features == record_features(True) else table.cast(record_features(True))


@contextlib.contextmanager
def quiet_datasets():
    """Silence datasets' per-operation progress bars (casting/saving a few rows is not news)."""
    import datasets
    from datasets.utils import logging as ds_logging

    was = datasets.are_progress_bars_disabled()
    level = ds_logging.get_verbosity()
    datasets.disable_progress_bars()
    ds_logging.set_verbosity_error()
    try:
        yield
    finally:
        ds_logging.set_verbosity(level)
        if not was:
            datasets.enable_progress_bars()

"""NYU Depth v2 (Silberman et al. 2012; the 654-image Eigen test split the papers report on).

Layouts
* **``datasets`` layout** (e.g. a ``save_to_disk`` or parquet snapshot of the hub's NYUv2 depth sets): columns
  ``image`` (RGB) and ``depth_map`` or ``depth`` holding **float depth in metres** (a PIL mode ``F`` image or
  a float array, H x W like the image); splits ``train`` and ``validation`` or ``test``. Integer depth
  (8/16-bit images) is refused here: its unit is unknown, use the folder layout and state the scale.
* **Folder layout**: ``ROOT/{train,test}/rgb/<stem>.{png,jpg}`` and ``ROOT/{train,test}/depth/<stem>.png``
  where every depth file is a **16-bit greyscale PNG** and ``depth_m = value / depth_scale`` (default
  ``depth_scale=1000``: millimetres, as the common NYUv2 PNG exports store it); 0 = no measurement. ``train``
  is optional. 8-bit or colour depth PNGs are refused (a visualisation, not a measurement).
Target rendering: the model answers with an image, so the target is depth as **grey nearness**
``rint((1 - min(d, cap) / cap) * 255)`` with ``cap = 10 m`` (the task suite's ``gray`` depth palette: near =
white); ``extra["depth_m"]`` keeps the float32 metres for the metrics. Evaluation uses the Eigen crop
(``EIGEN_CROP`` on the 480 x 640 frame, scaled to other sizes) and the 10 m cap (``eval/metrics_dense.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xprompt.errors import XPromptError
from xprompt.readers.base import (
    Pair,
    RealDataset,
    hf_splits,
    images_by_stem,
    load_hf,
    load_rgb,
    match_stems,
    raw_image,
)

DEPTH_CAP_M = 10.0  # NYUv2 evaluation range (Eigen et al. 2014): depth beyond 10 m is not scored
EIGEN_CROP = (45, 471, 41, 601)  # top, bottom, left, right on the 480 x 640 NYUv2 frame (Eigen et al.)
INSTRUCTION = "Predict a depth map in the gray palette."  # the suite's depth wording, gray palette
DEPTH_COLUMNS = ("depth_map", "depth")


def render_depth(depth_m: np.ndarray, cap: float = DEPTH_CAP_M) -> np.ndarray:
    """float (H, W) metres -> uint8 (H, W, 3) grey nearness (near = 255; 0 and >= cap = 0)."""
    d = np.clip(np.nan_to_num(np.asarray(depth_m, np.float64)), 0.0, cap)
    grey = np.rint((1.0 - d / cap) * 255.0).astype(np.uint8)  # (H, W)
    grey[d <= 0] = 0  # no measurement: shown as far
    return np.repeat(grey[..., None], 3, axis=2)


def depth_from_render(img: np.ndarray, cap: float = DEPTH_CAP_M) -> np.ndarray:
    """Inverse of ``render_depth`` on the mean of the channels: uint8 (H, W, 3) -> float32 (H, W) metres."""
    grey = np.asarray(img, np.float64).mean(axis=-1)  # (H, W)
    return ((1.0 - grey / 255.0) * cap).astype(np.float32)


def eigen_mask(shape: tuple[int, int]) -> np.ndarray:
    """bool (H, W): the Eigen crop, scaled from the 480 x 640 frame to ``shape``."""
    h, w = shape
    t, b, lft, r = EIGEN_CROP
    m = np.zeros((h, w), bool)
    m[round(t * h / 480) : round(b * h / 480), round(lft * w / 640) : round(r * w / 640)] = True
    return m


def _depth_array(value, where: str) -> np.ndarray:
    from PIL import Image

    if isinstance(value, Image.Image):
        if value.mode != "F":
            raise XPromptError(f"{where}: depth is a mode-{value.mode} image; the datasets layout needs float "
                               "metres (mode F) -- for integer depth PNGs use the folder layout with --depth-scale")  # fmt: skip
        value = np.asarray(value)
    arr = np.asarray(value)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
        raise XPromptError(
            f"{where}: depth must be a float (H, W) array in metres, got {arr.dtype} {arr.shape}"
        )
    return arr.astype(np.float32)


class NYUv2Folders(RealDataset):
    name, task = "nyuv2", "depth"
    train_split, test_split = "train", "test"

    def __init__(self, root, depth_scale: float = 1000.0):
        super().__init__(root)
        if depth_scale <= 0:
            raise XPromptError(f"--depth-scale must be > 0 (units per metre), got {depth_scale}")
        self.depth_scale = float(depth_scale)
        if not (self.root / "test").is_dir():
            raise XPromptError(f"nyuv2 dataset {self.root}: expected {{train,test}}/{{rgb,depth}} folders "
                               "(or a datasets directory); no test/ folder")  # fmt: skip
        if not (self.root / "train").is_dir():
            self.train_split = None
        self._index: dict[str, dict] = {}

    def _pairs(self, split: str) -> dict[str, tuple[Path, Path]]:
        if split not in self._index:
            d = self.root / self.check_split(split)
            what = f"nyuv2 {split} (layout {split}/rgb + {split}/depth)"
            rgb, dep = images_by_stem(d / "rgb", what), images_by_stem(d / "depth", what)
            self._index[split] = {k: (rgb[k], dep[k]) for k in match_stems(rgb, dep, what)}
        return self._index[split]

    def keys(self, split: str) -> list[str]:
        return list(self._pairs(split))

    def load(self, split: str, key: str) -> Pair:
        p_rgb, p_dep = self._pairs(split)[key]
        im = raw_image(p_dep)
        if im.mode not in ("I;16", "I;16B", "I;16L", "I") or p_dep.suffix.lower() != ".png":
            raise XPromptError(f"{p_dep}: depth must be a 16-bit greyscale PNG, got mode {im.mode} "
                               f"({p_dep.suffix}); 8-bit or colour depth is a visualisation, not a measurement")  # fmt: skip
        depth = np.asarray(im).astype(np.float32) / self.depth_scale  # (H, W) metres
        rgb = load_rgb(p_rgb)
        _same_size(rgb, depth, f"nyuv2 {p_rgb}")
        return Pair(key, rgb, render_depth(depth), INSTRUCTION, {"depth_m": depth, "input_path": str(p_rgb)})


class NYUv2HF(RealDataset):
    name, task = "nyuv2", "depth"

    def __init__(self, root, depth_column: str = ""):
        super().__init__(root)
        splits = hf_splits(self.root)
        self.train_split = "train" if "train" in splits else None
        tests = [s for s in ("test", "validation", "val", "all") if s in splits]
        if not tests:
            raise XPromptError(f"nyuv2 dataset {self.root}: no test/validation split (splits: {splits})")
        self.test_split = tests[0]
        self._ds: dict = {}
        self._depth_column = depth_column

    def _split(self, split: str):
        if split not in self._ds:
            ds = load_hf(self.root, self.check_split(split), "nyuv2 dataset")
            cols = ds.column_names
            dcol = self._depth_column or next((c for c in DEPTH_COLUMNS if c in cols), "")
            if "image" not in cols or dcol not in cols:
                raise XPromptError(f"nyuv2 dataset {self.root} [{split}]: needs columns image and "
                                   f"{' or '.join(DEPTH_COLUMNS)}; it has {cols}")  # fmt: skip
            self._ds[split] = (ds, dcol)
        return self._ds[split]

    def keys(self, split: str) -> list[str]:
        return [str(i) for i in range(len(self._split(split)[0]))]

    def load(self, split: str, key: str) -> Pair:
        ds, dcol = self._split(split)
        row = ds[int(key)]
        where = f"nyuv2 {self.root} [{split}] row {key}"
        depth = _depth_array(row[dcol], where)
        rgb = load_rgb(row["image"])
        _same_size(rgb, depth, where)
        return Pair(key, rgb, render_depth(depth), INSTRUCTION, {"depth_m": depth})


def _same_size(rgb: np.ndarray, depth: np.ndarray, where: str) -> None:
    if rgb.shape[:2] != depth.shape:
        raise XPromptError(f"{where}: image is {rgb.shape[1]}x{rgb.shape[0]} but depth is "
                           f"{depth.shape[1]}x{depth.shape[0]}")  # fmt: skip


def open_nyuv2(root, depth_scale: float = 1000.0, depth_column: str = "") -> RealDataset:
    """The folder layout when ``ROOT/test/rgb`` exists, else the ``datasets`` layout."""
    root = Path(root)
    if (root / "test" / "rgb").is_dir() or (root / "train" / "rgb").is_dir():
        return NYUv2Folders(root, depth_scale)
    if not root.is_dir():
        raise XPromptError(f"nyuv2 dataset {root}: no such directory")
    return NYUv2HF(root, depth_column)

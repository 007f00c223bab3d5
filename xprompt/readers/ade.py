"""ADE20K scene parsing (SceneParsing / ADEChallengeData2016, Zhou et al. 2017): 150 classes, 0 = ignore.

Layout: ``ROOT/images/{training,validation}/ADE_{train,val}_NNNNNNNN.jpg`` and
``ROOT/annotations/{training,validation}/<same stem>.png``, where ``ROOT`` is the ``ADEChallengeData2016``
folder (or its parent). An annotation is a single-channel 8-bit PNG of class indices (mode ``L``, or a
palette-indexed ``P`` PNG whose *indices* are the classes): 0 = other/unlabelled (ignored by the metric),
1..150 the ADE150 classes. RGB annotations (a colour visualisation) and values above 150 are refused.
Target rendering: class c in 1..150 -> ``ADE_COLORS[c - 1]``, a fixed palette of 150 colours on the
{0, 51, ..., 255}^3 grid (xprompt's own, at least 51 apart per channel so nearest-colour decoding survives
VQ noise; not Painter's palette); ignore -> black, which is not a class colour. ``extra["labels"]`` keeps the
int64 class map (0..150).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xprompt.errors import XPromptError
from xprompt.readers.base import Pair, RealDataset, images_by_stem, load_rgb, match_stems, raw_image

NUM_CLASSES = 150
INSTRUCTION = (
    "Colour every pixel by the class of the object it belongs to."  # the suite's segmentation wording
)


def _ade_colors() -> np.ndarray:
    """uint8 (150, 3): the grid {0, 51, ..., 255}^3 without black, in a fixed shuffled order (so that
    neighbouring class ids do not get near-identical colours in a visualisation)."""
    levels = np.arange(6) * 51
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)[1:]  # (215, 3)
    order = np.random.default_rng(150).permutation(len(grid))[:NUM_CLASSES]
    return grid[order].astype(np.uint8)


ADE_COLORS = _ade_colors()


def render_labels(labels: np.ndarray) -> np.ndarray:
    """int (H, W) class ids 0..150 -> uint8 (H, W, 3) colours (0 -> black)."""
    lut = np.concatenate([np.zeros((1, 3), np.uint8), ADE_COLORS])  # (151, 3)
    return lut[np.asarray(labels, np.int64)]


class ADE20K(RealDataset):
    name, task = "ade20k", "segmentation"
    train_split, test_split = "training", "validation"

    def __init__(self, root):
        root = Path(root)
        if (root / "ADEChallengeData2016").is_dir():
            root = root / "ADEChallengeData2016"
        super().__init__(root)
        for sub in ("images", "annotations"):
            if not (root / sub).is_dir():
                raise XPromptError(f"ade20k dataset {root}: expected ADEChallengeData2016/{{images,annotations}}/"
                                   f"{{training,validation}}; no {sub}/ folder")  # fmt: skip
        if not (root / "images" / "training").is_dir():
            self.train_split = None
        self._index: dict[str, dict] = {}

    def _pairs(self, split: str) -> dict[str, tuple[Path, Path]]:
        if split not in self._index:
            what = f"ade20k {split} (images/{split} + annotations/{split})"
            self.check_split(split)
            ims = images_by_stem(self.root / "images" / split, what)
            ann = images_by_stem(self.root / "annotations" / split, what)
            self._index[split] = {k: (ims[k], ann[k]) for k in match_stems(ims, ann, what)}
        return self._index[split]

    def keys(self, split: str) -> list[str]:
        return list(self._pairs(split))

    def load(self, split: str, key: str) -> Pair:
        p_im, p_ann = self._pairs(split)[key]
        im = raw_image(p_ann)
        if im.mode not in ("L", "P"):
            raise XPromptError(f"{p_ann}: an ADE20K annotation must be a single-channel class-index PNG (mode L "
                               f"or P), got mode {im.mode}; a colour visualisation cannot be scored")  # fmt: skip
        labels = np.asarray(im).astype(np.int64)  # (H, W): P mode gives the palette indices
        if labels.max(initial=0) > NUM_CLASSES:
            raise XPromptError(
                f"{p_ann}: class index {labels.max()} > {NUM_CLASSES}; ADE150 annotations hold 0..150"
            )
        rgb = load_rgb(p_im)
        if rgb.shape[:2] != labels.shape:
            raise XPromptError(f"ade20k {p_im}: image is {rgb.shape[1]}x{rgb.shape[0]}, annotation is "
                               f"{labels.shape[1]}x{labels.shape[0]}")  # fmt: skip
        return Pair(key, rgb, render_labels(labels), INSTRUCTION, {"labels": labels, "input_path": str(p_im)})

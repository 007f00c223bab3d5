"""Instruction-editing sets saved with ``datasets`` (``save_to_disk`` directories or hub parquet snapshots).

Layouts (column names exactly as the hub releases them; images decode to PIL through ``datasets``)
* **MagicBrush** (Zhang et al. 2023, ``osunlp/MagicBrush``): ``img_id`` (str), ``turn_index`` (int, 1 = the
  real COCO image, >= 2 = an edit of the previous turn's output), ``source_img``, ``mask_img`` (free-form
  edit region: **white** = edited; a transparent region, DALL-E 2's convention, composites to white too),
  ``instruction``, ``target_img``; splits ``train`` (8,807) and ``dev`` (528). Evaluation runs on ``dev``
  (or ``test`` when a copy has one).
* **InstructPix2Pix** (Brooks et al. 2023, ``timbrooks/instructpix2pix-clip-filtered``): ``original_image``,
  ``edited_image``, ``edit_prompt``, with the captions ``original_prompt`` / ``edited_prompt`` used by
  CLIP-T / CLIP-dir; one split ``train``: it is both the training and the test split, and evaluation
  examples come from other rows than the query.
* **Any other set** (``edits``): ``--columns source=COL,target=COL,instruction=COL`` plus optional
  ``mask=COL``, ``turn=COL``, ``caption_in=COL``, ``caption_out=COL``.
A missing column is refused with one line listing the columns the set has. ``extra`` carries ``mask``
(bool (H, W)), ``turn_index``, ``img_id``, ``caption_in`` / ``caption_out`` when the set has them.
"""

from __future__ import annotations

import numpy as np

from xprompt.errors import XPromptError
from xprompt.readers.base import Pair, RealDataset, hf_splits, load_hf, load_rgb

ROLES = ("source", "target", "instruction", "mask", "turn", "img_id", "caption_in", "caption_out")
REQUIRED = ("source", "target", "instruction")
MAGICBRUSH_COLUMNS = {"source": "source_img", "target": "target_img", "instruction": "instruction",
                      "mask": "mask_img", "turn": "turn_index", "img_id": "img_id"}  # fmt: skip
IP2P_COLUMNS = {"source": "original_image", "target": "edited_image", "instruction": "edit_prompt",
                "caption_in": "original_prompt", "caption_out": "edited_prompt"}  # fmt: skip


def parse_columns(spec: str) -> dict[str, str]:
    """``"source=a,target=b,instruction=c"`` -> ``{role: column}`` (roles: ``ROLES``)."""
    out = {}
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        role, sep, col = part.partition("=")
        if not sep or role not in ROLES or not col:
            raise XPromptError(
                f"--columns {spec!r}: expected ROLE=COLUMN pairs with ROLE in {', '.join(ROLES)}"
            )
        out[role] = col
    missing = [r for r in REQUIRED if r not in out]
    if missing:
        raise XPromptError(f"--columns {spec!r} lacks {', '.join(missing)} (needed: {', '.join(REQUIRED)})")
    return out


def mask_from_image(img) -> np.ndarray:
    """bool (H, W): white (mean RGB > 127) = the edited region."""
    return load_rgb(img).astype(np.float32).mean(-1) > 127.0


class EditSet(RealDataset):
    """Rows of a ``datasets`` editing set, with ``columns`` mapping roles to its column names."""

    task = "edit"

    def __init__(self, root, columns: dict[str, str], name: str = "edits"):
        self.name = name
        super().__init__(root)
        self.columns = dict(columns)
        splits = hf_splits(self.root)
        self.train_split = "train" if "train" in splits else None
        tests = [s for s in ("test", "dev", "validation", "val", "all") if s in splits]
        self.test_split = tests[0] if tests else (splits[0] if len(splits) == 1 else "")
        if not self.test_split:
            raise XPromptError(f"{name} dataset {self.root}: no test/dev/validation split among {splits}")
        # one "train" split (InstructPix2Pix): it trains, and evaluations draw examples from its other rows
        self._ds: dict = {}

    def _split(self, split: str):
        if split not in self._ds:
            ds = load_hf(self.root, self.check_split(split), f"{self.name} dataset")
            missing = [c for c in self.columns.values() if c not in ds.column_names]
            if missing:
                raise XPromptError(f"{self.name} dataset {self.root} [{split}] lacks column(s) {missing}; it has "
                                   f"{ds.column_names} (map others with --columns ROLE=COLUMN)")  # fmt: skip
            self._ds[split] = ds
        return self._ds[split]

    def table(self, split: str):
        """The split as a ``datasets.Dataset`` (columns checked; images undecoded in Arrow), for bulk copies."""
        return self._split(split)

    def keys(self, split: str) -> list[str]:
        return [str(i) for i in range(len(self._split(split)))]

    def load(self, split: str, key: str) -> Pair:
        row = self._split(split)[int(key)]
        c = self.columns
        src, tgt = load_rgb(row[c["source"]]), load_rgb(row[c["target"]])
        extra: dict = {}
        if "mask" in c and row[c["mask"]] is not None:
            extra["mask"] = mask_from_image(row[c["mask"]])
        if "turn" in c:
            extra["turn_index"] = int(row[c["turn"]])
        for role in ("img_id", "caption_in", "caption_out"):
            if role in c and row[c[role]] is not None:
                extra[role] = str(row[c[role]])
        return Pair(key, src, tgt, str(row[c["instruction"]]), extra)


def magicbrush(root) -> EditSet:
    return EditSet(root, MAGICBRUSH_COLUMNS, "magicbrush")


def instructpix2pix(root) -> EditSet:
    return EditSet(root, IP2P_COLUMNS, "instructpix2pix")

"""Evaluation samples: ``Item`` and where items come from (the task suite's eval instances, a MagicBrush set).

Design choices
* Split from ``benchmarks.py``: an ``Item`` is what scoring needs of a sample (query, target, example pair,
  the scene and captions when the suite made it), whatever its source, so scoring, rows and controls share it
  without depending on the runner. Real datasets (``eval/real.py``) build ``Item``s too.
* Suite items come from ``make_eval_instances`` (evaluation photos and scene seeds disjoint from training);
  ``xprompt.train`` is imported inside the functions, as everywhere in ``xprompt.eval``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xprompt.errors import XPromptError


@dataclass
class Item:
    """One evaluation sample (a task-suite ``Instance`` or a MagicBrush row, reduced to what scoring needs)."""

    task: str
    instruction: str
    query: Any  # uint8 image, or the caption for t2i
    target: np.ndarray
    example: tuple[np.ndarray, np.ndarray] | None = None
    params: dict = field(default_factory=dict)
    scene_before: dict | None = None
    scene_after: dict | None = None
    caption_in: str | None = None
    caption_out: str | None = None


def _captions(inst) -> tuple[str | None, str | None]:
    from xprompt.train import scenes

    cap = lambda d: scenes.caption(scenes.Scene.from_dict(d)) if d else None
    return cap(inst.scene_before), cap(inst.scene_after)


def suite_items(task: str, n: int, size: int, seed: int) -> list[Item]:
    from xprompt.train.tasks import make_eval_instances

    out = []
    for inst in make_eval_instances(task, n, size, seed):
        ci, co = _captions(inst)
        out.append(Item(task, inst.instruction, inst.query, inst.target, (inst.example_input, inst.example_output),
                        dict(inst.params), inst.scene_before, inst.scene_after, ci, co))  # fmt: skip
    return out


def magicbrush_items(path: str, n: int, split: str = "") -> list[Item]:
    """Rows of a local MagicBrush-format dataset (``datasets`` dir or parquet files), read through
    ``xprompt.readers.edits``: ``source_img``, ``target_img``, ``instruction``, and the captions
    ``input_caption`` / ``output_caption`` (CLIP-T / CLIP-dir) when the set has them."""
    from xprompt.readers.edits import EditSet

    root = Path(path)
    if not root.is_dir():
        raise XPromptError(f"--magicbrush {root}: not a directory")
    cols = {"source": "source_img", "target": "target_img", "instruction": "instruction"}
    ds = EditSet(root, cols, "magicbrush")
    key = ds.check_split(split or ds.test_split)
    have = ds.table(key).column_names  # checks the required columns
    caps = {
        r: c for r, c in (("caption_in", "input_caption"), ("caption_out", "output_caption")) if c in have
    }
    if caps:
        ds = EditSet(root, {**cols, **caps}, "magicbrush")
    items = []
    for k in ds.keys(key)[:n]:
        p = ds.load(key, k)
        items.append(Item("magicbrush", p.instruction, p.input, p.target, caption_in=p.extra.get("caption_in"),
                          caption_out=p.extra.get("caption_out")))  # fmt: skip
    return items

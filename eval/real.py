"""Real datasets in the ``unseen`` / ``seen`` benchmarks: ``xprompt eval unseen --dataset lol=PATH ...``.

Design choices
* One task per dataset, scored with the metrics its papers report (``SPECS``: PSNR/SSIM on LOL and Rain100,
  RMSE/AbsRel/delta1 on NYUv2, mIoU on ADE20K, L1/L2/CLIP-I/DINO/CLIP-T on edit sets), at the dataset's own
  resolution: the query goes to the model as it is (the pipeline fits it to the model's token budget,
  keeping the aspect ratio), and every output is resized back to the ground truth's size before scoring.
* **Queries**: the first ``--limit`` samples of the test split in the reader's order (natural file order or
  row order), so ``--limit`` grows a fixed prefix and the full split is the paper's protocol.
* **In-context example** for query i: a pair drawn with ``--seed`` from the training split when the set has
  one, otherwise from the other test samples (never the query itself). ``wrong`` shows the example of the
  *next* dataset given (needs two ``--dataset``); ``wrong-inst`` another draw from the same pool;
  ``identity`` the example input as its own output. Every example row records ``{"split", "key"}`` per sample.
* The report's ``datasets`` entry holds each dataset's path, file-list fingerprint, splits used and the
  example-selection seed, so two reports can tell whether they ran on the same files and examples.
"""

from __future__ import annotations

import numpy as np

from xprompt.errors import XPromptError
from xprompt.eval.eval_config import TaskSpec
from xprompt.eval.items import Item

_LOWLEVEL = ("psnr", "ssim", "changed_psnr", "closer")
SPECS = {
    "lowlevel": _LOWLEVEL,
    "depth": ("depth_rmse", "absrel", "delta1"),
    "segmentation": ("ade_miou",),
    "edit": ("l1", "l2", "clip_i", "dino", "clip_t", "clip_dir"),
}
LABELS = {"lol": "LOL", "rain100h": "Rain100H", "rain100l": "Rain100L", "nyuv2": "NYUv2 depth",
          "ade20k": "ADE20K", "magicbrush": "MagicBrush", "instructpix2pix": "InstructPix2Pix",
          "edits": "Edit set", "paired": "Paired folders"}  # fmt: skip
ROWS = ("none", "full", "xp", "wrong", "wrong-inst", "identity")


def default_rows(n_datasets: int) -> list[str]:
    return ["none", "full", "xp", "wrong" if n_datasets > 1 else "identity"]


def check_rows(rows: list[str], n_datasets: int) -> None:
    bad = [r for r in rows if r not in ROWS]
    if bad:
        raise XPromptError(f"row(s) {bad} do not apply to --dataset runs; choose from {list(ROWS)}")
    if "wrong" in rows and n_datasets < 2:
        raise XPromptError("the wrong row shows another dataset's example: give two --dataset, or use "
                           "--rows ...,identity / wrong-inst")  # fmt: skip


class RealSuite:
    """The opened datasets of one run, their items and example pairs (seeded, reproducible)."""

    def __init__(self, cfg):
        from xprompt.readers import open_dataset, open_paired, parse_spec

        self.cfg = cfg
        self.sets = []
        for spec in cfg.datasets:
            name, path = parse_spec(spec)
            self.sets.append(open_dataset(name, path, columns=cfg.columns, depth_scale=cfg.depth_scale,
                                          instruction=cfg.instruction))  # fmt: skip
        if cfg.input_dir or cfg.target_dir:
            if not (cfg.input_dir and cfg.target_dir):
                raise XPromptError(
                    "--input-dir and --target-dir go together (pairs are matched by file stem)"
                )
            self.sets.append(open_paired(cfg.input_dir, cfg.target_dir, cfg.instruction))
        names = [d.name for d in self.sets]
        if len(set(names)) != len(names):
            raise XPromptError(f"dataset given twice: {names}")
        self._items: dict[int, list[Item]] = {}
        self._examples: dict[tuple[int, int], tuple[list, list[dict]]] = {}

    @property
    def specs(self) -> list[TaskSpec]:
        return [TaskSpec(d.name, LABELS.get(d.name, d.name), SPECS[d.task]) for d in self.sets]

    def items(self, ti: int) -> list[Item]:
        if ti not in self._items:
            ds = self.sets[ti]
            keys = ds.keys(ds.test_split)[: self.cfg.limit]
            self._items[ti] = [self._item(ds, ds.load(ds.test_split, k)) for k in keys]
            examples, _ = self.examples(ti, 0, len(self._items[ti]))
            for it, ex in zip(self._items[ti], examples, strict=True):
                it.example = ex
        return self._items[ti]

    @staticmethod
    def _item(ds, pair) -> Item:
        params = {"dataset": ds.name, "key": pair.key, **{k: pair.extra[k] for k in ("depth_m", "labels", "mask")
                                                           if k in pair.extra}}  # fmt: skip
        return Item(ds.name, pair.instruction, pair.input, pair.target, None, params,
                    caption_in=pair.extra.get("caption_in"), caption_out=pair.extra.get("caption_out"))  # fmt: skip

    def examples(self, ti: int, draw: int, n: int) -> tuple[list, list[dict]]:
        """Example pairs for the first ``n`` queries of dataset ``ti`` and where each came from; ``draw`` 0 is
        the in-context example, 1 the ``wrong-inst`` control (an independent draw from the same pool)."""
        if (ti, draw) not in self._examples:
            ds = self.sets[ti]
            test_keys = ds.keys(ds.test_split)
            split = ds.train_split or ds.test_split
            pool = ds.keys(split)
            rng = np.random.default_rng([self.cfg.seed, ti, draw])
            pairs, src = [], []
            for q in test_keys[:n]:
                cand = [k for k in pool if k != q] if split == ds.test_split else pool
                if not cand:
                    raise XPromptError(f"{ds.name} {ds.root}: one test pair and no training split, so there is "
                                       "no in-context example that is not the query")  # fmt: skip
                k = cand[int(rng.integers(len(cand)))]
                p = ds.load(split, k)
                pairs.append((p.input, p.target))
                src.append({"dataset": ds.name, "split": split, "key": k})
            self._examples[(ti, draw)] = (pairs, src)
        return self._examples[(ti, draw)]

    def row_examples(self, ti: int, row: str, items: list[Item]) -> tuple[list, list[dict] | None]:
        n = len(items)
        if row == "none":
            return [None] * n, None
        if row in ("full", "xp"):
            return self.examples(ti, 0, n)
        if row == "wrong-inst":
            return self.examples(ti, 1, n)
        if row == "identity":
            pairs, src = self.examples(ti, 0, n)
            return [(a, a) for a, _ in pairs], [{**s, "output": "input"} for s in src]
        if row == "wrong":  # the next dataset's example for query i (cycled when it has fewer test samples)
            oi = (ti + 1) % len(self.sets)
            other = self.items(oi)
            pairs, src = self.examples(oi, 0, len(other))
            return [pairs[i % len(pairs)] for i in range(n)], [src[i % len(src)] for i in range(n)]
        raise XPromptError(f"row {row!r} does not apply to --dataset runs")

    def describe(self) -> list[dict]:
        return [{**d.describe(), "test_split": d.test_split, "example_split": d.train_split or d.test_split,
                 "example_seed": self.cfg.seed, "n": len(self._items.get(i, []))}
                for i, d in enumerate(self.sets)]  # fmt: skip

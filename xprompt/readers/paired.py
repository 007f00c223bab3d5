"""Paired-folder restoration sets: LOL (low-light), Rain100H / Rain100L (deraining), and any two folders
paired by file stem.

Layouts (every image an RGB file: png, jpg, bmp, tif, webp; the target is the clean image)
* **LOL** (Wei et al. 2018, "LOLdataset"): ``ROOT/our485/{low,high}/N.png`` is the training split (485
  pairs), ``ROOT/eval15/{low,high}/N.png`` the test split (15 pairs); a low and a high file share a name.
* **Rain100H / Rain100L** (Yang et al. 2017): either ``ROOT/{train,test}/<in>/`` + ``<out>/`` or, for a
  test-only copy, ``ROOT/<in>/`` + ``<out>/`` directly, where ``<in>/<out>`` is ``rain/norain`` (the
  original release: ``rain/rain-001.png`` <-> ``norain/norain-001.png``; the training copy's
  ``rain/norain-1x2.png`` <-> ``norain/norain-1.png`` also pairs: a leading ``rain-``/``norain-`` and a
  trailing ``x2`` are dropped from the stem) or ``input/target`` (the MPRNet/Restormer copies: equal stems).
* **Generic** (``paired``): an input folder and a target folder whose files pair by equal stem; test split
  only, so in-context examples come from the other pairs.
A file without a partner, a missing folder or an empty folder is refused with one line naming it.
"""

from __future__ import annotations

import re
from pathlib import Path

from xprompt.errors import XPromptError
from xprompt.readers.base import Pair, RealDataset, images_by_stem, load_rgb, match_stems

_RAIN_PREFIX = re.compile(r"^(no)?rain[-_]")


class PairedFolders(RealDataset):
    """Test/train pairs from ``{split: (input_dir, target_dir)}``, paired by (normalised) file stem."""

    task = "lowlevel"
    instruction = ""

    def __init__(self, root, folders: dict[str, tuple[Path, Path]], instruction: str = ""):
        super().__init__(root)
        self.instruction = instruction or self.instruction
        self._folders = folders
        self._index: dict[str, dict[str, tuple[Path, Path]]] = {}

    def _stem(self, stem: str) -> str:
        return stem

    def _pairs(self, split: str) -> dict[str, tuple[Path, Path]]:
        if split not in self._index:
            d_in, d_out = self._folders[self.check_split(split)]
            what = f"{self.name} {split}"
            ins = {self._stem(k): p for k, p in images_by_stem(d_in, what).items()}
            outs = {self._stem(k): p for k, p in images_by_stem(d_out, what).items()}
            keys = match_stems(ins, outs, what)
            self._index[split] = {k: (ins[k], outs[k]) for k in keys}
        return self._index[split]

    def keys(self, split: str) -> list[str]:
        return list(self._pairs(split))

    def load(self, split: str, key: str) -> Pair:
        p_in, p_out = self._pairs(split)[key]
        x, y = load_rgb(p_in), load_rgb(p_out)
        if x.shape != y.shape:
            raise XPromptError(f"{self.name}: {p_in} is {x.shape[1]}x{x.shape[0]} but its target {p_out} is "
                               f"{y.shape[1]}x{y.shape[0]}; a pair must have one size")  # fmt: skip
        return Pair(key, x, y, self.instruction, {"input_path": str(p_in), "target_path": str(p_out)})


def _need(folder: Path, what: str, found_in: Path) -> Path:
    if not folder.is_dir():
        have = sorted(p.name for p in found_in.iterdir() if p.is_dir()) if found_in.is_dir() else []
        raise XPromptError(f"{what}: expected folder {folder} (found folders {have})")
    return folder


class LOL(PairedFolders):
    name = "lol"
    train_split, test_split = "train", "test"
    instruction = (
        "Brighten this dark image."  # the suite's low_light_enhance wording (train/tasks_lowlevel.py)
    )

    def __init__(self, root, instruction: str = ""):
        root = Path(root)
        what = f"lol dataset {root} (layout our485|eval15/{{low,high}})"
        folders = {
            split: tuple(_need(root / sub / k, what, root / sub) for k in ("low", "high"))
            for split, sub in (("train", "our485"), ("test", "eval15"))
        }
        super().__init__(root, folders, instruction)


class Rain100(PairedFolders):
    name = "rain100"
    train_split, test_split = "train", "test"
    instruction = "Remove the rain from this image."  # the suite's derain wording

    def __init__(self, root, instruction: str = "", name: str = "rain100"):
        root = Path(root)
        self.name = name
        super().__init__(root, self._find(root), instruction)

    def _find(self, root: Path) -> dict[str, tuple[Path, Path]]:
        def pair_in(d: Path):
            for a, b in (("rain", "norain"), ("input", "target")):
                if (d / a).is_dir() and (d / b).is_dir():
                    return d / a, d / b
            return None

        if not root.is_dir():
            raise XPromptError(f"{self.name} dataset {root}: not a directory")
        splits = {s: pair_in(root / s) for s in ("train", "test") if (root / s).is_dir()}
        if splits.get("test"):
            if not splits.get("train"):
                self.train_split = None
            return {s: p for s, p in splits.items() if p}
        direct = pair_in(root)
        if direct:
            self.train_split = None
            return {"test": direct}
        have = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise XPromptError(f"{self.name} dataset {root}: expected [train|test/]rain+norain or input+target "
                           f"folders, found {have}")  # fmt: skip

    def _stem(self, stem: str) -> str:
        s = _RAIN_PREFIX.sub("", stem)
        return s.removesuffix("x2")


class GenericPairs(PairedFolders):
    name = "paired"
    train_split, test_split = None, "test"
    instruction = "Transform this image like the example."

    def __init__(self, input_dir, target_dir, instruction: str = ""):
        d_in, d_out = Path(input_dir), Path(target_dir)
        for d, flag in ((d_in, "--input-dir"), (d_out, "--target-dir")):
            if not d.is_dir():
                raise XPromptError(f"{flag} {d}: not a directory")
        super().__init__(d_in, {"test": (d_in, d_out)}, instruction)
        self._target_root = d_out

    def fingerprint(self) -> str:
        from xprompt.readers.base import file_list_fingerprint

        return file_list_fingerprint(self.root)[:8] + file_list_fingerprint(self._target_root)[:8]

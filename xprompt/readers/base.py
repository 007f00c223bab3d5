"""What every dataset reader shares: the ``Pair`` record, the ``RealDataset`` interface, file listing, the
file-list fingerprint and the loading of ``datasets`` directories.

Design choices
* A reader is **lazy**: ``keys(split)`` lists the samples (file stems or row indices) without decoding any
  pixel, ``load(split, key)`` decodes one ``Pair``. Real sets hold thousands of images and an evaluation
  reads a handful.
* A ``Pair`` is what every consumer needs: ``input`` and ``target`` as uint8 (H, W, 3) RGB at the dataset's
  own resolution (the *rendered* target for dense tasks: grey nearness for depth, class colours for
  segmentation), the instruction, and ``extra`` with the raw ground truth (``depth_m``: float32 metres,
  ``labels``: int class ids, ``mask``: bool edit mask, ``turn_index``, captions). Metrics read ``extra``.
* The **fingerprint** is a SHA-256 over the sorted relative paths and byte sizes of every file under the
  dataset root, so two reports can say whether they ran on the same files without hashing gigabytes.
* Layout problems raise ``XPromptError`` with one line naming the path, what was expected and what was found.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xprompt.errors import XPromptError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Pair:
    key: str  # file stem or row index: unique within its split
    input: np.ndarray  # uint8 (H, W, 3)
    target: np.ndarray  # uint8 (H, W, 3): the image a model should produce
    instruction: str
    extra: dict = field(default_factory=dict)  # raw ground truth: depth_m, labels, mask, turn_index, captions


class RealDataset:
    """A dataset on disk: ``name`` (e.g. ``lol``), ``task`` (the metric family: ``lowlevel``, ``depth``,
    ``segmentation``, ``edit``), ``root``, ``splits`` (train split first when there is one)."""

    name: str = ""
    task: str = ""
    train_split: str | None = None  # the split in-context examples and training pairs come from
    test_split: str = ""  # the split evaluations run on

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.exists():
            raise XPromptError(f"{self.name} dataset {self.root}: no such directory")

    @property
    def splits(self) -> list[str]:
        return list(dict.fromkeys(s for s in (self.train_split, self.test_split) if s))

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise XPromptError(
                f"{self.name} dataset {self.root} has no split {split!r}; it has {self.splits}"
            )
        return split

    def keys(self, split: str) -> list[str]:
        raise NotImplementedError

    def load(self, split: str, key: str) -> Pair:
        raise NotImplementedError

    def fingerprint(self) -> str:
        return file_list_fingerprint(self.root)

    def describe(self) -> dict:
        """What a report records: the dataset, its path and a fingerprint of its file list."""
        return {"name": self.name, "task": self.task, "path": str(self.root.resolve()),
                "fingerprint": self.fingerprint(), "splits": self.splits}  # fmt: skip


def file_list_fingerprint(root: Path) -> str:
    """sha256 over ``relative/path\\tsize`` of every file under ``root`` (sorted); 16 hex digits."""
    h = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for p in files:
        rel = p.name if p == root else p.relative_to(root).as_posix()
        h.update(f"{rel}\t{p.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def images_by_stem(folder: Path, what: str) -> dict[str, Path]:
    """``{stem: path}`` of the image files directly in ``folder``; two files with one stem are refused."""
    if not folder.is_dir():
        raise XPromptError(f"{what}: expected a folder {folder}, it does not exist")
    out: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
            if p.stem in out:
                raise XPromptError(
                    f"{what}: {out[p.stem].name} and {p.name} share the stem {p.stem!r}; keep one"
                )
            out[p.stem] = p
    if not out:
        raise XPromptError(f"{what}: no image files ({', '.join(IMAGE_EXTS)}) in {folder}")
    return out


def match_stems(inputs: dict[str, Path], targets: dict[str, Path], what: str) -> list[str]:
    """The shared stems, refusing any input or target without a partner (names one of each kind)."""
    lone_in, lone_tg = sorted(set(inputs) - set(targets)), sorted(set(targets) - set(inputs))
    if lone_in:
        raise XPromptError(f"{what}: input {inputs[lone_in[0]]} has no target partner (same file stem); "
                           f"{len(lone_in)} input(s) unmatched")  # fmt: skip
    if lone_tg:
        raise XPromptError(f"{what}: target {targets[lone_tg[0]]} has no input partner (same file stem); "
                           f"{len(lone_tg)} target(s) unmatched")  # fmt: skip
    return sorted(inputs, key=_natural)


def _natural(s: str):
    """Sort key putting ``2`` before ``10`` (LOL and Rain100 number their files)."""
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def load_rgb(path: Path) -> np.ndarray:
    from xprompt.tokenizer.image_io import load_image

    return load_image(path)


def raw_image(path: Path):
    """A PIL image with its pixels decoded and its mode untouched (depth PNGs, label maps)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise XPromptError(f"{path}: not a readable image ({type(e).__name__})") from None


def load_hf(root: Path, split: str, what: str):
    """A split of a ``datasets`` directory (``save_to_disk``, a DatasetDict or one Dataset) or of a folder of
    parquet files (a hub snapshot: ``data/<split>-*.parquet``), without any download."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from datasets import DatasetDict, load_dataset, load_from_disk

    parquet = sorted(root.rglob("*.parquet"))
    if parquet:  # only the requested split's files are read (datasets converts them into its cache once)
        by_split: dict[str, list[str]] = {}
        for f in parquet:
            by_split.setdefault(_parquet_split(f), []).append(str(f))
        if split not in by_split:
            raise XPromptError(f"{what} {root} has no split {split!r}; splits: {', '.join(sorted(by_split))}")
    try:
        if parquet:
            ds = load_dataset("parquet", data_files=by_split[split], split="train")
        else:
            ds = load_from_disk(str(root))
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds
        raise XPromptError(
            f"{what} {root}: not a datasets directory or parquet folder ({type(e).__name__})"
        ) from None
    if not isinstance(ds, DatasetDict):
        return ds
    if split not in ds:
        raise XPromptError(f"{what} {root} has no split {split!r}; splits: {', '.join(ds)}")
    return ds[split]


def _parquet_split(f: Path) -> str:
    """The split of a hub parquet file: ``data/dev-00000-of-00004-<hash>.parquet`` -> ``dev``."""
    return f.name.split("-")[0].split(".")[0]


def hf_splits(root: Path) -> list[str]:
    """The split names of a ``datasets`` directory or parquet folder (``["all"]`` for a single Dataset)."""
    import json

    parquet = sorted(root.rglob("*.parquet"))
    if parquet:
        return sorted({_parquet_split(f) for f in parquet})
    dd = root / "dataset_dict.json"
    if dd.is_file():
        return list(json.loads(dd.read_text())["splits"])
    if (root / "dataset_info.json").is_file() or (root / "state.json").is_file():
        return ["all"]
    raise XPromptError(
        f"{root}: not a datasets directory (no dataset_dict.json / state.json) nor a parquet folder"
    )

"""Readers for the public datasets users already have on disk (no download, ever).

One small module per family, each documenting the exact layout it accepts and refusing anything else with
one ``XPromptError`` line: ``paired`` (LOL, Rain100H/L, any two folders by stem), ``nyu`` (NYUv2 depth),
``ade`` (ADE20K), ``edits`` (MagicBrush, InstructPix2Pix, ``--columns`` for others). They live in the core
package because evaluation (``xprompt.eval``), dataset building (``xprompt.train``) and store building
(``xprompt.retrieval``) all read them; they import nothing but ``xprompt`` core, PIL and ``datasets``.

``open_dataset("lol", PATH)`` -> a ``RealDataset``: ``keys(split)``, ``load(split, key) -> Pair``,
``train_split`` / ``test_split``, ``task`` (metric family) and ``describe()`` (path + file-list fingerprint).
``parse_spec("lol=PATH")`` splits a command-line ``NAME=PATH``.
"""

from __future__ import annotations

from pathlib import Path

from xprompt.errors import XPromptError
from xprompt.readers.base import Pair, RealDataset, file_list_fingerprint  # noqa: F401

DATASETS = ("lol", "rain100h", "rain100l", "nyuv2", "ade20k", "magicbrush", "instructpix2pix", "edits")


def parse_spec(spec: str, flag: str = "--dataset") -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    name = name.strip().lower()
    if not sep or not path:
        raise XPromptError(f"{flag} {spec!r}: expected NAME=PATH with NAME in {', '.join(DATASETS)}")
    if name not in DATASETS:
        raise XPromptError(f"{flag} {spec!r}: unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return name, path


def open_dataset(
    name: str, path: str | Path, *, columns: str = "", depth_scale: float = 1000.0, instruction: str = ""
) -> RealDataset:
    """The reader of dataset ``name`` on ``path`` (layout checked now; pixels read on ``load``)."""
    from xprompt.readers import ade, edits, nyu, paired

    if name == "lol":
        return paired.LOL(path, instruction)
    if name in ("rain100h", "rain100l"):
        return paired.Rain100(path, instruction, name=name)
    if name == "nyuv2":
        return nyu.open_nyuv2(path, depth_scale)
    if name == "ade20k":
        return ade.ADE20K(path)
    if name == "magicbrush":
        return (
            edits.magicbrush(path) if not columns else edits.EditSet(path, edits.parse_columns(columns), name)
        )
    if name == "instructpix2pix":
        return (
            edits.instructpix2pix(path)
            if not columns
            else edits.EditSet(path, edits.parse_columns(columns), name)
        )
    if name == "edits":
        if not columns:
            raise XPromptError(
                "dataset 'edits' needs --columns source=COL,target=COL,instruction=COL[,mask=COL,...]"
            )
        return edits.EditSet(path, edits.parse_columns(columns), "edits")
    raise XPromptError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def open_paired(input_dir, target_dir, instruction: str = "") -> RealDataset:
    """Two folders paired by file stem (``--input-dir`` / ``--target-dir``); evaluation-only."""
    from xprompt.readers.paired import GenericPairs

    return GenericPairs(input_dir, target_dir, instruction)

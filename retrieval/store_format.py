"""A store directory's files: names, the manifest (format, encoder, counts, checksums) and the checks that
run before anything of a store is used.

Design choices
* Split from ``store.py``: loading trusts nothing, and every check of the files is here -- the manifest's
  format and version, the query encoder against the one that built the store (name, dim, weights version),
  the metadata table's columns and row count, the image vectors' shape. Each failure is a one-line
  ``XPromptError`` saying to rebuild the store.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from xprompt.errors import XPromptError
from xprompt.retrieval.records import COLUMNS

FORMAT = "xprompt-raie-store"
FORMAT_VERSION = 1
MANIFEST, CONFIG, INDEX, META = "manifest.json", "config.json", "index.faiss", "meta"
IMAGE_VECTORS = "image_vectors.npy"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(path: Path) -> dict:
    mp = Path(path) / MANIFEST
    if not Path(path).is_dir():
        raise XPromptError(f"store not found: {path} (build one with `xprompt index build`)")
    if not mp.is_file():
        raise XPromptError(f"{path} is not an xprompt instruction store (no {MANIFEST})")
    try:
        man = json.loads(mp.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise XPromptError(f"{mp} is not valid JSON ({e}); rebuild the store") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise XPromptError(f"{mp} is not an xprompt instruction-store manifest")
    if man.get("format_version", 0) > FORMAT_VERSION:
        raise XPromptError(f"{path} was written by a newer xprompt (store format {man['format_version']})")
    for key in ("encoder", "factory", "count"):
        if key not in man:
            raise XPromptError(f"{mp} lacks {key!r}; rebuild the store")
    return man


def check_encoder(man: dict, encoder, path) -> None:
    """Refuse to query a store with an encoder other than the one that built it."""
    want = man["encoder"]
    got = encoder.describe()
    for key in ("name", "dim", "version"):
        if want.get(key) != got[key]:
            raise XPromptError(
                f"store {path} was built with encoder {want.get('name')} (dim {want.get('dim')}, weights "
                f"{want.get('version')}), the query encoder is {got['name']} (dim {got['dim']}, weights "
                f"{got['version']}): use the same --encoder or rebuild the store"
            )


def load_image_vectors(path: Path, count: int, dim: int) -> np.ndarray:
    p = Path(path) / IMAGE_VECTORS
    try:
        iv = np.load(p, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise XPromptError(f"cannot read {p} ({type(e).__name__}); rebuild the store") from None
    if iv.shape != (count, dim):
        raise XPromptError(f"{p} has shape {iv.shape}, expected ({count}, {dim}); rebuild the store")
    return iv


def load_meta(path: Path, count: int):
    from datasets import load_from_disk

    mp = Path(path) / META
    if not mp.is_dir():
        raise XPromptError(f"store {path} has no {META}/ table; rebuild it")
    try:
        meta = load_from_disk(str(mp))
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds (OSError, ValueError, ArrowInvalid...)
        raise XPromptError(
            f"cannot read the metadata table {mp} ({type(e).__name__}); rebuild the store"
        ) from None
    missing = [c for c in COLUMNS if c not in getattr(meta, "column_names", [])]
    if missing:
        raise XPromptError(f"metadata table {mp} lacks column(s) {missing}; rebuild the store")
    if len(meta) != count:
        raise XPromptError(
            f"metadata table {mp} has {len(meta)} rows but the index holds {count} vectors; "
            "the store is inconsistent, rebuild it"
        )
    return meta

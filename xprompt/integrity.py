"""Checksums of the artefacts xprompt writes, recorded at write time and verified on load.

Design choices
* One record format for every artefact: ``{"algorithm": "sha256", "files": {relative path: {"bytes", "sha256"}}}``,
  stored in the artefact's own metadata (a model's ``meta.json``, a store's ``manifest.json``, a dataset's
  ``dataset_card.json``), in an ``integrity.json`` beside the files (VQ tokenizers, training checkpoints) or a
  ``NAME.integrity.json`` sidecar for a single file (the BPE ``tokenizer.json``). Compiled ``.xpt`` prompts
  keep ``tensor_digest`` of their tensors in their safetensors header (a file cannot hold its own hash).
* Verification names what is wrong, in the order a user can act on: a missing file, a size that differs
  (truncated or appended to), then a hash that differs (altered in place). Each is one ``IntegrityError``
  line ending with what to do, raised *before* any parser (safetensors, FAISS, Arrow, DeepSpeed) reads the
  bytes, so damage is reported as damage and not as a shape error deep inside a library.
* An artefact written before checksums existed has no record: it loads with the check skipped (the
  committed checkpoints must keep loading), as ``verify`` documents.
* Hashing reads every byte (sha256 runs at ~0.5-1 GB/s on this CPU, so a 24 MB model costs ~40 ms per load).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from xprompt.errors import IntegrityError

ALGORITHM = "sha256"
RECORD_FILE = "integrity.json"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_files(root: str | Path, names: Iterable[str]) -> dict:
    """The integrity record of the files ``names`` (paths relative to ``root``)."""
    root = Path(root)
    files = {}
    for name in sorted(names):
        p = root / name
        files[name] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    return {"algorithm": ALGORITHM, "files": files}


def record_tree(root: str | Path, exclude: Iterable[str] = ()) -> dict:
    """The integrity record of every file under ``root`` except the (top-level relative) names in ``exclude``."""
    root = Path(root)
    skip = set(exclude)
    names = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    return record_files(root, [n for n in names if n not in skip])


def verify(root: str | Path, record: dict | None, what: str, fix: str) -> bool:
    """Check the files under ``root`` against ``record``; False (nothing checked) when there is no record.

    ``what`` names the artefact ("model checkpoint runs/x/model"), ``fix`` ends every message."""
    if record is None:
        return False
    root = Path(root)
    if (
        not isinstance(record, dict)
        or record.get("algorithm") != ALGORITHM
        or not isinstance(record.get("files"), dict)
    ):
        raise IntegrityError(f"{what}: unreadable integrity record (expected {ALGORITHM} file hashes); {fix}")
    for name, want in sorted(record["files"].items()):
        p = root / name
        if not p.is_file():
            raise IntegrityError(f"{what} is incomplete: {name} is missing; {fix}")
        size = p.stat().st_size
        if size != want.get("bytes"):
            kind = "truncated" if size < want.get("bytes", 0) else "longer than written"
            raise IntegrityError(
                f"{what}: {name} is {kind} ({size:,} bytes, {want.get('bytes'):,} when written); {fix}"
            )
        if sha256_file(p) != want.get("sha256"):
            raise IntegrityError(
                f"{what}: {name} was modified or corrupted (its SHA-256 differs from the one recorded when "
                f"it was written); {fix}"
            )
    return True


def write_record(root: str | Path, record: dict, fmt: str) -> Path:
    """Write ``record`` as ``root/integrity.json`` (format ``fmt``), atomically."""
    from xprompt.io_utils import atomic_write_text

    path = Path(root) / RECORD_FILE
    atomic_write_text(path, json.dumps(dict(record, format=fmt), indent=2, sort_keys=True) + "\n")
    return path


def read_record(root: str | Path, what: str, fix: str, name: str = RECORD_FILE) -> dict | None:
    """The record in ``root/name``, or None when the artefact has none (written before checksums)."""
    p = Path(root) / name
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise IntegrityError(f"{what}: {p.name} is not valid JSON; {fix}") from None


def sidecar(path: str | Path) -> Path:
    """Where the record of a single-file artefact lives: ``NAME.integrity.json`` beside it."""
    path = Path(path)
    return path.with_name(f"{path.name}.integrity.json")


def tensor_digest(tensors: dict) -> str:
    """SHA-256 over names, dtypes, shapes and raw bytes of a dict of CPU tensors (sorted by name)."""
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()

"""Loading tokenizers from a spec, and identifying them by their files.

Design choices
* One loader per kind, shared by inference (``XPrompt.from_pretrained``), dataset building and ``data show``:
  ``load_image_tokenizer(spec)`` takes a VQ checkpoint directory, ``grid:F`` (``GridTokenizer``, the
  parameter-free test tokenizer) or an already loaded tokenizer; ``load_text_tokenizer(spec)`` a BPE
  ``tokenizer.json``, its directory, or a loaded tokenizer. Not-found errors end with a caller's ``hint``
  (the flag or command that fixes it).
* Identity is a hash of the files (``tokenizer_fingerprint``), not of the path: a dataset records
  ``tokenizer_ref`` = {"path", "fingerprint"} of the tokenizers it was built with, and loading a model trained
  on it refuses tokenizers with other files (the same codebook size with other codes would silently give
  garbage).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from xprompt.errors import XPromptError


class GridTokenizer:
    """A parameter-free image tokenizer for tests and benchmarks without a trained VQ: ``factor`` x ``factor``
    block means quantised to 8 levels per channel (512 codes). Not a substitute for the VQ in real builds."""

    codebook_size = 512

    def __init__(self, factor: int = 8):
        self.factor = factor

    def encode(self, images) -> np.ndarray:
        x = np.asarray(images, np.float32)  # (B, H, W, 3)
        b, h, w, _ = x.shape
        f = self.factor
        if h % f or w % f:
            raise XPromptError(f"image size {h}x{w} is not a multiple of the tokenizer factor {f}")
        m = x.reshape(b, h // f, f, w // f, f, 3).mean(axis=(2, 4))  # (B, h, w, 3)
        q = np.clip((m / 32).astype(np.int64), 0, 7)
        return q[..., 0] * 64 + q[..., 1] * 8 + q[..., 2]  # (B, h, w)

    def decode(self, codes) -> np.ndarray:
        c = np.asarray(codes, np.int64)
        rgb = np.stack([c // 64, (c // 8) % 8, c % 8], -1) * 32 + 16  # (B, h, w, 3)
        return np.repeat(np.repeat(rgb, self.factor, 1), self.factor, 2).astype(np.uint8)


def file_fingerprint(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def tokenizer_fingerprint(kind: str, path: str | Path) -> str:
    """Identity of a tokenizer's files: ``kind`` "vq" (a checkpoint dir: config + weights) or "bpe" (a
    ``tokenizer.json`` or its dir). What datasets record and what loading a model checks against."""
    p = Path(path)
    if kind == "vq":
        names = ("config.json", "model.safetensors", "vqgan.yaml", "vqgan.safetensors", "vqgan.ckpt")
        return file_fingerprint([p / n for n in names if (p / n).is_file()])
    return file_fingerprint([p / "tokenizer.json" if p.is_dir() else p])


def _bpe_file(spec: str | Path) -> Path:
    """A tokenizer file, or a folder holding ``tokenizer.json`` (ours) or ``text_tokenizer.json`` (Chameleon's)."""
    p = Path(spec)
    if not p.is_dir():
        return p
    ours, chameleon = p / "tokenizer.json", p / "text_tokenizer.json"
    return chameleon if chameleon.is_file() and not ours.is_file() else ours


def tokenizer_ref(kind: str, spec: str | Path) -> dict:
    """{"path", "fingerprint"} of a tokenizer spec ("vq": a VQ dir or ``grid:F``; "bpe": a tokenizer.json or
    its dir): what a dataset records about the tokenizers it was built with."""
    s = str(spec)
    if kind == "vq" and s.startswith("grid:"):
        return {"path": s, "fingerprint": s}
    p = Path(s) if kind == "vq" else _bpe_file(s)
    return {"path": str(p.resolve()), "fingerprint": tokenizer_fingerprint(kind, p)}


def load_image_tokenizer(spec, hint: str = "pass the checkpoint's VQ directory (--vq)"):
    """A VQ checkpoint dir, ``grid:F`` (``GridTokenizer``), or an object with ``encode``/``decode``/``factor``/
    ``codebook_size``. ``hint`` ends the not-found message."""
    if not isinstance(spec, (str, Path)):
        return spec
    s = str(spec)
    if s.startswith("grid:"):
        return GridTokenizer(int(s.split(":", 1)[1]))
    from xprompt.tokenizer.vq import VQTokenizer

    if not Path(s).is_dir():
        raise XPromptError(f"image tokenizer directory not found: {s}; {hint}")
    return VQTokenizer.from_pretrained(s)


def load_text_tokenizer(spec, hint: str = "pass the checkpoint's BPE tokenizer.json (--bpe)"):
    """A BPE ``tokenizer.json`` (or its directory), or a loaded tokenizer."""
    if not isinstance(spec, (str, Path)):
        return spec
    from xprompt.tokenizer.text import TextTokenizer

    p = _bpe_file(spec)
    if not p.is_file():
        raise XPromptError(f"BPE tokenizer not found: {p}; {hint}")
    return TextTokenizer.load(p)

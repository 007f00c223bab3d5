"""Where shipped files live. The repository's ``checkpoints/`` folder holds the shipped tokenizers and model;
``XPROMPT_HOME`` overrides it (e.g. for an installed, non-editable copy)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def checkpoints_dir() -> Path:
    return Path(os.environ.get("XPROMPT_HOME", REPO_ROOT / "checkpoints"))


def shipped(name: str) -> Path:
    """Path of a shipped artefact, e.g. ``shipped("vq-64")``, ``shipped("xprompt-tiny")``."""
    return checkpoints_dir() / name

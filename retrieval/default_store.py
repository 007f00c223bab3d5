"""The default RAIE store: what ``XPrompt.edit``, ``xprompt edit``/``index search`` and ``eval raie`` retrieve
from when no store is given.

It is *built on first use* from ``DEFAULT_SUITE`` (1,024 pairs of the edit, low-level and degrade families
at 64 px, seed 0) with the query's encoder and saved in the user cache
(``$XDG_CACHE_HOME/xprompt/raie-store/<key>``, the key covering suite, size and encoder), so later calls just
load it; a cached store from an older version of its encoder is rebuilt. It is not committed to git (it is
reproducible from the seed and holds images); a store placed at ``checkpoints/raie-store`` (or
``$XPROMPT_HOME/raie-store``) is used instead when present.
"""

from __future__ import annotations

import sys
from pathlib import Path

from xprompt.retrieval.sources import DEFAULT_SIZE, suite_table

DEFAULT_SUITE = "suite:edit,lowlevel,degrade:1024"


def _shipped_store() -> Path:
    from xprompt.paths import shipped

    return shipped("raie-store")


def default_store_path(encoder=None) -> Path:
    """Where the default store lives: a shipped ``checkpoints/raie-store`` when present, else a per-user cache
    entry keyed by the suite spec, image size and encoder (so an openclip query builds its own)."""
    import hashlib
    import os

    if (_shipped_store() / "manifest.json").is_file():
        return _shipped_store()
    from xprompt.retrieval.encoders import DEFAULT_ENCODER

    name = DEFAULT_ENCODER if encoder is None else (encoder if isinstance(encoder, str) else encoder.spec)
    key = hashlib.sha1(f"{DEFAULT_SUITE}|{DEFAULT_SIZE}|{name}".encode()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "xprompt" / "raie-store" / key


def open_store(path: str | Path | None = None, encoder=None, *, quiet: bool = False):
    """Load a store; with ``path=None`` the default store, built from ``DEFAULT_SUITE`` on first use."""
    from xprompt.retrieval.store import InstructionStore
    from xprompt.retrieval.store_format import MANIFEST

    if path is not None:
        return InstructionStore.load(path, encoder)
    from xprompt.retrieval.encoders import get_encoder
    from xprompt.retrieval.store import read_manifest

    path = default_store_path(encoder)
    stale = False
    if (path / MANIFEST).is_file() and path != _shipped_store():
        # a cached store from an older rewriting / feature version of the same encoder spec: rebuild it
        enc = encoder if encoder is not None and not isinstance(encoder, str) else get_encoder(encoder)
        stale = read_manifest(path)["encoder"].get("version") != enc.version
    if path == _shipped_store() and (path / MANIFEST).is_file() and encoder is None and not quiet:
        from xprompt.retrieval.encoders import DEFAULT_ENCODER

        spec = read_manifest(path)["encoder"].get("spec")
        if spec != DEFAULT_ENCODER:  # used with its own encoder (consistent vectors), but say so
            print(
                f"xprompt: note: the store at {path} was built with encoder {spec}, not the default "
                f"{DEFAULT_ENCODER}; queries use {spec}. Rebuild it with `xprompt index build --pairs ... --out "
                f"{path} --overwrite` to use the default.",
                file=sys.stderr,
            )
    if stale or not (path / MANIFEST).is_file():
        if not quiet:
            why = "its encoder version changed; rebuilding" if stale else "this happens once"
            print(
                f"xprompt: building the default RAIE store ({DEFAULT_SUITE}, {DEFAULT_SIZE} px) at {path}; "
                f"{why}",
                file=sys.stderr,
            )
        store = InstructionStore(encoder)
        store.add_table(suite_table(DEFAULT_SUITE, size=DEFAULT_SIZE, progress=not quiet))
        store.save(path, overwrite=True)
        return store
    return InstructionStore.load(path, encoder)

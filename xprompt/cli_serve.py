"""CLI command ``serve``: the web app (``xprompt.serve.app``) on one loaded model.

Design choices
* The model is resolved exactly as ``generate`` resolves it (``--checkpoint``/``--vq``/``--bpe``, default the
  shipped ``checkpoints/xprompt-tiny``), loaded once, and shared by every tab and user.
* Local by default: bound to 127.0.0.1 (``--host 0.0.0.0`` exposes it on purpose), no share link, no
  analytics; ``--queue-size`` bounds the number of waiting jobs.
* ``--store NAME=DIR`` (repeatable) adds RAIE stores to the editing tabs; ``default`` (the default store, built
  on first use) is always offered first.
"""

from __future__ import annotations

from xprompt.cli_generate import _common, _pipe
from xprompt.errors import XPromptError


def register(root, groups) -> None:
    s = root.add_parser(
        "serve",
        help="the web app: in-context generation, RAIE editing, multi-turn editing, describe, t2i",
        description="Serve a local web page (Gradio) over one loaded model; open the printed URL.",
    )
    s.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    s.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    s.add_argument("--queue-size", type=int, default=16, help="most jobs waiting at once (default 16)")
    s.add_argument(
        "--store", action="append", metavar="NAME=DIR", help="an extra RAIE store for the editing tabs"
    )
    _common(s, sampling=False)
    s.set_defaults(func=cmd_serve)


def parse_stores(specs) -> dict:
    """``["name=dir", "dir"]`` -> ``{"default": None, "name": "dir", "<dir name>": "dir"}``."""
    from pathlib import Path

    stores: dict = {"default": None}
    for spec in specs or ():
        name, _, path = spec.partition("=") if "=" in spec else (Path(spec).name, "", spec)
        if not name or not path:
            raise XPromptError(f"--store takes NAME=DIR or DIR, got {spec!r}")
        if not (Path(path) / "manifest.json").is_file():
            raise XPromptError(
                f"--store {spec}: {path} is not a store (no manifest.json); build one with `xprompt index build`"
            )
        stores[name] = path
    return stores


def cmd_serve(args) -> int:
    # --port and --queue-size ranges: xprompt/cli_checks.py (checked before any command runs)
    stores = parse_stores(args.store)
    pipe = _pipe(args)
    from xprompt.serve.app import build_app, launch

    print(f"xprompt serve: {pipe.checkpoint} on http://{args.host}:{args.port} (Ctrl-C stops it)", flush=True)
    launch(build_app(pipe, stores=stores), host=args.host, port=args.port, queue_size=args.queue_size)
    return 0

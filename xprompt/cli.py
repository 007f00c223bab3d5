"""The ``xprompt`` command line.

Each area owns its commands in its own module, which exposes ``register(root, groups)``: ``root`` is the
top-level subparsers object, ``groups`` maps a group name ("train", "data", "index") to that group's
subparsers. A command sets ``func(args) -> int``. Command modules keep heavy imports (torch, faiss,
deepspeed) inside the functions so that ``xprompt --help`` stays fast.

Threads: commands that run a model take ``--threads`` (``add_threads_arg``; default 1, 0 = torch's default of
one per core), applied by ``run_command`` before the command runs. One thread is the default because the small
models here gain little from more, while OpenMP's spinning threads slow a step down many times over as soon
as another process holds a core (the demo: 5.8 s with 1 thread, 107 s with 2 beside one busy process).

Errors: ``XPromptError`` (bad input) is printed as one line ``xprompt: error: ...`` with exit code 2;
argparse usage errors also exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from xprompt.errors import XPromptError

GROUPS = {
    "train": "train the text tokenizer, the VQ image tokenizer or the model",
    "data": "build and inspect task-suite datasets",
    "index": "build and search RAIE instruction stores",
}

# module -> the commands it provides ((group or None, name, help)); listed even before the module exists.
COMMAND_MODULES: dict[str, list[tuple[str | None, str, str]]] = {
    "xprompt.tokenizer.cli": [
        ("train", "bpe", "train the byte-level BPE text tokenizer"),
        ("train", "tokenizer", "train the VQ image tokenizer"),
    ],
    "xprompt.train.cli": [("train", "model", "train the X-Prompt model (DeepSpeed)")],
    "xprompt.train.data_cli": [
        ("data", "build", "build a pre-tokenized task-suite dataset"),
        ("data", "show", "write a PNG grid of decoded samples"),
    ],
    "xprompt.cli_generate": [
        (None, "generate", "in-context generation from example pairs (or a compiled task)"),
        (None, "describe", "describe the difference between two images"),
        (None, "t2i", "text-to-image"),
        (None, "compile-prompt", "compile an example pair into a reusable task prompt (.xpt)"),
    ],
    "xprompt.retrieval.cli": [
        ("index", "build", "build a FAISS instruction store"),
        ("index", "search", "search a store by instruction"),
        ("index", "train-encoder", "train the minilm-edit text encoder"),
        (None, "edit", "retrieval-augmented image editing"),
    ],
    "xprompt.eval.cli": [(None, "eval", "run a benchmark (unseen, seen, raie, t2i)")],
    "xprompt.eval.demo": [(None, "demo", "run the demo: in-context generation on packaged photos")],
    "xprompt.cli_export": [(None, "export", "export a trained model as a release folder (bf16)")],
}


def _not_available(name: str, module: str):
    def run(args) -> int:
        raise XPromptError(f"`xprompt {name}` is not yet available in this version ({module} is missing)")

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xprompt", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    root = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups = {}
    for name, help_ in GROUPS.items():
        p = root.add_parser(name, help=help_, description=help_)
        groups[name] = p.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")
        p.set_defaults(func=lambda args, p=p: (p.print_help(), 2)[1])
    for module, commands in COMMAND_MODULES.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is None or not module.startswith(e.name):
                raise
            for group, name, help_ in commands:
                sub = groups[group] if group else root
                p = sub.add_parser(name, help=f"{help_} [not yet available]")
                p.set_defaults(func=_not_available(f"{group + ' ' if group else ''}{name}", module))
            continue
        mod.register(root, groups)
    return parser


def _version() -> str:
    from xprompt import __version__

    return f"xprompt {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_command(args.func, args)


def add_threads_arg(p: argparse.ArgumentParser, default: int = 1) -> None:
    p.add_argument("--threads", type=int, default=default,
                   help=f"torch CPU threads (default {default}; 0 = torch's default, one per core). More threads "
                        "help big models on an idle machine; on a shared one they spin and slow everything down")


def _apply_threads(args) -> None:
    n = getattr(args, "threads", None)
    if n is None:
        return
    if n < 0:
        raise XPromptError(f"--threads must be >= 0 (0 = torch's default), got {n}")
    if n > 0:
        import torch

        torch.set_num_threads(n)


def run_command(func, args) -> int:
    """Run ``func(args)`` (after ``--threads``): ``XPromptError`` -> one line on stderr, exit 2; Ctrl-C -> 130."""
    try:
        _apply_threads(args)
        return int(func(args) or 0)
    except XPromptError as e:
        print(f"xprompt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xprompt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

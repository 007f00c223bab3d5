"""The ``xprompt`` command line.

Each area owns its commands in its own module, which exposes ``register(root, groups)``: ``root`` is the
top-level subparsers object, ``groups`` maps a group name ("train", "data", "index") to that group's
subparsers. A command sets ``func(args) -> int``. Command modules keep heavy imports (torch, faiss,
deepspeed) inside the functions so that ``xprompt --help`` stays fast.

Threads: commands that run a model take ``--threads`` (``add_threads_arg``; default 1, 0 = torch's default of
one per core), applied by ``run_command`` before the command runs. One thread is the default because the small
models here gain little from more, while OpenMP's spinning threads slow a step down many times over as soon
as another process holds a core (the demo: 5.8 s with 1 thread, 107 s with 2 beside one busy process).

Environment: ``main`` (and ``python -m xprompt.train``) start with ``set_offline_env``: the Hugging Face
libraries offline (nothing may be downloaded at run time) and tokenizers' fork warning off. It is set here,
where a process starts, and not when the package is imported, so a program importing xprompt keeps its
environment.

Validation: after parsing, ``xprompt.cli_checks.check_args`` checks every numeric option against its range
(NaN and infinities refused), normalises free text and checks ``--set`` values, for every command at once.

Errors: ``XPromptError`` (bad input) is printed as one line ``xprompt: error: ...`` with exit code 2;
argparse usage errors also exit 2. Warnings (``XPromptWarning``) are one line ``xprompt: warning: ...``.
Shared options (``--threads``, ``--device``, ``--no-progress``, ``--quiet``, ``--vq``/``--bpe``,
``--image-size``, ``--json``, ``--keep-model-size``) are defined once in ``xprompt.cli_options``.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import sys
import warnings

from xprompt.errors import XPromptError, XPromptWarning

GROUPS = {
    "train": "train the text tokenizer, the VQ image tokenizer or the model",
    "data": "build and inspect task-suite datasets",
    "index": "build and search RAIE instruction stores",
}

# The modules that provide commands, each through its ``register(root, groups)`` (help texts live there).
COMMAND_MODULES = (
    "xprompt.tokenizer.cli",  # train bpe, train tokenizer
    "xprompt.tokenizer.cli_convert",  # convert vqgan
    "xprompt.train.cli",  # train model
    "xprompt.train.data_cli",  # data build, data show
    "xprompt.cli_generate",  # generate, describe, t2i, compile-prompt
    "xprompt.retrieval.cli",  # index build/search/train-encoder, edit
    "xprompt.eval.cli",  # eval
    "xprompt.eval.demo",  # demo
    "xprompt.cli_export",  # export
    "xprompt.cli_serve",  # serve (the web app)
)


OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def set_offline_env() -> None:
    """Set ``OFFLINE_ENV`` where not already set (a user's explicit value wins)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xprompt", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    root = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups = {}
    for name, help_ in GROUPS.items():
        p = root.add_parser(name, help=help_, description=help_)
        groups[name] = p.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")
        p.set_defaults(func=lambda args, p=p: (p.print_help(), 2)[1])
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(root, groups)
    return parser


def _version() -> str:
    from xprompt import __version__

    return f"xprompt {__version__}"


def main(argv: list[str] | None = None) -> int:
    from xprompt.cli_checks import check_args

    set_offline_env()
    _tolerant_stdout()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        check_args(parser, args)  # every numeric option, free text and --set value (xprompt.cli_checks)
    except XPromptError as e:
        return _report(e)
    return run_command(args.func, args)


def _tolerant_stdout() -> None:
    """Paths from argv may hold undecodable bytes (as surrogates): print them back as the same bytes."""
    if isinstance(sys.stdout, io.TextIOWrapper) and sys.stdout.errors == "strict":
        sys.stdout.reconfigure(errors="surrogateescape")


def _report(e: XPromptError) -> int:
    print(f"xprompt: error: {e}", file=sys.stderr)
    return 2


def add_threads_arg(p: argparse.ArgumentParser, default: int = 1) -> None:
    """``--threads`` alone (the shared option sets are in ``xprompt.cli_options``)."""
    from xprompt.cli_options import add_threads_option

    add_threads_option(p, default)


def add_mask_args(
    p: argparse.ArgumentParser, required: bool = False, instruction: bool = False, blend: bool = True
) -> None:
    """``--mask``/``--box`` (mask-guided editing, ``xprompt.edit_mask``) and their dilation/feathering;
    ``instruction``: also ``--mask-from-instruction`` (``xprompt.instruction_mask``, commands with an instruction);
    ``blend``: also ``--blend`` (not for inpainting, whose masked content is always replaced)."""
    m = p.add_mutually_exclusive_group(required=required)
    m.add_argument(
        "--mask", help="binary mask image the size of the input image: white = change, black = keep"
    )
    m.add_argument("--box", help="the region to change as x0,y0,x1,y1 in pixels of the input image")
    if instruction:
        m.add_argument(
            "--mask-from-instruction",
            action="store_true",
            help="procedural scenes: change only the region of the object the instruction names (found by the "
            "scene detector; its box grown by a margin, plus a move's/add's destination cell; a background "
            "replacement changes the whole image)",
        )
    p.add_argument(
        "--mask-dilate", type=int, default=1, help="grow the mask by this many image tokens (default 1)"
    )
    p.add_argument(
        "--feather", type=int, default=2, help="blend border in px inside the mask (default 2; 0 = hard edge)"
    )
    if blend:
        p.add_argument(
            "--blend",
            choices=("mask", "changed"),
            default="mask",
            help="where the decoded image replaces the input: over the whole mask (default), or only over "
            "the tokens the model changed (grown by --mask-dilate), keeping the input's exact pixels "
            "where the model kept them",
        )


def mask_kwargs(args) -> dict:
    """The ``XPrompt`` keyword arguments of ``add_mask_args`` (empty without --mask/--box/--mask-from-instruction)."""
    from xprompt.edit_mask import parse_box

    how = {"dilate": args.mask_dilate, "feather": args.feather}
    if getattr(args, "blend", None) is not None:
        how["blend"] = args.blend
    if getattr(args, "mask_from_instruction", False):
        return {"mask_from_instruction": True, **how}
    if args.mask is None and args.box is None:
        return {}
    return {"mask": args.mask, "box": parse_box(args.box) if args.box is not None else None, **how}


def _apply_threads(args) -> None:
    n = getattr(args, "threads", None)
    if n is None:
        return
    if n < 0:
        raise XPromptError(f"--threads must be >= 0 (0 = torch's default), got {n}")
    if n > 0:
        import torch

        torch.set_num_threads(n)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``XPromptWarning`` as one line ``xprompt: warning: ...`` on stderr; others as Python shows them."""
    if issubclass(category, XPromptWarning):
        print(f"xprompt: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def run_command(func, args) -> int:
    """Run ``func(args)`` (after ``--threads``): ``XPromptError`` -> one line on stderr, exit 2; Ctrl-C -> 130."""
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            _apply_threads(args)
            return int(func(args) or 0)
    except XPromptError as e:
        return _report(e)
    except KeyboardInterrupt:
        print("xprompt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

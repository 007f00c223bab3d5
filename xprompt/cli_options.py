"""The options shared by the commands that run a model or write outputs, defined once.

Design choices
* One function per option group; a command picks the groups that mean something for it, so ``--help`` of
  each subcommand lists only options it honours:
  - ``add_run_options``: ``--threads``, ``--no-progress``, ``--quiet`` (and ``--device`` for commands that put
    a model on a device in this process) -- every command that runs a model;
  - ``add_tokenizer_options``: ``--vq`` / ``--bpe`` (the image and text tokenizer);
  - ``add_image_size_option``: ``--image-size`` (older spellings such as ``--size`` stay as aliases);
  - ``add_json_option``: ``--json`` (one JSON object on stdout, nothing else there);
  - ``add_output_size_option``: ``--keep-model-size`` (image outputs: the model's thumbnail instead of the
    input's size).
  ``SHARED`` names the flags of each group; ``tests/test_cli_options.py`` checks every model-running
  subcommand accepts them.
* Output streams: progress bars, warnings and notes go to stderr; results go to stdout. ``--quiet`` silences
  progress and tables but still says where results went; ``--json`` replaces the human lines on stdout with
  one JSON object (``emit``).
* No validation of values here beyond what argparse does (numeric range checks live in ``xprompt.cli_checks``).
"""

from __future__ import annotations

import argparse
import json

SHARED = {
    "run": ("--threads", "--no-progress", "--quiet"),
    "device": ("--device",),
    "tokenizers": ("--vq", "--bpe"),
    "image_size": ("--image-size",),
    "json": ("--json",),
    "output_size": ("--keep-model-size",),
}


def _shared(p: argparse.ArgumentParser):
    """The parser's "shared options" help section (created once per parser)."""
    g = getattr(p, "_xprompt_shared", None)
    if g is None:
        g = p.add_argument_group(
            "shared options", "the same on every command that runs a model (docs/model.md)"
        )
        p._xprompt_shared = g
    return g


def add_threads_option(p: argparse.ArgumentParser, default: int = 1) -> None:
    _shared(p).add_argument(
        "--threads",
        type=int,
        default=default,
        help=f"torch CPU threads (default {default}; 0 = torch's default, one per core). More threads "
        "help big models on an idle machine; on a shared one they spin and slow everything down",
    )


def add_run_options(
    p: argparse.ArgumentParser, *, device: bool = True, threads_default: int = 1, device_default="cpu"
) -> None:
    """``--threads``, ``--no-progress``, ``--quiet`` and (``device=True``) ``--device``."""
    add_threads_option(p, threads_default)
    if device:
        _shared(p).add_argument(
            "--device", default=device_default, help=f"torch device (default {device_default})"
        )
    _shared(p).add_argument("--no-progress", action="store_true", help="no progress bars (stderr)")
    _shared(p).add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars and no tables; still prints where the results were written",
    )


def add_tokenizer_options(
    p: argparse.ArgumentParser, *, vq_default=None, bpe_default=None, vq_aliases=(), vq_dest="vq"
) -> None:
    """``--vq`` (image tokenizer dir, or grid:F) and ``--bpe`` (BPE tokenizer.json or its dir)."""
    _shared(p).add_argument(
        "--vq",
        *vq_aliases,
        dest=vq_dest,
        default=vq_default,
        help="image (VQ) tokenizer dir"
        + (f" (default {vq_default})" if vq_default else " (default: the one recorded with the model/data)"),
    )
    _shared(p).add_argument(
        "--bpe",
        default=bpe_default,
        help="BPE tokenizer.json or its dir"
        + (
            f" (default {bpe_default})" if bpe_default else " (default: the one recorded with the model/data)"
        ),
    )


def add_image_size_option(
    p: argparse.ArgumentParser, *, default=None, aliases=(), dest="image_size", help=None
) -> None:
    _shared(p).add_argument(
        "--image-size",
        *aliases,
        dest=dest,
        type=int,
        default=default,
        help=help or "image side in px the model works at (default: what the model was trained at)",
    )


def add_json_option(p: argparse.ArgumentParser) -> None:
    _shared(p).add_argument(
        "--json", action="store_true", help="print one JSON object on stdout (and nothing else there)"
    )


def add_output_size_option(p: argparse.ArgumentParser) -> None:
    _shared(p).add_argument(
        "--keep-model-size",
        action="store_true",
        help="write the output at the model's size (default: the input's size and aspect ratio)",
    )


def add_pipeline_options(p: argparse.ArgumentParser, image_out: bool = False) -> None:
    """The shared options of every command that loads an ``XPrompt`` (``pipeline_from_args`` reads them)."""
    add_run_options(p)
    add_tokenizer_options(p)
    add_image_size_option(p)
    _shared(p).add_argument(
        "--aspect",
        choices=("pad", "bucket"),
        default="pad",
        help="non-square images: pad to the model's square (default) or use aspect-ratio buckets "
        "(centre crop; for models trained on non-square grids)",
    )
    _shared(p).add_argument(
        "--tokenizer",
        help="Chameleon tokenizer folder (text_tokenizer.json, vqgan.yaml, vqgan.ckpt) of a Chameleon / "
        "Lumina-mGPT --checkpoint (default: found beside it)",
    )
    add_json_option(p)
    if image_out:
        add_output_size_option(p)


def pipeline_from_args(args, checkpoint=None):
    """``XPrompt.from_pretrained`` with the shared options of ``add_pipeline_options``."""
    from xprompt.pipeline import XPrompt

    return XPrompt.from_pretrained(
        checkpoint if checkpoint is not None else args.checkpoint,
        vq=args.vq,
        bpe=args.bpe,
        image_size=args.image_size,
        device=args.device,
        aspect=args.aspect,
        tokenizer=getattr(args, "tokenizer", None),
    )


def progress_on(args) -> bool:
    """Show progress bars: not under --no-progress or --quiet."""
    return not (getattr(args, "no_progress", False) or getattr(args, "quiet", False))


def emit(args, payload: dict) -> None:
    """A command's result under ``--json``: one JSON object on stdout (and nothing else there)."""
    print(json.dumps(payload, default=str))


def add_guidance_args(p: argparse.ArgumentParser, scale: bool = False, ref: bool = True) -> None:
    """``scale``: ``--cfg`` (the guidance scale); ``ref``: ``--cfg-ref`` (what guidance contrasts with,
    ``XPrompt.generate``'s ``cfg_ref``; not for text-to-image, which has no query)."""
    if scale:
        p.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    if not ref:
        return
    p.add_argument(
        "--cfg-ref",
        choices=("empty", "query", "instruction"),
        default="empty",
        help="what --cfg guides against: the image prior alone (default); the query image alone, so "
        "guidance amplifies only what the instruction and example add (with --mask/--box, --cfg 3 "
        "--cfg-ref query; docs/editing.md); or the query and instruction without the examples, so it "
        "amplifies what the examples add",
    )

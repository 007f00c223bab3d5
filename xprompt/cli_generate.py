"""CLI commands ``generate``, ``inpaint``, ``describe``, ``t2i`` and ``compile-prompt`` (thin wrappers over
``XPrompt``).

Design choices
* Heavy imports (torch, the model) happen inside the command functions so ``xprompt --help`` stays fast.
* Every bad input is an ``XPromptError`` (one line, exit 2): a wrong number of ``--example`` images, an example
  pair of two sizes, unreadable images, a checkpoint that disagrees with its vocabulary, a task prompt made
  with another model, ``--task`` together with ``--example``.
* Outputs are written atomically (PNG encoded in memory, then ``atomic_write_bytes``); the progress bar goes
  to stderr and is off with ``--no-progress``.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from xprompt.cli import add_mask_args, mask_kwargs
from xprompt.cli_options import add_guidance_args, add_pipeline_options, emit, pipeline_from_args, progress_on
from xprompt.errors import XPromptError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def _common(p: argparse.ArgumentParser, sampling: bool = True, image_out: bool = False) -> None:
    p.add_argument(
        "--checkpoint", help="model checkpoint dir (default: the shipped checkpoints/xprompt-tiny)"
    )
    add_pipeline_options(p, image_out=image_out)
    if sampling:
        p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
        p.add_argument("--greedy", action="store_true", help="argmax decoding")
        p.add_argument(
            "--top-k", type=int, help="top-k (default: 200 for image tasks, 2000 for t2i, 10 for text)"
        )
        p.add_argument("--temperature", type=float, default=1.0)
        add_guidance_args(p, scale=True, ref=False)


def register(root, groups) -> None:
    g = root.add_parser(
        "generate",
        help="in-context generation from example pairs (or a compiled task)",
        description="Show the task with --example INPUT OUTPUT pairs (or a compiled --task) "
        "and apply it to --query.",
    )
    g.add_argument(
        "--example",
        nargs="+",
        action="append",
        metavar="IMG",
        help="an example pair: INPUT OUTPUT (repeat for more examples)",
    )
    g.add_argument("--task", help="a compiled task prompt (.xpt) instead of --example")
    g.add_argument("--query", required=True, help="the image to transform")
    g.add_argument("--instruction", help="optional instruction text")
    g.add_argument(
        "--mode",
        default="xp",
        choices=["xp", "full", "none"],
        help="xp: compressed examples (default); full: uncompressed; none: no examples",
    )
    g.add_argument("-o", "--output", required=True, help="output image (.png)")
    add_mask_args(g)
    _common(g, image_out=True)
    add_guidance_args(g)
    g.set_defaults(func=cmd_generate)

    i = root.add_parser(
        "inpaint",
        help="fill a masked region of an image from its surroundings",
        description="Fill the --mask (white) or --box region of --image; every pixel outside it is kept. "
        "Optional --example INPUT OUTPUT pairs show how (inputs with the region painted grey).",
    )
    i.add_argument("--image", required=True, help="the image to fill")
    i.add_argument(
        "--example", nargs="+", action="append", metavar="IMG", help="optional example pair: INPUT OUTPUT"
    )
    i.add_argument("--instruction", help="instruction text (default: the inpainting task's)")
    i.add_argument("--mode", default="xp", choices=["xp", "full"], help="context mode of the examples")
    i.add_argument("-o", "--output", required=True, help="output image (.png)")
    add_mask_args(i, required=True, blend=False)
    _common(i, image_out=True)
    add_guidance_args(i)
    i.set_defaults(func=cmd_inpaint)

    d = root.add_parser("describe", help="describe the difference between two images")
    d.add_argument("--before", required=True)
    d.add_argument("--after", required=True)
    d.add_argument("--instruction", help="question to ask (default: the training phrase)")
    d.add_argument("--max-tokens", type=int, default=64)
    d.add_argument("-o", "--output", help="also write the text to this file")
    _common(d)
    d.set_defaults(func=cmd_describe)

    t = root.add_parser("t2i", help="text-to-image")
    t.add_argument("--prompt", required=True)
    t.add_argument(
        "--size", type=int, nargs=2, metavar=("H", "W"), help="grid size in codes (default: square)"
    )
    t.add_argument("-o", "--output", required=True)
    _common(t)
    t.set_defaults(func=cmd_t2i)

    c = root.add_parser("compile-prompt", help="compile an example pair into a reusable task prompt (.xpt)")
    c.add_argument(
        "--example",
        nargs="+",
        action="append",
        metavar="IMG",
        required=True,
        help="an example pair: INPUT OUTPUT (repeat for more examples)",
    )
    c.add_argument("--instruction")
    c.add_argument("--mode", default="xp", choices=["xp", "full"])
    c.add_argument("-o", "--output", required=True, help="task prompt file (.xpt)")
    _common(c, sampling=False)
    c.set_defaults(func=cmd_compile)


def _pipe(args):
    return pipeline_from_args(args)


def _pairs(example_args) -> list[tuple[str, str]]:
    pairs = []
    for i, ex in enumerate(example_args or (), 1):
        if len(ex) != 2:
            raise XPromptError(f"--example #{i} has {len(ex)} image(s); give exactly two: INPUT OUTPUT")
        pairs.append((ex[0], ex[1]))
    return pairs


def _check_out(path: str, suffixes=IMAGE_SUFFIXES) -> Path:
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise XPromptError(f"output {p} must end in one of {', '.join(suffixes)}")
    if p.exists() and p.is_dir():
        raise XPromptError(f"output {p} is a directory")
    return p


def _save_image(img, path: Path) -> None:
    from PIL import Image

    from xprompt.io_utils import atomic_write_bytes

    buf = io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), path.suffix.lower().lstrip(".").upper())
    Image.fromarray(img).save(buf, format=fmt)
    atomic_write_bytes(path, buf.getvalue())


def _kw(args) -> dict:
    return {
        "seed": args.seed,
        "greedy": args.greedy,
        "top_k": args.top_k,
        "temperature": args.temperature,
        "cfg_scale": args.cfg,
        "progress": progress_on(args) and sys.stderr.isatty(),
    }


def _out_kw(args) -> dict:
    """The image-to-image commands' output size and guidance reference."""
    return {"keep_model_size": args.keep_model_size, "cfg_ref": args.cfg_ref}


def _wrote(args, out: Path, img, extra: dict | None = None, note: str = "") -> None:
    """Say where the image went: one JSON object with --json, else a line (also under --quiet)."""
    h, w = img.shape[:2]
    if args.json:
        emit(args, {"output": str(out), "width": w, "height": h, **(extra or {})})
    else:
        print(f"wrote {out} ({w}x{h}{note})")


def cmd_generate(args) -> int:
    out = _check_out(args.output)
    pairs = _pairs(args.example)
    if args.task and pairs:
        raise XPromptError("give either --task or --example pairs, not both")
    if not args.task and args.mode != "none" and not pairs:
        raise XPromptError(f"mode {args.mode} needs at least one --example INPUT OUTPUT pair (or --task)")
    pipe = _pipe(args)
    if args.task:
        if args.instruction:
            raise XPromptError("the instruction is part of the compiled task; compile a new one to change it")
        img = pipe.generate_from(args.task, args.query, **_kw(args), **_out_kw(args), **mask_kwargs(args))
    else:
        img = pipe.generate(
            pairs,
            args.query,
            instruction=args.instruction,
            mode=args.mode,
            **_kw(args),
            **_out_kw(args),
            **mask_kwargs(args),
        )
    _save_image(img, out)
    _wrote(args, out, img, {"mode": "task" if args.task else args.mode, "examples": len(pairs)})
    return 0


def cmd_inpaint(args) -> int:
    out = _check_out(args.output)
    pairs = _pairs(args.example)
    pipe = _pipe(args)
    kw = {"instruction": args.instruction} if args.instruction else {}
    img = pipe.inpaint(
        args.image,
        examples=pairs,
        mode=args.mode if pairs else "none",
        **kw,
        **_kw(args),
        **_out_kw(args),
        **mask_kwargs(args),
    )
    _save_image(img, out)
    _wrote(args, out, img, note="; pixels outside the mask kept")
    return 0


def cmd_describe(args) -> int:
    pipe = _pipe(args)
    kw = {
        "seed": args.seed,
        "greedy": args.greedy or args.top_k is None,
        "top_k": args.top_k,
        "max_new_tokens": args.max_tokens,
        "progress": progress_on(args) and sys.stderr.isatty(),
    }
    if args.instruction:
        kw["instruction"] = args.instruction
    d = pipe.describe(args.before, args.after, return_confidence=True, **kw)
    note = f"confidence: mean token probability {d.token_prob:.2f} (log-prob {d.mean_logprob:.2f})" + (
        ""
        if d.confident
        else "; low: treat this description as a guess (the shipped tiny model described 0 of 24 test differences correctly)"
    )
    if args.json:
        emit(args, {"text": d.text, "mean_logprob": round(d.mean_logprob, 4), "token_prob": round(d.token_prob, 4),
                    "tokens": d.tokens, "confident": d.confident})  # fmt: skip
    else:
        print(d.text)
        print(f"xprompt: {note}", file=sys.stderr)
    if args.output:
        from xprompt.io_utils import atomic_write_text

        atomic_write_text(args.output, d.text + "\n")
    return 0


def cmd_t2i(args) -> int:
    out = _check_out(args.output)
    pipe = _pipe(args)
    img = pipe.text_to_image(args.prompt, size=tuple(args.size) if args.size else None, **_kw(args))
    _save_image(img, out)
    _wrote(args, out, img)
    return 0


def cmd_compile(args) -> int:
    out = _check_out(args.output, (".xpt",))
    pairs = _pairs(args.example)
    pipe = _pipe(args)
    task = pipe.compile_prompt(pairs, instruction=args.instruction, mode=args.mode)
    task.save(out)
    if args.json:
        emit(args, {"output": str(out), "positions": task.length, "examples": len(pairs), "mode": args.mode})
        return 0
    print(
        f"wrote {out}: {task.length} cached positions per layer from {len(pairs)} example(s) "
        f"({task.cache.nbytes() / 1024:.0f} KiB)"
    )
    return 0

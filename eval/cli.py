"""``xprompt eval NAME --checkpoint CKPT --out DIR [--limit N] [--seed S] ...``: run a benchmark, write a report.

NAME is ``unseen``, ``seen``, ``raie`` or ``t2i`` (``xprompt.eval.benchmarks``). Heavy imports stay inside the
command function so that ``xprompt --help`` stays fast. Bad input (unknown benchmark, a path that is not a
checkpoint, a MagicBrush directory missing a column, an existing --out without --overwrite) is an
``XPromptError``: one line on stderr, exit code 2; the output directory is checked before any generation.
"""

from __future__ import annotations

from pathlib import Path

from xprompt.cli_options import (
    add_guidance_args,
    add_image_size_option,
    add_json_option,
    add_run_options,
    add_tokenizer_options,
    emit,
    progress_on,
)
from xprompt.errors import XPromptError


def _csv(s: str | None) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()] if s else []


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise XPromptError(f"{out} exists; pass --overwrite to replace it or choose another --out")
        if not (out / "report.json").is_file():
            raise XPromptError(f"{out} exists but is not an xprompt eval report (no report.json); refusing to "
                               "overwrite it")  # fmt: skip


def cmd_compare(args) -> int:
    """``xprompt eval compare --inputs LABEL=DIR[:ROW] ... --out FILE.md [--gap LOW,HIGH]``."""
    import json

    from xprompt.eval.report import compare_markdown
    from xprompt.io_utils import atomic_write_text

    if not args.inputs:
        raise XPromptError("compare needs --inputs LABEL=REPORT_DIR[:ROW] (one per table row)")
    entries = []
    for spec in args.inputs:
        label, sep, rest = spec.partition("=")
        if not sep or not label.strip():
            raise XPromptError(f"--inputs {spec!r}: expected LABEL=REPORT_DIR[:ROW]")
        path, _, row = rest.partition(":")
        f = Path(path) / "report.json" if Path(path).is_dir() else Path(path)
        if not f.is_file():
            raise XPromptError(f"--inputs {spec!r}: no report.json at {f}")
        rep = json.loads(f.read_text())
        row = row or rep["rows"][0]
        if row not in rep["rows"]:
            raise XPromptError(f"--inputs {spec!r}: {f} has rows {rep['rows']}, not {row!r}")
        entries.append((label.strip(), rep, row))
    gap = tuple(x.strip() for x in args.gap.split(",")) if args.gap else None
    if gap is not None and len(gap) != 2:
        raise XPromptError("--gap takes two row labels: LOW,HIGH")
    md = compare_markdown(entries, gap, _csv(args.metrics) or None)
    atomic_write_text(args.out, md)
    if args.json:
        emit(args, {"output": str(args.out), "rows": [e[0] for e in entries], "markdown": md})
    elif args.quiet:
        print(f"xprompt: wrote {args.out}")
    else:
        print(md)
    return 0


def cmd_probe(args) -> int:
    """``xprompt eval probe --checkpoint CKPT --data DIR --out FILE.json [--limit N]``: the in-context probe."""
    import json
    import sys

    import torch

    from xprompt.checkpoint import load_pretrained
    from xprompt.eval.benchmarks import check_checkpoint
    from xprompt.io_utils import atomic_write_text
    from xprompt.paths import shipped
    from xprompt.train.probe import VARIANTS, probe_data

    if not args.data:
        raise XPromptError("probe needs --data: a dataset built by `xprompt data build` (e.g. with "
                           "--mix configs/data_mix_probe.json, so that no instruction gives the task away)")  # fmt: skip
    if args.limit < 1:
        raise XPromptError(f"--limit must be >= 1, got {args.limit}")
    ckpt = check_checkpoint(str(args.checkpoint or shipped("xprompt-tiny")))
    model, vocab = load_pretrained(ckpt, dtype=torch.float32, device=args.device)
    r = probe_data(model, args.data, vocab, n=args.limit, mode=args.example_mode or "xp", seed=args.seed)
    report = {"checkpoint": str(ckpt), "data": str(args.data), "samples": r.n_samples, "summary": r.summary(),
              "metrics": r.metrics, "by_family": r.by_family}  # fmt: skip
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    lines = [
        "| family | " + " | ".join(f"{v} (changed)" for v in VARIANTS) + " | reads example |",
        "|---" * 5 + "|",
    ]
    for fam, d in {**r.by_family, "all": r.metrics}.items():
        if d["right"]["n_changed"]:
            cells = " | ".join(f"{d[v]['changed_loss']:.3f}" for v in VARIANTS)
            lines.append(
                f"| {fam} | {cells} | {d['wrong']['changed_loss'] - d['right']['changed_loss']:+.4f} |"
            )
    if args.json:
        emit(args, {"output": str(args.out), **report})
    elif not args.quiet:
        print("\n".join(lines))
    print(f"xprompt: wrote {args.out}", file=sys.stderr)
    return 0


def cmd_eval(args) -> int:
    import sys

    if args.name == "compare":
        return cmd_compare(args)
    if args.name == "probe":
        return cmd_probe(args)

    from xprompt.eval.benchmarks import EvalConfig, check_checkpoint, run
    from xprompt.eval.report import render_markdown, write_report
    from xprompt.paths import shipped

    cfg = EvalConfig(
        benchmark=args.name, checkpoint=str(args.checkpoint or shipped("xprompt-tiny")), limit=args.limit,
        seed=args.seed, size=args.size or 0, rows=_csv(args.rows), tasks=_csv(args.tasks),
        greedy=True if args.greedy else (False if args.sample else None), batch_size=args.batch_size,
        train_mode=getattr(args, "example_mode", None) or "", clip_weights=args.clip_weights or "", clip_model=args.clip_model,
        dino_weights=args.dino_weights or "", lpips_weights=args.lpips_weights or "",
        store=getattr(args, "store", None) or "", magicbrush=getattr(args, "magicbrush", None) or "",
        magicbrush_split=getattr(args, "split", None) or "", device=args.device, vq=args.vq or "",
        bpe=args.bpe or "", datasets=list(getattr(args, "dataset", None) or []),
        input_dir=getattr(args, "input_dir", None) or "", target_dir=getattr(args, "target_dir", None) or "",
        columns=getattr(args, "columns", None) or "", depth_scale=getattr(args, "depth_scale", 1000.0),
        instruction=getattr(args, "instruction", None) or "", cfg_scale=args.cfg,
        cfg_ref=getattr(args, "cfg_ref", None) or "empty",
    )  # fmt: skip
    out = Path(args.out)
    _check_out(out, args.overwrite)
    check_checkpoint(cfg.checkpoint)
    report, visuals = run(cfg, progress=progress_on(args))
    write_report(out, report, visuals, overwrite=args.overwrite)
    if args.json:
        emit(args, {"output": str(out), "report": report})
    elif not args.quiet:
        print(render_markdown(report))
    print(f"xprompt: wrote {out}/report.json, report.md, grids/, settings.png ({report['elapsed_s']} s)",
          file=sys.stderr)  # fmt: skip
    return 0


BENCHMARK_HELP = {
    "unseen": "unseen tasks (X-Prompt Table 4/5): derain, low-light, object add/remove, depth, inpaint, colorize",
    "seen": "tasks seen in training: dense prediction, low-level restoration, style and geometry",
    "raie": "retrieval-augmented editing: text only vs retrieved example vs oracle example",
    "t2i": "text-to-image",
}


def register(root, groups) -> None:
    p = root.add_parser(
        "eval", help="run a benchmark (unseen, seen, raie, t2i), compare reports, or probe",
        description="Run a benchmark and write report.json, report.md, PNG grids and a bar plot to --out; "
        "`compare` tabulates reports; `probe` asks whether the model reads the example.",
    )  # fmt: skip
    sub = p.add_subparsers(dest="name", metavar="NAME", required=True)
    for name, help_ in BENCHMARK_HELP.items():
        b = sub.add_parser(name, help=help_, description=help_)
        _benchmark_args(b, name)
        b.set_defaults(func=cmd_eval, name=name)
    _register_compare(sub)
    _register_probe(sub)


def _model_args(p, out_help: str) -> None:
    p.add_argument("--checkpoint", default=None, help="model directory (default: checkpoints/xprompt-tiny)")
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--seed", type=int, default=0, help="instance and sampling seed (default 0)")
    add_run_options(p)
    add_json_option(p)


def _benchmark_args(p, name: str) -> None:
    _model_args(p, "report directory to write")
    p.add_argument("--limit", type=int, default=8, help="instances per task (default 8)")
    add_image_size_option(
        p, aliases=("--size",), dest="size", help="image size in px (default: the checkpoint's)"
    )
    add_tokenizer_options(p)
    rows = {
        "unseen": "none,full,xp and the controls wrong,wrong-inst,identity; xp-mask: only the ground-truth "
        "change box is decoded, xp-paste: decoded freely and pasted with that box, xp-automask: as xp-mask "
        "with the mask from the instruction's named object (procedural scenes), xp-changed: as xp-mask, "
        "blended only where the model changed the query's tokens",
        "raie": "text,raie,oracle; xp-mask / xp-paste / xp-automask / xp-changed as for unseen",
        "t2i": "t2i",
    }
    rows["seen"] = rows["unseen"]
    p.add_argument("--rows", default=None, help=f"settings, comma-separated: {rows[name]}")
    p.add_argument("--tasks", default=None, help="restrict to these tasks of the benchmark (comma-separated)")
    if name != "t2i":
        p.add_argument("--example-mode", choices=("xp", "full"), default=None,
                       help="context mode of the raie/oracle rows and the wrong-example controls (default xp)")  # fmt: skip
    g = p.add_mutually_exclusive_group()
    g.add_argument("--greedy", action="store_true", help="greedy decoding everywhere (default: except t2i)")
    g.add_argument("--sample", action="store_true", help="seeded sampling everywhere")
    p.add_argument("--batch-size", type=int, default=8, help="instances decoded together (default 8)")
    add_guidance_args(p, scale=True, ref=name != "t2i")
    p.add_argument("--clip-weights", default=None, help="local open_clip weights for CLIP-I/T/dir")
    p.add_argument("--clip-model", default="ViT-B-32", help="open_clip architecture of --clip-weights")
    p.add_argument("--dino-weights", default=None, help="DINO ViT-S/16 state dict or a transformers dir")
    p.add_argument("--lpips-weights", default=None, help="torchvision AlexNet state dict for LPIPS")
    if name == "raie":
        p.add_argument("--store", default=None, help="RAIE store (default: the default suite store)")
        p.add_argument("--magicbrush", default=None, help="a local MagicBrush-format dataset directory")
        p.add_argument("--split", default=None, help="split of --magicbrush (default test/dev)")
    if name in ("unseen", "seen"):
        _real_dataset_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing report at --out")


def _real_dataset_args(p) -> None:
    p.add_argument("--dataset", action="append", default=None, metavar="NAME=PATH",
                   help="a real dataset instead of the suite (repeatable): lol, rain100h, rain100l, nyuv2, ade20k, "
                   "magicbrush, instructpix2pix, edits (with --columns); layouts in docs/datasets.md")  # fmt: skip
    p.add_argument("--input-dir", default=None, help="a folder of inputs paired by stem with --target-dir")
    p.add_argument("--target-dir", default=None, help="the targets of --input-dir (same file stems)")
    p.add_argument("--columns", default=None,
                   help="edit sets: ROLE=COLUMN,... with roles source, target, instruction (required), mask, turn, "
                   "img_id, caption_in, caption_out")  # fmt: skip
    p.add_argument("--depth-scale", type=float, default=1000.0,
                   help="nyuv2 16-bit PNGs: units per metre (default 1000: mm)")  # fmt: skip
    p.add_argument(
        "--instruction", default=None, help="--dataset/--input-dir: replace the dataset's instruction"
    )


def _register_compare(sub) -> None:
    c = sub.add_parser("compare", help="a results table across reports (Markdown)",
                       description="Tabulate rows of several eval reports into one Markdown table.")  # fmt: skip
    c.add_argument("--out", required=True, help="the Markdown file to write")
    c.add_argument("--inputs", nargs="+", default=None,
                   help="LABEL=REPORT_DIR[:ROW] per table row, e.g. 'No context=runs/u:none'")  # fmt: skip
    c.add_argument("--metrics", default=None, help="metric names to keep (default: the paper's)")
    c.add_argument("--gap", default=None,
                   help="LOW,HIGH row labels; adds the fraction of the gap each other row closes")  # fmt: skip
    c.add_argument("--quiet", action="store_true", help="no table on stdout; still prints where it went")
    add_json_option(c)
    c.set_defaults(func=cmd_eval, name="compare")


def _register_probe(sub) -> None:
    pr = sub.add_parser("probe", help="does the model read the example? (answer loss: right/wrong/no example)",
                        description="Answer loss with the right, a wrong and no example on --data.")  # fmt: skip
    _model_args(pr, "the JSON file to write")
    pr.add_argument("--data", default=None, help="a dataset dir written by `xprompt data build`")
    pr.add_argument("--limit", type=int, default=8, help="samples (default 8)")
    pr.add_argument("--example-mode", choices=("xp", "full"), default=None, help="context mode (default xp)")
    pr.set_defaults(func=cmd_eval, name="probe")

"""``xprompt demo``: in-context generation with the shipped tokenizers and tiny model on packaged photos.

Design choices
* Content is the task suite's evaluation photographs (``split="eval"``: never seen in training), so the demo
  shows generalisation, not memorisation. For each task one example pair and a few queries are drawn with a
  fixed seed; every query is answered from the example pair in context mode ``xp`` (and, with ``--modes``,
  in the other modes for comparison).
* The default tasks are one seen task and held-out tasks (X-Prompt Table 4: derain, low-light enhancement),
  which the shipped model never trained on in the forward direction.
* Output: one PNG grid per run (example input | example output | query | VQ-copy | output | ground truth, one
  row per query and mode) and an HTML page around it, under ``--out``; both paths are printed.
* Every row is judged against two baselines: **copy** (the query returned unchanged) and **VQ-copy** (the
  query through the image tokenizer and back: what a token model gets by copying tokens). The page gives the
  output's MSE against the ground truth beside both and says per row whether the output beats copy; the
  command prints how many rows do.
"""

from __future__ import annotations

import html
import sys
import time
from pathlib import Path

import numpy as np

from xprompt.cli_options import add_guidance_args, add_pipeline_options, emit, pipeline_from_args, progress_on
from xprompt.errors import XPromptError

DEFAULT_TASKS = ("invert", "derain", "low_light_enhance")


def register(root, groups) -> None:
    p = root.add_parser(
        "demo",
        help="run the demo: in-context generation on packaged photos",
        description=__doc__.splitlines()[0],
    )
    p.add_argument(
        "--checkpoint", default=None, help="model checkpoint dir (default: checkpoints/xprompt-tiny)"
    )
    p.add_argument("--out", default="outputs/demo", help="output directory (default: outputs/demo)")
    p.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), help="task names from the task suite")
    p.add_argument("--queries", type=int, default=3, help="queries per task")
    add_pipeline_options(p)
    p.add_argument("--modes", nargs="+", default=["xp"], choices=["xp", "full", "none"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample", action="store_true", help="sample (top-k) instead of greedy decoding")
    add_guidance_args(p, scale=True)
    p.set_defaults(func=run)


def _photo_pairs(task_name: str, n: int, size: int, seed: int):
    """One task instance (params drawn once) and ``1 + n`` of its pairs on evaluation photographs."""
    from xprompt.train.tasks import get_task

    task = get_task(task_name)
    rng = np.random.default_rng(seed)
    params = task.sample_params(rng)
    pairs = []
    for _ in range(50 * (n + 1)):
        pair = task.make_pair(rng, params, size, "eval")
        if pair.source == "photo" and len(pair.inputs) == 1 and isinstance(pair.output, np.ndarray):
            pairs.append(pair)
            if len(pairs) == n + 1:
                return task.instruction(params, index=0), pairs
    raise XPromptError(f"task {task_name!r} does not produce image pairs on photographs; pick another task")


def run(args) -> int:
    from xprompt.paths import shipped
    from xprompt.train.heldout import excluded_tasks

    ckpt = Path(args.checkpoint) if args.checkpoint else shipped("xprompt-tiny")
    if not ckpt.exists():
        raise XPromptError(
            f"model checkpoint not found: {ckpt} (train one with `xprompt train model`, see docs/training.md)"
        )
    t0 = time.time()
    xp = pipeline_from_args(args, ckpt)
    size = xp.image_size
    rows, meta = [], []
    held_out = set(excluded_tasks("train"))
    for task in args.tasks:
        instruction, pairs = _photo_pairs(task, args.queries, size, args.seed)
        example, queries = (pairs[0].inputs[0], pairs[0].output), pairs[1:]
        vqcopy = [xp.decode(xp.encode(q.inputs[0])) for q in queries]
        ceiling = [xp.decode(xp.encode(q.output)) for q in queries]
        for mode in args.modes:  # all queries of a task in one batch
            outs = xp.generate(
                examples=[example],
                query=[q.inputs[0] for q in queries],
                instruction=instruction,
                mode=mode,
                seed=args.seed,
                greedy=not args.sample,
                cfg_scale=args.cfg,
                cfg_ref=args.cfg_ref,
                progress=progress_on(args) and sys.stderr.isatty(),
            )
            for q, vc, vq, out in zip(queries, vqcopy, ceiling, outs, strict=True):
                rows.append([example[0], example[1], q.inputs[0], vc, out, q.output])
                meta.append(
                    row_meta(task, mode, instruction, task in held_out, q.inputs[0], vc, out, q.output, vq)
                )
    out_dir = Path(args.out)
    grid_path, html_path = write_outputs(out_dir, rows, meta, ckpt, time.time() - t0)
    beats = sum(m["beats_copy"] for m in meta)
    if args.json:
        emit(args, {"grid": str(grid_path), "page": str(html_path), "rows": len(meta), "beats_copy": beats})
        return 0
    if not args.quiet:
        print(f"rows beating the copy baseline's MSE: {beats}/{len(meta)}")
    print(f"grid: {grid_path}")
    print(f"page: {html_path}")
    return 0


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def row_meta(task: str, mode: str, instruction: str, held_out: bool, query, vqcopy, out, gt, vq=None) -> dict:
    """One grid row's facts: MSE (8-bit units) of the output, the copy baseline, VQ-copy and (``vq``: the ground
    truth through the tokenizer) the VQ ceiling against the ground truth, and whether the output beats copy
    (strictly lower MSE). When the VQ ceiling does not beat copy either, no output through this tokenizer can."""
    m = {"task": task, "mode": mode, "instruction": instruction, "held_out": held_out, "mse_output": _mse(out, gt),
         "mse_copy": _mse(query, gt), "mse_vqcopy": _mse(vqcopy, gt), "mse_vq": None if vq is None else _mse(vq, gt)}  # fmt: skip
    m["beats_copy"] = m["mse_output"] < m["mse_copy"]
    return m


def write_outputs(out_dir: Path, rows, meta, ckpt: Path, seconds: float) -> tuple[Path, Path]:
    from xprompt.images import image_grid, write_png
    from xprompt.io_utils import atomic_write_text

    out_dir.mkdir(parents=True, exist_ok=True)
    h, w = rows[0][0].shape[:2]
    heads = ["example in", "example out", "query", "VQ copy", "output", "ground truth"]
    caps = [
        f"{m['task']} ({m['mode']}{', held out' if m['held_out'] else ''}): MSE {m['mse_output']:.0f} vs copy "
        f"{m['mse_copy']:.0f}{' - beats copy' if m['beats_copy'] else ''}"
        for m in meta
    ]
    grid = image_grid(
        rows, (2 * h, 2 * w), pad=4, header=heads, captions=caps, strip=14
    )  # 2x: pixels visible
    grid_path = write_png(out_dir / "demo_grid.png", grid)
    cells = []
    img_dir = out_dir / "images"
    img_dir.mkdir(exist_ok=True)
    for i, (row, m) in enumerate(zip(rows, meta, strict=True)):
        names = []
        for j, img in enumerate(row):
            name = f"images/r{i:02d}_{j}.png"
            write_png(out_dir / name, np.kron(img, np.ones((2, 2, 1), np.uint8)))
            names.append(name)
        tag = " (held out)" if m["held_out"] else ""
        imgs = "".join(f'<td><img src="{n}"></td>' for n in names)
        verdict = ("<b style='color:green'>beats copy</b>" if m["beats_copy"]
                   else "<b style='color:#b00'>does not beat copy</b>")  # fmt: skip
        cells.append(
            f"<tr><td><b>{html.escape(m['task'])}</b>{tag}<br>mode {m['mode']}<br>"
            f"<i>{html.escape(m['instruction'])}</i><br>MSE {m['mse_output']:.0f} (copy {m['mse_copy']:.0f}, "
            f"VQ-copy {m['mse_vqcopy']:.0f}"
            + (f", VQ ceiling {m['mse_vq']:.0f}" if m.get("mse_vq") is not None else "")
            + f")<br>{verdict}"
            + (
                "<br>(the VQ ceiling does not beat copy either)"
                if (m.get("mse_vq") or 0) >= m["mse_copy"]
                else ""
            )
            + f"</td>{imgs}</tr>"
        )
    n_beat = sum(m["beats_copy"] for m in meta)
    page = (
        "<!doctype html><meta charset='utf-8'><title>xprompt demo</title>"
        "<style>body{font-family:sans-serif}td{padding:4px;vertical-align:top}img{image-rendering:pixelated}"
        "</style><h1>xprompt demo</h1>"
        f"<p>Model <code>{html.escape(str(ckpt))}</code>; {len(rows)} generations in {seconds:.0f} s. "
        "Each row: the in-context example pair, the query (a photograph never used in training), the query "
        "through the image tokenizer (<i>VQ-copy</i>: what a token model gets by copying tokens), the model's "
        "output, and the ground truth. MSE is against the ground truth (8-bit units); <i>copy</i> is the score "
        "of returning the query unchanged, <i>VQ ceiling</i> that of the ground truth through the image tokenizer "
        "(about the best an output through this tokenizer can do). "
        f"<b>{n_beat} of {len(meta)} rows beat the copy baseline's MSE.</b></p>"
        "<table><tr><th></th><th>example input</th><th>example output</th>"
        "<th>query</th><th>VQ-copy</th><th>output</th><th>ground truth</th></tr>"
        + "".join(cells)
        + "</table>"
    )
    html_path = out_dir / "index.html"
    atomic_write_text(html_path, page)
    return grid_path, html_path

"""Benchmark reports: ``report.json``, ``report.md``, per-task PNG grids and a bar plot of the settings.

Design choices
* ``report.json`` is the source of truth (config, checkpoint facts, per-task results per row, per-sample
  scores, retrieved examples); ``report.md`` is rendered from it alone (``render_markdown``), so a report can
  be re-rendered later without re-running the model.
* Markdown mirrors the paper's tables: one table per task (rows = settings, columns = that task's metrics with
  the direction arrow), then a summary table of each task's first metric. The copy baseline and the VQ
  ceiling are rows of every table. ``unavailable: ...`` markers are printed as they are.
* Grids (``grids/<task>.png``): one row per shown sample: example input | example output (the retrieved pair
  in the raie benchmark) | query | one output per setting | ground truth, cells upscaled (nearest) to
  ``cell`` px, a caption strip with the instruction (and the retrieved instruction and its score, for RAIE). Bar plot (``settings.png``, matplotlib Agg): per task, its first
  available metric for every row; unavailable values are left out and named in the panel.
* Everything is written into a temp dir and swapped in at the end (``atomic_dir``); an existing output is
  only replaced with ``overwrite`` and only if it holds a ``report.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from xprompt.eval.metrics import lower_is_better
from xprompt.io_utils import atomic_dir

METRIC_NAMES = {
    "psnr": "PSNR", "ssim": "SSIM", "l1": "L1", "l2": "L2", "mse": "MSE", "lpips": "LPIPS", "rmse": "RMSE",
    "miou": "mIoU", "angle": "Mean angle err.", "clip_i": "CLIP-I", "clip_t": "CLIP-T", "clip_dir": "CLIP-dir",
    "dino": "DINO", "closer": "Chg. px closer", "changed_psnr": "Chg. PSNR", "success": "Edit success", "object": "Object",
    "color": "Colour", "count": "Count", "position": "Position", "overall": "Overall",
    "depth_rmse": "RMSE (m)", "absrel": "AbsRel", "delta1": "δ1", "ade_miou": "mIoU",
}  # fmt: skip
DECIMALS = {"psnr": 2, "miou": 2, "angle": 2, "ade_miou": 2}
SHORT_LABELS = {
    "none": "no context", "full": "in-ctx w/o XP", "xp": "in-ctx w/ XP", "text": "text only", "raie": "+ RAIE",
    "oracle": "+ same-task ex.", "vq": "VQ ceiling", "gt": "GT render", "t2i": "generated", "copy": "copy",
    "wrong": "wrong example", "wrong-inst": "wrong instance", "identity": "identity ex.", "vqcopy": "VQ-copy",
}  # fmt: skip


def fmt(metric: str, v) -> str:
    if isinstance(v, str):
        return v
    if v is None:
        return "-"
    return f"{v:.{DECIMALS.get(metric, 3)}f}"


def header(metric: str) -> str:
    return f"{METRIC_NAMES.get(metric, metric)} {'↓' if lower_is_better(metric) else '↑'}"


def primary_metric(t: dict) -> str:
    """The task's first metric that has a number in some row (CLIP-dir without weights falls through)."""
    for m in t["metrics"]:
        if any(isinstance(r.get(m), (int, float)) for r in t["results"].values()):
            return m
    return t["metrics"][0]


def render_markdown(report: dict) -> str:
    cfg, ck = report["config"], report["checkpoint"]
    rows, labels = report["rows"], report["row_labels"]
    lines = [
        f"# xprompt eval: {report['benchmark']}",
        "",
        f"- checkpoint: `{ck.get('path')}` ({', '.join(f'{k}={v}' for k, v in ck.items() if k != 'path')})",
        (
            f"- images {report['size']} px, {cfg['limit']} instances per task, seed {cfg['seed']}, "
            f"{'greedy' if report['greedy'] else 'sampled'} decoding, {report.get('elapsed_s', '?')} s"
        ),
        "- rows: " + "; ".join(f"**{labels[r]}** (`{r}`)" for r in rows),
        (
            "- the copy baseline returns the query unchanged; VQ-copy is the query through the image tokenizer "
            "and back (what a token model gets by copying the query's tokens); the VQ ceiling is the ground truth "
            "passed through the image tokenizer (practically the ceiling of a model decoding through that "
            "tokenizer); wrong-example rows show another pair with the same query and instruction"
        ),
    ]
    rt = report.get("retrieval")
    if rt:
        lines.append(
            f"- retrieval: store `{rt['store'] or '(in memory)'}` ({rt['entries']} entries), encoder "
            f"`{rt['encoder']}` (version {rt['encoder_version']})"
        )
    for d in report.get("datasets", []):
        lines.append(f"- dataset `{d['name']}`: `{d['path']}` (file-list fingerprint `{d['fingerprint']}`), "
                     f"{d['n']} queries from split `{d['test_split']}`, examples from `{d['example_split']}` "
                     f"(seed {d['example_seed']})")  # fmt: skip
    tm = ck.get("train_mode")
    if tm and any(r in ("full", "xp") and r != tm for r in rows):
        other = [r for r in rows if r in ("full", "xp") and r != tm]
        lines.append(f"- note: this checkpoint was trained in `{tm}` mode, so the {other} row(s) run it in a context "
                     "layout it never saw in training; compare with a checkpoint trained in that mode")  # fmt: skip
    lines.append("")
    for task, t in report["tasks"].items():
        ms = t["metrics"]
        lines += [f"## {t['label']} (`{task}`, n = {t['n']})", ""]
        gap = t.get("gap_closed")
        gap_head = [f"Gap closed ({METRIC_NAMES.get(gap['metric'], gap['metric'])})"] if gap else []
        lines.append("| Setting | " + " | ".join([header(m) for m in ms] + gap_head) + " |")
        lines.append("|---|" + "---|" * (len(ms) + len(gap_head)))
        for r in rows:
            cells = [fmt(m, t["results"][r].get(m)) for m in ms] + ([pct(gap["rows"].get(r))] if gap else [])
            lines.append(f"| {labels[r]} | " + " | ".join(cells) + " |")
        lines.append("")
        for ctrl, sv in t.get("sensitivity", {}).items():
            lines.append(f"Example sensitivity (`{sv['reference']}` vs `{ctrl}`, same query): outputs differ by "
                         f"{sv['pixel_mad']:.2f}/255 mean abs pixel, {100 * sv['identical']:.0f} % identical"
                         + (f"; first image-token logits move by max |Δ| {sv['logit_max_abs_diff']:.3f} "
                            f"(largest {sv['logit_max_abs_diff_max']:.3f}; logit std {sv['logit_std']:.3f})"
                            if "logit_max_abs_diff" in sv else "") + ".")  # fmt: skip
            lines.append("")
    tasks = list(report["tasks"].items())
    if len(tasks) > 1:
        prim = [(t, primary_metric(t)) for _, t in tasks]
        lines += ["## Summary (first available metric of each task)", ""]
        lines.append("| Setting | " + " | ".join(f"{t['label']} {header(m)}" for t, m in prim) + " |")
        lines.append("|---|" + "---|" * len(prim))
        for r in rows:
            lines.append(
                f"| {labels[r]} | " + " | ".join(fmt(m, t["results"][r].get(m)) for t, m in prim) + " |"
            )
        lines.append("")
    lines += reading_table(report)
    return "\n".join(lines)


def pct(v) -> str:
    return f"{round(100 * v)} %" if isinstance(v, (int, float)) else "n/a"  # an int: no "-0 %"


def reading_table(report: dict) -> list[str]:
    """Markdown lines: per task, the main metric of the model rows beside the controls and references, the gap
    closed and the example sensitivity; then the mean gap closed over the tasks whose VQ ceiling beats copy."""
    tasks = [(k, t) for k, t in report["tasks"].items() if "gap_closed" in t]
    if not tasks:
        return []
    rows = report["rows"]
    model_rows = [r for r in rows if r not in ("copy", "vqcopy", "vq", "gt")]
    ctrls = [
        c for c in ("wrong", "wrong-inst", "identity") if any(c in t.get("sensitivity", {}) for _, t in tasks)
    ]
    head = ["Task", "metric"] + [SHORT_LABELS.get(r, r) for r in rows]
    head += [f"gap closed ({SHORT_LABELS.get(r, r)})" for r in model_rows]
    head += [f"sens. vs {c} (px / logit Δ÷std)" for c in ctrls]
    lines = ["## Main metric, gap closed and example sensitivity", "",
             ("Gap closed = (row − copy) / (VQ ceiling − copy) on the main metric (n/a when the VQ ceiling does "
              "not beat copy). Sensitivity = mean abs pixel difference (0–255) between the outputs with the right "
              "and the control example, and the first image-token logits' max |Δ| divided by their std."), "",
             "| " + " | ".join(head) + " |", "|---|" + "---|" * (len(head) - 1)]  # fmt: skip
    for _, t in tasks:
        g = t["gap_closed"]
        m = g["metric"]
        cells = [t["label"], header(m)] + [fmt(m, t["results"][r].get(m)) for r in rows]
        cells += [pct(g["rows"].get(r)) for r in model_rows]
        for c in ctrls:
            sv = t.get("sensitivity", {}).get(c)
            if not sv:
                cells.append("-")
                continue
            lg = sv.get("logit_max_abs_diff")
            ratio = f" / {lg / sv['logit_std']:.3f}" if lg is not None and sv.get("logit_std") else ""
            cells.append(f"{sv['pixel_mad']:.2f}{ratio}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    mg = report.get("gap_closed")
    if mg:
        n = len(mg["tasks"])
        lines.append(f"Mean gap closed over the {n} task(s) whose VQ ceiling beats copy: "
                     + ", ".join(f"`{r}` {pct(mg['mean'].get(r))} (median {pct(mg.get('median', {}).get(r))}, "
                                 f"beats copy on {mg['beats_copy'].get(r, 0)}/{n})" for r in model_rows)
                     + ".")  # fmt: skip
        nt = mg.get("n_tasks")
        if mg.get("matches_vqcopy"):
            lines.append(f"At least matching VQ-copy on the main metric (of {nt} tasks): "
                         + ", ".join(f"`{r}` {v}" for r, v in mg["matches_vqcopy"].items()) + ".")  # fmt: skip
        if mg.get("xp_beats_control"):
            lines.append(f"`xp` (right example) beating the control on the main metric (of {nt} tasks): "
                         + ", ".join(f"`{r}` {v}" for r, v in mg["xp_beats_control"].items()) + ".")  # fmt: skip
        lines.append("")
    return lines


# ---------------------------------------------------------------------- images
def grid_image(visuals, row_labels: dict, cell: int = 128) -> np.ndarray:
    """uint8 image: a header strip, then per sample a caption strip and the image cells."""
    from xprompt.images import image_grid

    if not visuals:
        return np.full((cell, cell, 3), 255, np.uint8)
    out_rows = list(visuals[0].outputs)
    has_example = any(v.example is not None for v in visuals)
    heads = (["example in", "example out"] if has_example else []) + ["query"]
    heads += [SHORT_LABELS.get(r, row_labels.get(r, r)) for r in out_rows] + ["ground truth"]
    rows = []
    for v in visuals:
        ex = list(v.example) if v.example else [None, None]
        rows.append((ex if has_example else []) + [v.query] + [v.outputs[r] for r in out_rows] + [v.target])
    return image_grid(rows, (cell, cell), header=heads, captions=[v.note for v in visuals])


def bar_plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(report["tasks"].items())
    rows, labels = report["rows"], report["row_labels"]
    n = len(tasks)
    cols = min(4, n)
    nrows = (n + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.2 * nrows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (task, t) in zip(axes.ravel(), tasks, strict=False):
        m = primary_metric(t)
        vals = [t["results"][r].get(m) for r in rows]
        ok = [i for i, v in enumerate(vals) if isinstance(v, (int, float))]
        ax.bar([rows[i] for i in ok], [vals[i] for i in ok], color=[colors[i % len(colors)] for i in ok])
        missing = [rows[i] for i in range(len(rows)) if i not in ok]
        title = f"{t['label']}\n{header(m)}"
        ax.set_title(title + (f"\n(n/a: {', '.join(missing)})" if missing else ""), fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.suptitle(f"xprompt eval {report['benchmark']}: settings compared", fontsize=11)
    legend = "   ".join(f"{r} = {labels[r]}" for r in rows)
    fig.text(0.5, 0.005, legend, ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(out: str | Path, report: dict, visuals: dict, *, overwrite: bool = False) -> Path:
    """Write report.json, report.md, grids/<task>.png and settings.png into ``out`` atomically."""
    from xprompt.images import write_png

    out = Path(out)
    with atomic_dir(out, overwrite=overwrite, marker="report.json") as tmp:
        (tmp / "report.json").write_text(json.dumps(report, indent=1, sort_keys=False) + "\n")
        (tmp / "report.md").write_text(render_markdown(report))
        (tmp / "grids").mkdir()
        for task, vis in visuals.items():
            write_png(tmp / "grids" / f"{task}.png", grid_image(vis, report["row_labels"]))
        bar_plot(report, tmp / "settings.png")
    return out


# ---------------------------------------------------------------------- comparing runs (the ablation table)
def gap_closed(none: float, ctx: float, full: float) -> float | None:
    """Fraction of the gap from ``none`` to ``full`` that ``ctx`` closes (direction-free); None if no gap."""
    if not all(isinstance(v, (int, float)) for v in (none, ctx, full)) or abs(full - none) < 1e-12:
        return None
    return (ctx - none) / (full - none)


EXTRA_METRICS = ("changed_psnr", "closer")  # ours, left out of the comparison table unless asked for


def compare_markdown(
    entries: list[tuple[str, dict, str]], gap: tuple[str, str] | None = None, metrics: list[str] | None = None
) -> str:
    """A results table across runs: ``entries`` = (row label, report dict, row key in that report).

    Columns are every (task, metric) with a number in some entry, in the first report's order (``metrics``
    restricts the metric names; by default the changed-region metrics are left out); with
    ``gap=(low_label, high_label)`` one more row per other entry gives the fraction of the low->high gap that
    entry closes, per column (X-Prompt's "in-context closes 65-84 % of the gap" figure).
    """
    cols: list[tuple[str, str, str]] = []  # (task, metric, header)
    for _, rep, _ in entries:
        for task, t in rep["tasks"].items():
            for m in t["metrics"]:
                if (m not in metrics) if metrics else (m in EXTRA_METRICS):
                    continue
                vals = [
                    r["tasks"].get(task, {}).get("results", {}).get(row, {}).get(m) for _, r, row in entries
                ]
                if any(isinstance(v, (int, float)) for v in vals) and (task, m) not in [c[:2] for c in cols]:
                    cols.append((task, m, f"{t['label']} {header(m)}"))

    def value(rep, row, task, m):
        return rep["tasks"].get(task, {}).get("results", {}).get(row, {}).get(m)

    lines = ["| Setting | " + " | ".join(c[2] for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for label, rep, row in entries:
        lines.append(f"| {label} | " + " | ".join(fmt(m, value(rep, row, t, m)) for t, m, _ in cols) + " |")
    if gap:
        by = {label: (rep, row) for label, rep, row in entries}
        missing = [g for g in gap if g not in by]
        if missing:
            from xprompt.errors import XPromptError

            raise XPromptError(f"--gap names {missing}, which are not among the rows {list(by)}")
        lo, hi = by[gap[0]], by[gap[1]]
        for label, rep, row in entries:
            if label in gap:
                continue
            cells = []
            for t, m, _ in cols:
                g = gap_closed(value(*lo, t, m), value(rep, row, t, m), value(*hi, t, m))
                cells.append("n/a" if g is None else f"{100 * g:.0f} %")
            lines.append(f"| gap closed by {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

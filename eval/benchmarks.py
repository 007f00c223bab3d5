"""Benchmarks: ``unseen`` (X-Prompt Tables 4-5), ``seen`` (Table 1), ``raie`` (Table 3), ``t2i`` (Table 2).

Design choices
* **Instances** come from the task suite's ``make_eval_instances(task, n, size, seed)``: evaluation photos and
  a scene seed stream disjoint from training, one example pair of the *same task instance* (same palette, same
  edit, same strength) drawn with the seed. ``--limit`` is the number of instances per task, ``--seed`` the
  instance seed and the sampling seed; ``size`` defaults to the checkpoint's training image size.
* **Rows** (settings) per benchmark, all with the task's instruction, so the example is the only difference:
    unseen/seen: ``none`` (instruction only), ``full`` (example, plain causal attention), ``xp`` (example
      behind the X-Prompt bottleneck); ``full`` is meaningful only for a model trained in ``full`` mode.
      Controls (same query, same instruction, another example, run in the example mode like ``xp``):
      ``wrong`` (the pair of another task: instance i of the next task in the list; a default row),
      ``wrong-inst`` (instance i + 1 of the same task), ``identity`` (the example input as its own output).
      Only the difference between ``xp`` and a control is evidence that the model reads the example
      (``sensitivity`` in the report: how much the output and the first answer code's logits move).
    raie: ``text`` (instruction only), ``raie`` (the nearest stored instruction's pair as the example, from
      the default store or ``--store``), optionally ``oracle`` (the instance's own example pair).
    t2i: ``t2i`` (the generated image); plus ``gt`` (the ground-truth render: the detector's ceiling).
  Every image benchmark adds ``copy`` (the query returned unchanged, docs/design.md's copy baseline) and ``vq``
  (the ground truth through the image tokenizer and back: practically the best a model decoding through this
  tokenizer can do); unseen/seen add ``vqcopy`` (the query through the tokenizer and back: what a token model
  gets by copying the query's tokens) and, per task, the fraction of the copy -> VQ-ceiling gap each row
  closes on the task's main metric (``gap_closed``; the mean over tasks whose VQ ceiling beats copy at the top).
* **Metrics** per task follow the paper's tables (see ``TASKS``), plus two changed-region metrics on every
  image task (pixels where query and ground truth differ): ``changed_psnr`` (PSNR there) and ``closer`` (the
  fraction of them that moved toward the ground truth; the copy baseline scores 0, but any output far from
  a dark or grey query can score high, so read it beside ``changed_psnr``), and ``success`` (the procedural
  detector: the edit is visible and every other object of the ground truth is still there) on edits. CLIP / DINO / LPIPS need local weights; without them they are reported as
  ``unavailable: no weights``.
* **Generation** is greedy by default (deterministic), except text-to-image, which samples (top-k 2000, as
  Lumina-mGPT) from a fixed seed unless ``greedy=True``. Instances are generated in batches through
  ``xprompt.generation.generate_images`` (rows padded; one prefill per batch).
* A MagicBrush-format local dataset (``--magicbrush DIR``: a ``datasets`` directory or parquet files with
  ``source_img``, ``target_img``, ``instruction``; optional ``input_caption``/``output_caption`` for CLIP-T /
  CLIP-dir) replaces the procedural edits in ``raie``; predictions are resized to the ground truth's size, as
  MagicBrush's evaluation script does.
* **Layout**: this module is the runner (``run``: tasks x rows -> report and grid visuals). What a run is --
  task tables, rows, ``EvalConfig`` -- is ``eval_config.py``; samples are ``items.py``; metric values and
  report entries ``scoring.py``; how a row's outputs are generated ``rows.py``; the example-reading controls
  and the copy -> VQ gap ``controls.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xprompt.errors import XPromptError
from xprompt.eval.controls import add_reading, mean_gap_closed, wrong_examples
from xprompt.eval.eval_config import (
    GEN_ROWS,
    MAGICBRUSH_SPEC,
    MASK_ROWS,
    ROW_LABELS,
    TASKS,
    WRONG_ROWS,
    EvalConfig,
    TaskSpec,
)
from xprompt.eval.items import Item, magicbrush_items, suite_items
from xprompt.eval.masked import MASK_METRICS
from xprompt.eval.rows import (
    baseline_preds,
    batch_ranges,
    generated_row,
    guidance,
    raie_row,
    row_seed,
)
from xprompt.eval.scoring import Scorers, task_report


def check_checkpoint(path: str) -> Path:
    """A model checkpoint directory (xprompt's ``meta.json`` layout, or a transformers Chameleon dir), or a
    one-line error -- checked before anything is loaded or generated."""
    import json

    p = Path(path)
    if not p.exists():
        raise XPromptError(f"checkpoint not found: {p}")
    hint = "pass the directory written by `xprompt train model` / save_pretrained, or an HF Chameleon dir"
    if not p.is_dir() or not (p / "config.json").is_file():
        raise XPromptError(f"{p} is not a model checkpoint (expected a directory with config.json); {hint}")
    if not (p / "meta.json").is_file():
        try:
            hf = json.loads((p / "config.json").read_text()).get("model_type")
        except (json.JSONDecodeError, AttributeError):
            hf = None
        if not hf:
            raise XPromptError(f"{p} is not a model checkpoint (no meta.json, and config.json is not a "
                               f"transformers model config -- an image-tokenizer dir?); {hint}")  # fmt: skip
    return p


def checkpoint_info(pipe) -> dict:
    info = {"path": pipe.checkpoint, "image_size": pipe.image_size,
            "image_tokenizer_factor": int(pipe.image_tok.factor)}  # fmt: skip
    try:
        from xprompt.checkpoint import read_meta

        extra = read_meta(pipe.checkpoint).get("extra", {})
    except XPromptError:
        return info
    tc = (extra.get("training") or {}).get("train_config") or {}
    for key in ("mode", "context_mode", "split", "steps", "preset"):
        if key in tc:
            info[f"train_{key}"] = tc[key]
    if "step" in extra:
        info["step"] = extra["step"]
    return info


def row_examples(
    cfg: EvalConfig, task: str, row: str, items: list[Item], size: int
) -> tuple[list, list | None]:
    """The example pair per item of a generated row (None for rows without one) and, for rows with examples,
    where each came from (``{"task", "index"}``; the report's ``example_from``)."""
    if row in ("none", "text", "t2i"):
        return [None] * len(items), None
    if row in WRONG_ROWS:
        return wrong_examples(cfg.benchmark, task, row, len(items), size, cfg.seed)
    examples = [it.example for it in items]
    if any(e is None for e in examples):
        raise XPromptError(f"row {row!r} needs an example pair per item; this dataset has none")
    return examples, [{"task": task, "index": i} for i in range(len(items))]


# ---------------------------------------------------------------------- the runner
@dataclass
class Visual:
    """What a grid row shows for one item."""

    example: tuple[np.ndarray, np.ndarray] | None
    query: Any
    outputs: dict[str, np.ndarray]
    target: np.ndarray
    note: str = ""


def _note(it: Item, retrieved: dict | None) -> str:
    if retrieved is None:
        return it.instruction
    return f"{it.instruction}  |  retrieved ({retrieved['score']:.2f}): {retrieved['instruction']}"


def report_header(cfg: EvalConfig, pipe, size: int, greedy: bool, rows: list[str], store) -> dict[str, Any]:
    """The report's settings (config, checkpoint, rows; the store and encoder that retrieved, for raie)."""
    from dataclasses import asdict

    report: dict[str, Any] = {
        "benchmark": cfg.benchmark, "config": asdict(cfg), "checkpoint": checkpoint_info(pipe), "size": size,
        "greedy": greedy, "rows": rows, "row_labels": {r: ROW_LABELS[r] for r in rows}, "tasks": {},
    }  # fmt: skip
    if (
        store is not None
    ):  # which store and encoder retrieved the examples (the default store follows the default)
        report["retrieval"] = {
            "store": str(store.path) if store.path else "",
            "entries": len(store),
            "encoder": store.encoder.spec,
            "encoder_version": store.encoder.version,
        }
    return report


class TaskSource:
    """Where a run's tasks, items and example pairs come from: the task suite, a MagicBrush set (raie), or
    real datasets (``--dataset``, ``eval/real.py``)."""

    def __init__(self, cfg: EvalConfig, size: int):
        self.cfg, self.size, self.real = cfg, size, None
        if cfg.real:
            from xprompt.eval.real import RealSuite

            self.real = RealSuite(cfg)

    def specs(self) -> list[TaskSpec]:
        if self.cfg.magicbrush:
            return [MAGICBRUSH_SPEC]
        if self.real:
            return self.real.specs
        return [s for s in TASKS[self.cfg.benchmark] if not self.cfg.tasks or s.task in self.cfg.tasks]

    def items(self, ti: int, spec: TaskSpec) -> list[Item]:
        if self.cfg.magicbrush:
            return magicbrush_items(self.cfg.magicbrush, self.cfg.limit, self.cfg.magicbrush_split)
        if self.real:
            return self.real.items(ti)
        return suite_items(spec.task, self.cfg.limit, self.size, self.cfg.seed)

    def examples(self, ti: int, spec: TaskSpec, row: str, items: list[Item]) -> tuple[list, list | None]:
        if row in MASK_ROWS and self.cfg.benchmark == "raie":  # the masked RAIE flow retrieves its own
            return [None] * len(items), None
        if self.real:
            return self.real.row_examples(ti, row, items)
        return row_examples(self.cfg, spec.task, row, items, self.size)


def run(cfg: EvalConfig, pipe=None, *, progress: bool = True, n_visual: int = 4) -> tuple[dict, dict]:
    """Run a benchmark -> (report dict, {task: [Visual]}) for ``report.write_report``."""
    import time

    from tqdm.auto import tqdm

    t0 = time.time()
    if pipe is None:
        from xprompt.pipeline import XPrompt

        pipe = XPrompt.from_pretrained(
            check_checkpoint(cfg.checkpoint), device=cfg.device, vq=cfg.vq or None, bpe=cfg.bpe or None
        )
    size = int(cfg.size or pipe.image_size)
    t2i = cfg.benchmark == "t2i"
    greedy = (not t2i) if cfg.greedy is None else bool(cfg.greedy)
    example_mode = cfg.train_mode or "xp"
    scorers = Scorers.load(cfg)
    source = TaskSource(cfg, size)
    specs = source.specs()
    if set(MASK_ROWS) & set(cfg.rows):  # in/out-of-mask metrics for every row, so the baselines compare
        specs = [TaskSpec(s.task, s.label, s.metrics + MASK_METRICS) for s in specs]
    store = None
    if "raie" in cfg.rows or (set(MASK_ROWS) & set(cfg.rows) and cfg.benchmark == "raie"):
        from xprompt.retrieval.default_store import open_store

        store = open_store(cfg.store or None, quiet=not progress)
    ctx_bench = cfg.benchmark in ("unseen", "seen")  # the benchmarks with controls, VQ-copy and gap closed
    extra_rows = ["gt", "vq"] if t2i else (["copy", "vqcopy", "vq"] if ctx_bench else ["copy", "vq"])
    rows = list(cfg.rows) + extra_rows
    report = report_header(cfg, pipe, size, greedy, rows, store)
    visuals: dict[str, list[Visual]] = {}
    n_batches = len(specs) * len(cfg.rows) * len(batch_ranges(cfg.limit, cfg.batch_size))
    bar = tqdm(total=n_batches, desc=f"eval {cfg.benchmark}", unit="batch", disable=not progress)
    for ti, spec in enumerate(specs):
        items = source.items(ti, spec)
        retrieved: list[dict] = []
        retrieved_pairs: list = []
        preds: dict[str, list[np.ndarray]] = {}
        used: dict[str, tuple[list, list[dict]]] = {}  # example rows: (pairs, where each came from)
        for ri, row in enumerate(cfg.rows):
            if row == "raie":
                seeds = [
                    row_seed(cfg.seed, ti, ri, bi)
                    for bi in range(len(batch_ranges(len(items), cfg.batch_size)))
                ]
                preds[row], retrieved, retrieved_pairs = raie_row(
                    pipe, store, items, example_mode, cfg.batch_size, seeds, greedy, bar, guidance(cfg)
                )
                continue
            examples, sources = source.examples(ti, spec, row, items)
            if sources is not None:
                used[row] = (examples, sources)
            mode = GEN_ROWS[row] or example_mode
            preds[row] = generated_row(
                pipe, cfg, row, items, examples, mode, (ti, ri), greedy, t2i, store, bar
            )
        preds.update(baseline_preds(pipe, items, t2i))
        preds.update({"vqcopy": [pipe.decode(pipe.encode(it.query)) for it in items]} if ctx_bench else {})
        report["tasks"][spec.task] = task_report(spec, items, preds, rows, scorers, retrieved)
        if ctx_bench:
            add_reading(report["tasks"][spec.task], pipe, items, preds, used, example_mode, cfg.batch_size)

        visuals[spec.task] = [
            Visual(None if t2i else (retrieved_pairs[i] if retrieved_pairs else it.example), it.query,
                   {r: preds[r][i] for r in rows if r != "copy"}, it.target, _note(it, retrieved[i] if retrieved else None))
            for i, it in enumerate(items[:n_visual])
        ]  # fmt: skip
    bar.close()
    if ctx_bench:
        report["gap_closed"] = mean_gap_closed(report)
    if source.real:
        report["datasets"] = source.real.describe()
    report["elapsed_s"] = round(time.time() - t0, 1)
    return report, visuals

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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from xprompt.errors import XPromptError
from xprompt.eval import metrics as M
from xprompt.eval.masked import (
    AUTO_ROW,
    MASK_METRICS,
    MASK_ROW,
    MASK_ROWS,
    METRIC_FUNCS,
    PASTE_ROW,
    masked_batch,
    masked_raie,
)
from xprompt.eval.metrics_real import REAL_METRICS, REAL_REDUCERS

BENCHMARKS = ("unseen", "seen", "raie", "t2i")


@dataclass(frozen=True)
class TaskSpec:
    task: str
    label: str
    metrics: tuple[str, ...]


_EDIT = ("clip_dir", "clip_t", "success", "psnr", "ssim", "changed_psnr", "closer")
_SEEN_EDIT = ("success", "psnr", "ssim", "changed_psnr", "closer")  # edit success is the main metric
TASKS: dict[str, tuple[TaskSpec, ...]] = {
    "unseen": (
        TaskSpec("low_light_enhance", "Low-light enh.", ("psnr", "ssim", "changed_psnr", "closer")),
        TaskSpec("derain", "Derain", ("psnr", "ssim", "changed_psnr", "closer")),
        TaskSpec("add_object", "Object addition", _EDIT),
        TaskSpec("remove_object", "Object removal", _EDIT),
        TaskSpec("depth_reserved", "Depth (unseen palette)", ("rmse", "changed_psnr", "closer")),
        TaskSpec("inpainting", "Inpainting", ("mse", "lpips", "psnr", "changed_psnr", "closer")),
        TaskSpec("colorization", "Colorization", ("mse", "lpips", "psnr", "changed_psnr", "closer")),
    ),
    "seen": (
        TaskSpec("depth", "Depth", ("rmse", "changed_psnr", "closer")),
        TaskSpec("segmentation", "Segmentation", ("miou", "changed_psnr", "closer")),
        TaskSpec("normals", "Surface normals", ("angle", "changed_psnr", "closer")),
        TaskSpec("deblur", "Deblur", ("psnr", "ssim", "changed_psnr", "closer")),
        TaskSpec("denoise", "Denoise", ("psnr", "ssim", "changed_psnr", "closer")),
        TaskSpec("dehaze", "Dehaze", ("psnr", "ssim", "changed_psnr", "closer")),
        TaskSpec("super_resolution", "Super-resolution", ("psnr", "ssim", "changed_psnr", "closer")),
        TaskSpec("jpeg_restore", "JPEG restore", ("psnr", "ssim", "changed_psnr", "closer")),
        # style and geometric tasks (train/tasks_style.py): parameters drawn per instance (which channels
        # swap, which palette, which flip), so only the example tells them apart
        TaskSpec("invert", "Invert", ("psnr", "ssim", "changed_psnr", "closer")),
        TaskSpec("channel_swap", "Channel swap", ("psnr", "ssim", "changed_psnr", "closer")),
        TaskSpec("palette_map", "Palette map", ("psnr", "ssim", "changed_psnr", "closer")),
        TaskSpec("posterize", "Posterize", ("psnr", "ssim", "changed_psnr", "closer")),
        TaskSpec("sepia", "Sepia", ("psnr", "ssim", "changed_psnr", "closer")),
        TaskSpec("flip_rotate", "Flip / rotate", ("psnr", "ssim", "changed_psnr", "closer")),
        # the scene edits of the train split (add/remove object are held out: they are in ``unseen``)
        TaskSpec("recolor", "Recolour", _SEEN_EDIT),
        TaskSpec("move", "Move", _SEEN_EDIT),
        TaskSpec("resize", "Resize", _SEEN_EDIT),
        TaskSpec("replace_background", "Background", _SEEN_EDIT),
    ),
    "raie": tuple(
        TaskSpec(
            t,
            lab,
            (
                "success",
                "psnr",
                "ssim",
                "l1",
                "changed_psnr",
                "closer",
                "clip_i",
                "clip_t",
                "clip_dir",
                "dino",
            ),
        )
        for t, lab in (
            ("recolor", "Recolour"),
            ("move", "Move"),
            ("resize", "Resize"),
            ("replace_background", "Background"),
            ("add_object", "Add object"),
            ("remove_object", "Remove object"),
        )
    ),
    "t2i": (TaskSpec("text_to_image", "Text-to-image", ("object", "color", "count", "position", "overall")),),
}
MAGICBRUSH_SPEC = TaskSpec("magicbrush", "MagicBrush", ("l1", "l2", "clip_i", "dino", "clip_t", "clip_dir"))
DEFAULT_ROWS = {"unseen": ("none", "full", "xp", "wrong"), "seen": ("xp", "wrong"), "raie": ("text", "raie"),
                "t2i": ("t2i",)}  # fmt: skip
_CTX_ROWS = ("none", "full", "xp", "wrong", "wrong-inst", "identity")
_MASK_ROWS = MASK_ROWS  # eval/masked.py: xp-mask, xp-paste, xp-automask
ALLOWED_ROWS = {"unseen": (*_CTX_ROWS, *_MASK_ROWS), "seen": (*_CTX_ROWS, *_MASK_ROWS),
                "raie": ("text", "raie", "oracle", *_MASK_ROWS), "t2i": ("t2i",)}  # fmt: skip
WRONG_ROWS = ("wrong", "wrong-inst", "identity")  # controls: same query and instruction, another example pair
GEN_ROWS = {
    "none": "none",
    "full": "full",
    "xp": "xp",
    "wrong": None,  # None: the example mode (``--example-mode``, default xp), like raie/oracle
    "wrong-inst": None,
    "identity": None,
    "text": "none",
    "raie": None,
    "oracle": None,
    "t2i": "none",
    MASK_ROW: None,  # the example mode, decoding only the ground-truth change box (``eval/masked.py``)
    PASTE_ROW: None,  # the example mode, decoded freely, pasted into the query with the same box
    AUTO_ROW: None,  # as xp-mask, with the mask from the instruction's named object
}
ROW_LABELS = {
    "none": "No in-context", "full": "In-context w/o XP", "xp": "In-context w/ XP", "text": "Text prompt",
    "raie": "+ RAIE", "oracle": "+ same-task example", "t2i": "Generated", "gt": "Ground-truth render",
    "copy": "Copy baseline (query as output)", "vq": "VQ ceiling (GT through the tokenizer)",
    "wrong": "Wrong example (another task's pair)", "wrong-inst": "Wrong instance (another instance's pair)",
    "identity": "Identity example (the example input as its output)",
    "vqcopy": "VQ-copy (query through the tokenizer)",
    MASK_ROW: "Masked (only the change box decoded, the rest kept)",
    PASTE_ROW: "Regenerate and paste (decoded freely, blended with the change box)",
    AUTO_ROW: "Masked by the instruction's object (detected, not the ground truth)",
}  # fmt: skip


@dataclass
class EvalConfig:
    benchmark: str
    checkpoint: str = ""
    limit: int = 8
    seed: int = 0
    size: int = 0  # 0: the checkpoint's training image size
    rows: list[str] = field(default_factory=list)  # default: DEFAULT_ROWS[benchmark]
    tasks: list[str] = field(default_factory=list)  # default: every task of the benchmark
    greedy: bool | None = None  # None: greedy except t2i
    batch_size: int = 8
    train_mode: str = ""  # "xp" / "full": the mode the example rows of raie/oracle use (default: xp)
    clip_weights: str = ""
    clip_model: str = "ViT-B-32"
    dino_weights: str = ""
    lpips_weights: str = ""
    store: str = ""
    magicbrush: str = ""
    magicbrush_split: str = ""
    device: str = "cpu"
    vq: str = ""  # image tokenizer override (default: the checkpoint's)
    bpe: str = ""  # BPE override (default: the checkpoint's)
    # real datasets (``eval/real.py``): NAME=PATH specs, the generic folder pair, and reader options
    datasets: list[str] = field(default_factory=list)
    input_dir: str = ""
    target_dir: str = ""
    columns: str = ""  # edit sets: ROLE=COLUMN,... (``xprompt.readers.edits``)
    depth_scale: float = 1000.0  # NYUv2 16-bit PNGs: units per metre
    instruction: str = ""  # overrides a dataset's default instruction

    @property
    def real(self) -> bool:
        return bool(self.datasets or self.input_dir or self.target_dir)

    def __post_init__(self):
        if self.benchmark not in BENCHMARKS:
            raise XPromptError(f"unknown benchmark {self.benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
        if self.limit < 1:
            raise XPromptError(f"--limit must be >= 1, got {self.limit}")
        if self.batch_size < 1:
            raise XPromptError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.magicbrush and self.benchmark != "raie":
            raise XPromptError("--magicbrush only applies to the raie benchmark")
        if self.real:
            self._check_real()
            return
        self.rows = list(self.rows or DEFAULT_ROWS[self.benchmark])
        allowed = ALLOWED_ROWS[self.benchmark]
        bad = [r for r in self.rows if r not in allowed]
        if bad:
            raise XPromptError(f"row(s) {bad} do not apply to {self.benchmark}; choose from {list(allowed)}")
        known = {s.task for s in TASKS[self.benchmark]}
        unknown = [t for t in self.tasks if t not in known]
        if unknown:
            raise XPromptError(
                f"task(s) {unknown} are not in the {self.benchmark} benchmark: {sorted(known)}"
            )

    def _check_real(self) -> None:
        from xprompt.eval import real

        if self.benchmark not in ("unseen", "seen"):
            raise XPromptError(
                "--dataset / --input-dir run in the unseen and seen benchmarks (raie takes --magicbrush)"
            )
        if self.tasks:
            raise XPromptError("--tasks selects suite tasks; with --dataset, each dataset is one task")
        n = len(self.datasets) + bool(self.input_dir or self.target_dir)
        self.rows = list(self.rows or real.default_rows(n))
        real.check_rows(self.rows, n)


# ---------------------------------------------------------------------- instances
@dataclass
class Item:
    """One evaluation sample (a task-suite ``Instance`` or a MagicBrush row, reduced to what scoring needs)."""

    task: str
    instruction: str
    query: Any  # uint8 image, or the caption for t2i
    target: np.ndarray
    example: tuple[np.ndarray, np.ndarray] | None = None
    params: dict = field(default_factory=dict)
    scene_before: dict | None = None
    scene_after: dict | None = None
    caption_in: str | None = None
    caption_out: str | None = None


def _captions(inst) -> tuple[str | None, str | None]:
    from xprompt.train import scenes

    cap = lambda d: scenes.caption(scenes.Scene.from_dict(d)) if d else None
    return cap(inst.scene_before), cap(inst.scene_after)


def suite_items(task: str, n: int, size: int, seed: int) -> list[Item]:
    from xprompt.train.tasks import make_eval_instances

    out = []
    for inst in make_eval_instances(task, n, size, seed):
        ci, co = _captions(inst)
        out.append(Item(task, inst.instruction, inst.query, inst.target, (inst.example_input, inst.example_output),
                        dict(inst.params), inst.scene_before, inst.scene_after, ci, co))  # fmt: skip
    return out


def magicbrush_items(path: str, n: int, split: str = "") -> list[Item]:
    """Rows of a local MagicBrush-format dataset (``datasets`` dir or parquet files), read through
    ``xprompt.readers.edits``: ``source_img``, ``target_img``, ``instruction``, and the captions
    ``input_caption`` / ``output_caption`` (CLIP-T / CLIP-dir) when the set has them."""
    from xprompt.readers.edits import EditSet

    root = Path(path)
    if not root.is_dir():
        raise XPromptError(f"--magicbrush {root}: not a directory")
    cols = {"source": "source_img", "target": "target_img", "instruction": "instruction"}
    ds = EditSet(root, cols, "magicbrush")
    key = ds.check_split(split or ds.test_split)
    have = ds.table(key).column_names  # checks the required columns
    caps = {
        r: c for r, c in (("caption_in", "input_caption"), ("caption_out", "output_caption")) if c in have
    }
    if caps:
        ds = EditSet(root, {**cols, **caps}, "magicbrush")
    items = []
    for k in ds.keys(key)[:n]:
        p = ds.load(key, k)
        items.append(Item("magicbrush", p.instruction, p.input, p.target, caption_in=p.extra.get("caption_in"),
                          caption_out=p.extra.get("caption_out")))  # fmt: skip
    return items


# ---------------------------------------------------------------------- scoring
@dataclass
class Scorers:
    clip: Any = M.NO_WEIGHTS
    dino: Any = M.NO_WEIGHTS
    lpips: Any = M.NO_WEIGHTS

    @classmethod
    def load(cls, cfg: EvalConfig) -> Scorers:
        return cls(
            M.load_clip(cfg.clip_weights or None, cfg.clip_model, cfg.device),
            M.load_dino(cfg.dino_weights or None, device=cfg.device),
            M.load_lpips(cfg.lpips_weights or None, device=cfg.device),
        )


def _resize_to(pred: np.ndarray, shape) -> np.ndarray:
    if pred.shape == tuple(shape):
        return pred
    from PIL import Image

    return np.asarray(Image.fromarray(pred).resize((shape[1], shape[0]), Image.BICUBIC))


def _depth_palette(item: Item) -> tuple[np.ndarray, np.ndarray]:
    from xprompt.train.tasks_dense import palette_lut

    lut = palette_lut(item.params["palette"])  # (256, 3): entry i encodes nearness i / 255
    return lut, 1.0 - np.arange(256) / 255.0


def _exact_depth(item: Item, gt: np.ndarray):
    if not item.scene_before:
        return gt
    from xprompt.train import scenes

    return scenes.render_maps(scenes.Scene.from_dict(item.scene_before), gt.shape[0])["depth"]  # (H, W)


@dataclass
class _Sample:
    """What a metric function sees: prediction and ground truth at one size, the query at that size (lazily),
    the item and the scorers; the changed-region statistics are computed once for both metrics that use them."""

    item: Item
    pred: np.ndarray
    gt: np.ndarray
    sc: Scorers

    @cached_property
    def query(self) -> np.ndarray:
        return _resize_to(self.item.query, self.gt.shape)

    @cached_property
    def changed(self) -> dict:
        return M.changed_region(self.pred, self.query, self.gt)


def _rmse(s: _Sample):  # against the scene's exact depth when there is a scene, else the decoded target
    return M.depth_rmse(s.pred, _exact_depth(s.item, s.gt), *_depth_palette(s.item))


def _class_maps(s: _Sample):  # mIoU is reduced over the whole task (``reduce_scores``)
    from xprompt.train.tasks_dense import SEG_COLORS

    cols = np.array(list(SEG_COLORS.values()))
    return M.class_map(s.pred, cols), M.class_map(s.gt, cols)


def _clip_t(s: _Sample):
    if isinstance(s.sc.clip, M.Unavailable):
        return s.sc.clip
    if not s.item.caption_out:
        return M.Unavailable("no captions")
    return M.clip_t(s.pred, s.item.caption_out, s.sc.clip)


def _clip_dir(s: _Sample):
    if isinstance(s.sc.clip, M.Unavailable):
        return s.sc.clip
    if not s.item.caption_out or not s.item.caption_in:
        return M.Unavailable("no captions")
    return M.clip_dir(s.pred, s.query, s.item.caption_in, s.item.caption_out, s.sc.clip)


def _success(s: _Sample):
    from xprompt.eval import detect

    edit = detect.edit_from_instance(s.item.task, s.item.params, s.item.scene_before)
    ok = None if edit is None else detect.edit_success(s.pred, edit, reference=s.gt)
    return M.Unavailable("not judged") if ok is None else float(ok)


SAMPLE_METRICS: dict[str, Callable[[_Sample], Any]] = {
    "psnr": lambda s: M.psnr(s.pred, s.gt),
    "ssim": lambda s: M.ssim(s.pred, s.gt),
    "l1": lambda s: M.l1(s.pred, s.gt),
    "l2": lambda s: M.l2(s.pred, s.gt),
    "mse": lambda s: M.mse(s.pred, s.gt, space="imagenet"),
    "lpips": lambda s: M.lpips(s.pred, s.gt, s.sc.lpips),
    "closer": lambda s: s.changed["closer"],
    "changed_psnr": lambda s: s.changed["psnr"],
    "rmse": _rmse,
    "angle": lambda s: M.normal_angle_error(s.pred, s.gt),
    "miou": _class_maps,
    "clip_i": lambda s: M.clip_i(s.pred, s.gt, s.sc.clip),
    "dino": lambda s: M.dino(s.pred, s.gt, s.sc.dino),
    "clip_t": _clip_t,
    "clip_dir": _clip_dir,
    "success": _success,
    **METRIC_FUNCS,  # psnr_in / psnr_out / out_same around the change box (the masked row)
    **REAL_METRICS,  # depth in metres and ADE20K mIoU against a reader's raw ground truth (eval/real.py)
}


def sample_scores(spec: TaskSpec, item: Item, pred, sc: Scorers) -> dict:
    """Per-sample values of every metric of ``spec`` (mIoU: the predicted/GT class maps, reduced later)."""
    if spec.task == "text_to_image":
        from xprompt.eval import detect
        from xprompt.train.scenes import Scene

        return detect.geneval_checks(pred, Scene.from_dict(item.scene_after))
    s = _Sample(item, _resize_to(pred, item.target.shape), item.target, sc)
    unknown = [m for m in spec.metrics if m not in SAMPLE_METRICS]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]}")
    return {m: SAMPLE_METRICS[m](s) for m in spec.metrics}


def reduce_scores(metric: str, values: list) -> Any:
    if metric in REAL_REDUCERS:
        return REAL_REDUCERS[metric](values)
    if metric == "miou":
        from xprompt.train.tasks_dense import SEG_COLORS

        conf = M.SegConfusion(len(SEG_COLORS))
        for p, g in values:
            conf.update(p, g)
        return conf.miou()
    if metric in ("object", "color", "count", "position", "overall"):
        return float(np.mean([float(v) for v in values]))
    return M.mean_score(values)


def json_value(v):
    if isinstance(v, M.Unavailable):
        return str(v)
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (float, np.floating, int, np.integer)):
        return float(v)
    return None  # class maps and other per-sample internals are not serialised


# ---------------------------------------------------------------------- generation
def generate_batch(pipe, items: list[Item], row_mode: str, examples: list, *, seed: int, greedy: bool,
                   t2i: bool = False) -> list[np.ndarray]:  # fmt: skip
    """One batched decode for ``items`` under ``row_mode`` (none / full / xp) with per-item ``examples``."""
    from xprompt.generation import generate_images

    seqs, sizes = build_prompts(pipe, items, row_mode, examples, t2i=t2i)
    sampling = pipe.sampling_config(seed, greedy, None, 1.0, 1.0, 2000 if t2i else 200)
    codes = generate_images(pipe.model, pipe.vocab, seqs, sizes, sampling, progress=False)
    return [pipe.decode(c) for c in codes]


def build_prompts(pipe, items: list[Item], row_mode: str, examples: list, *, t2i: bool = False):
    """The generation prompts (``TokenSequence`` without the answer) and answer sizes in codes for ``items``."""
    from xprompt.sequence import build_sample

    seqs, sizes = [], []
    side = max(1, pipe.image_size // int(pipe.image_tok.factor))
    for item, ex in zip(items, examples, strict=True):
        if t2i:
            from xprompt.pipeline import T2I_INSTRUCTION

            seqs.append(build_sample(pipe.vocab, pipe.text_tok, mode="none", instruction=T2I_INSTRUCTION,
                                     query=item.query))  # fmt: skip
            sizes.append((side, side))
            continue
        codes_ex = pipe.encode_examples([ex]) if row_mode != "none" else []
        q = pipe.encode(item.query)  # (h, w)
        seqs.append(build_sample(pipe.vocab, pipe.text_tok, mode=row_mode, instruction=item.instruction,
                                 examples=codes_ex, query=q))  # fmt: skip
        sizes.append(tuple(q.shape))
    return seqs, sizes


# ---------------------------------------------------------------------- controls: does the model read the example?
def wrong_examples(
    benchmark: str, task: str, kind: str, n: int, size: int, seed: int
) -> tuple[list, list[dict]]:
    """The example pairs of a wrong-example control row for the ``n`` instances of ``task``, and where each
    came from (``{"task", "index"}`` into ``make_eval_instances(task, ., size, seed)``).

    ``wrong``: instance i of the *next* task in the benchmark's task list (cyclic; the full list, so the pairing
    does not depend on ``--tasks``). ``wrong-inst``: instance i + 1 of the same task (another draw of the task's
    parameters and content; informative for tasks whose parameters only the example reveals, e.g. channel swap,
    palette map, flip/rotate -- for fixed-parameter tasks such as deblur it is nearly a right example).
    ``identity``: the instance's own example input with itself as the output (only the example's *output*
    changes: the model is shown "change nothing").
    """
    if kind == "wrong":
        names = [s.task for s in TASKS[benchmark]]
        other = names[(names.index(task) + 1) % len(names)]
        items = suite_items(other, n, size, seed)
        return [it.example for it in items], [{"task": other, "index": i} for i in range(n)]
    if kind == "wrong-inst":
        items = suite_items(
            task, n + 1, size, seed
        )  # instance i of n + 1 equals instance i of n (seeded per i)
        return [it.example for it in items[1:]], [{"task": task, "index": i + 1} for i in range(n)]
    if kind == "identity":
        items = suite_items(task, n, size, seed)
        return [(it.example[0], it.example[0]) for it in items], [{"task": task, "index": i, "output": "input"}
                                                                   for i in range(n)]  # fmt: skip
    raise ValueError(f"not a wrong-example row: {kind!r}")


def first_image_logits(pipe, items: list[Item], mode: str, examples: list, batch_size: int = 8) -> np.ndarray:
    """(n, K) float32 logits over the K image codes of the first answer code (after the forced ``<boi> <h> <w>``)
    for each item, prompted as the generated rows are (same prefill, same compression)."""
    import torch

    from xprompt.generation import _with_tail, image_head, prefill

    ids = torch.as_tensor(pipe.vocab.image_ids, dtype=torch.long)
    out = []
    for rng_ in _batches(len(items), batch_size):
        seqs, sizes = build_prompts(pipe, [items[i] for i in rng_], mode, [examples[i] for i in rng_])
        seqs = [_with_tail(q, image_head(pipe.vocab, h, w)) for q, (h, w) in zip(seqs, sizes, strict=True)]
        with torch.no_grad():
            lg = prefill(pipe.model, seqs, pipe.vocab.pad_id).logits  # (B, V)
        out.append(lg[:, ids.to(lg.device)].float().cpu().numpy())
    return np.concatenate(out, axis=0)


def example_sensitivity(
    right: list[np.ndarray],
    wrong: list[np.ndarray],
    logits_right: np.ndarray | None = None,
    logits_wrong: np.ndarray | None = None,
) -> dict:
    """How much the output moves when only the example changes (same query, same instruction).

    ``pixel_mad``: mean absolute difference of the two outputs in 8-bit units (0-255), over pixels, channels
    and items (0 = the example is ignored); ``identical``: fraction of items whose two outputs are equal.
    With the first answer code's logits (``first_image_logits``) of both prompts: ``logit_max_abs_diff`` =
    mean over items of max |Δ logit| over the image codes (``logit_max_abs_diff_max``: its max over items),
    and ``logit_std`` = mean over items of the right prompt's logit std over the codes, for scale.
    """
    if len(right) != len(wrong) or not right:
        raise ValueError("example_sensitivity needs two equally long, non-empty lists of outputs")
    mad = [
        float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64))))
        for a, b in zip(right, wrong, strict=True)
    ]
    out = {"pixel_mad": float(np.mean(mad)), "identical": float(np.mean([m == 0.0 for m in mad])),
           "per_sample_pixel_mad": mad}  # fmt: skip
    if logits_right is not None and logits_wrong is not None:
        d = np.abs(logits_right.astype(np.float64) - logits_wrong.astype(np.float64)).max(axis=1)  # (n,)
        out["logit_max_abs_diff"] = float(d.mean())
        out["logit_max_abs_diff_max"] = float(d.max())
        out["logit_std"] = float(logits_right.astype(np.float64).std(axis=1).mean())
    return out


def raie_row(
    pipe, store, items: list[Item], mode: str, batch_size: int, seeds: list[int], greedy: bool, bar
) -> tuple[list[np.ndarray], list[dict], list]:
    """The ``raie`` row through ``XPrompt.edit`` (k=1), one batch per seed: the outputs, what was retrieved for
    each item (instruction, task, score) and the retrieved pairs."""
    res = []
    for bi, rng_ in enumerate(_batches(len(items), batch_size)):
        res += pipe.edit(
            [items[i].query for i in rng_],
            [items[i].instruction for i in rng_],
            store=store,
            k=1,
            mode=mode,
            seed=seeds[bi],
            greedy=greedy,
            keep_model_size=True,  # scored against items at the model's size
        )
        bar.update(1)
    retrieved = [{"instruction": r.retrieved[0].instruction, "task": r.retrieved[0].task,
                  "score": r.retrieved[0].score} for r in res]  # fmt: skip
    return [r.image for r in res], retrieved, [r.pairs[0] for r in res]


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


def add_reading(
    task: dict, pipe, items: list[Item], preds: dict, used: dict, example_mode: str, batch_size: int
) -> None:
    """Add to a task's report entry what tells whether the model reads the example: per sample which instance's
    pair each example row showed (``example_from``), the example sensitivity and the copy -> VQ gap closed."""
    for i, s in enumerate(task["samples"]):
        if used:
            s["example_from"] = {r: src[i] for r, (_, src) in used.items()}
    sens = task_sensitivity(pipe, items, preds, used, example_mode, batch_size)
    if sens:
        task["sensitivity"] = sens
    task["gap_closed"] = copy_vq_gap(task)


def task_sensitivity(
    pipe, items: list[Item], preds: dict, used: dict, example_mode: str, batch_size: int
) -> dict:
    """``{control row: example_sensitivity(...)}`` of the example-mode row (``xp``, or ``full`` with
    ``--example-mode full``) against each wrong-example row present; {} when either is missing."""
    ref = example_mode
    if ref not in preds or ref not in used:
        return {}
    out = {}
    lg_ref = None
    for row in WRONG_ROWS:
        if row not in preds:
            continue
        if lg_ref is None:
            lg_ref = first_image_logits(pipe, items, ref, used[ref][0], batch_size)
        lg = first_image_logits(pipe, items, ref, used[row][0], batch_size)
        out[row] = {"reference": ref, **example_sensitivity(preds[ref], preds[row], lg_ref, lg)}
    return out


def copy_vq_gap(task: dict) -> dict:
    """The fraction of the copy -> VQ-ceiling gap each row closes on the task's main metric (its first metric
    with a number): ``(row - copy) / (vq - copy)``, which is sign-aware by construction (for RMSE/MSE both
    differences are negative when the row improves on copy). ``vq_beats_copy`` says whether there is a gap to
    close (VQ ceiling strictly better than copy in the metric's direction); without one the values are None."""
    from xprompt.eval.report import gap_closed, primary_metric

    m = primary_metric(task)
    res = task["results"]
    copy, vq = res.get("copy", {}).get(m), res.get("vq", {}).get(m)
    num = isinstance(copy, (int, float)) and isinstance(vq, (int, float))
    beats = bool(num and ((vq < copy) if M.lower_is_better(m) else (vq > copy)))
    rows = {r: (gap_closed(copy, v.get(m), vq) if beats else None) for r, v in res.items()}
    return {"metric": m, "vq_beats_copy": beats, "rows": rows}


def mean_gap_closed(report: dict) -> dict:
    """Per row, the mean (and median) gap closed over the tasks whose VQ ceiling beats copy (``tasks`` lists
    them), and how many of those tasks the row beats copy on (``beats_copy``: gap closed > 0). A task whose VQ
    ceiling is barely above copy gives large ratios either way and can dominate the mean: read the median and
    the per-task values beside it."""
    tasks = [k for k, t in report["tasks"].items() if t.get("gap_closed", {}).get("vq_beats_copy")]
    out: dict[str, Any] = {"tasks": tasks, "mean": {}, "median": {}, "beats_copy": {}}
    for r in report["rows"]:
        vals = [report["tasks"][k]["gap_closed"]["rows"].get(r) for k in tasks]
        vals = [v for v in vals if isinstance(v, (int, float))]
        out["mean"][r] = float(np.mean(vals)) if vals else None
        out["median"][r] = float(np.median(vals)) if vals else None
        out["beats_copy"][r] = sum(v > 0 for v in vals)
    # issue 13's per-task checks over every task with numbers: a row at least matches VQ-copy; the example row
    # (``xp``) strictly beats each control row on the main metric
    out["n_tasks"] = len(report["tasks"])
    out["matches_vqcopy"], out["xp_beats_control"] = {}, {}
    for r in report["rows"]:
        if r in ("copy", "vqcopy", "vq"):
            continue
        out["matches_vqcopy"][r] = sum(
            _better(t, r, "vqcopy", strict=False) for t in report["tasks"].values()
        )
        if r in WRONG_ROWS and "xp" in report["rows"]:
            out["xp_beats_control"][r] = sum(
                _better(t, "xp", r, strict=True) for t in report["tasks"].values()
            )
    return out


def _better(task: dict, a: str, b: str, *, strict: bool) -> bool:
    """Row ``a`` beats (``strict``) or at least matches row ``b`` on the task's main metric."""
    m = task.get("gap_closed", {}).get("metric")
    va, vb = (task["results"].get(r, {}).get(m) for r in (a, b))
    if not (isinstance(va, (int, float)) and isinstance(vb, (int, float))):
        return False
    if M.lower_is_better(m):
        va, vb = -va, -vb
    return va > vb if strict else va >= vb


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


def _batches(n: int, size: int) -> list[range]:
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] % (2**31 - 1))


def baseline_preds(pipe, items: list[Item], t2i: bool) -> dict[str, list[np.ndarray]]:
    """The rows every benchmark adds: ``copy`` (the query; ``gt``, the render, for t2i) and ``vq``."""
    preds = {"gt": [it.target for it in items]} if t2i else {"copy": [it.query for it in items]}
    preds["vq"] = [pipe.decode(pipe.encode(it.target)) for it in items]
    return preds


def task_report(
    spec: TaskSpec, items: list[Item], preds: dict, rows: list[str], scorers: Scorers, retrieved: list[dict]
) -> dict:
    """One task's report entry: per-row results (metrics reduced over the items) and per-sample scores."""
    per_sample = {
        r: [sample_scores(spec, it, p, scorers) for it, p in zip(items, preds[r], strict=True)] for r in rows
    }
    results = {r: {m: json_value(reduce_scores(m, [s[m] for s in per_sample[r]])) for m in spec.metrics}
               for r in rows}  # fmt: skip
    samples = []
    for i, it in enumerate(items):
        s = {"index": i, "instruction": it.instruction,
             "scores": {r: {m: json_value(per_sample[r][i][m]) for m in spec.metrics} for r in rows}}  # fmt: skip
        if retrieved:
            s["retrieved"] = retrieved[i]
        samples.append(s)
    return {
        "label": spec.label,
        "metrics": list(spec.metrics),
        "n": len(items),
        "results": results,
        "samples": samples,
    }


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


def generated_row(pipe, cfg: EvalConfig, row: str, items: list[Item], examples: list, mode: str, at: tuple,
                  greedy: bool, t2i: bool, store, bar) -> list[np.ndarray]:  # fmt: skip
    """One generated row of a task, batch by batch (seeded by task/row/batch ``at + (bi,)``)."""
    out: list[np.ndarray] = []
    for bi, rng_ in enumerate(_batches(len(items), cfg.batch_size)):
        batch, ex, sd = [items[i] for i in rng_], [examples[i] for i in rng_], _seed(cfg.seed, *at, bi)
        how = {"paste": row == PASTE_ROW, "auto": row == AUTO_ROW}
        if row in _MASK_ROWS and cfg.benchmark == "raie":
            out += masked_raie(pipe, store, batch, mode, seed=sd, greedy=greedy, **how)
        elif row in _MASK_ROWS:
            out += masked_batch(pipe, batch, mode, ex, seed=sd, greedy=greedy, **how)
        else:
            out += generate_batch(pipe, batch, mode, ex, seed=sd, greedy=greedy, t2i=t2i)
        bar.update(1)
    return out


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
        if row in _MASK_ROWS and self.cfg.benchmark == "raie":  # the masked RAIE flow retrieves its own
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
    if set(_MASK_ROWS) & set(cfg.rows):  # in/out-of-mask metrics for every row, so the baselines compare
        specs = [TaskSpec(s.task, s.label, s.metrics + MASK_METRICS) for s in specs]
    store = None
    if "raie" in cfg.rows or (set(_MASK_ROWS) & set(cfg.rows) and cfg.benchmark == "raie"):
        from xprompt.retrieval.default_store import open_store

        store = open_store(cfg.store or None, quiet=not progress)
    ctx_bench = cfg.benchmark in ("unseen", "seen")  # the benchmarks with controls, VQ-copy and gap closed
    extra_rows = ["gt", "vq"] if t2i else (["copy", "vqcopy", "vq"] if ctx_bench else ["copy", "vq"])
    rows = list(cfg.rows) + extra_rows
    report = report_header(cfg, pipe, size, greedy, rows, store)
    visuals: dict[str, list[Visual]] = {}
    n_batches = len(specs) * len(cfg.rows) * len(_batches(cfg.limit, cfg.batch_size))
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
                    _seed(cfg.seed, ti, ri, bi) for bi in range(len(_batches(len(items), cfg.batch_size)))
                ]
                preds[row], retrieved, retrieved_pairs = raie_row(
                    pipe, store, items, example_mode, cfg.batch_size, seeds, greedy, bar
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

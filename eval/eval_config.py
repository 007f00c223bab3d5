"""What a benchmark run is: the benchmarks' task tables, the rows each one allows, and ``EvalConfig``.

Design choices
* Split from ``benchmarks.py`` (which documents what the benchmarks and rows measure): this module is only
  data and validation -- no model, no scoring -- so the scoring, row and control modules can import it without
  importing the runner.
* ``EvalConfig`` validates everything a run needs (benchmark, rows, tasks, real-dataset options) in
  ``__post_init__``, before any model is loaded; errors are one-line ``XPromptError``s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xprompt.errors import XPromptError
from xprompt.eval.masked import AUTO_ROW, CHANGED_ROW, MASK_ROW, MASK_ROWS, PASTE_ROW
from xprompt.pipeline_inputs import CFG_REFS

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
ALLOWED_ROWS = {"unseen": (*_CTX_ROWS, *MASK_ROWS), "seen": (*_CTX_ROWS, *MASK_ROWS),
                "raie": ("text", "raie", "oracle", *MASK_ROWS), "t2i": ("t2i",)}  # fmt: skip
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
    CHANGED_ROW: None,  # as xp-mask, blended only over the tokens the model changed
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
    CHANGED_ROW: "Masked, blended only where the model changed tokens",
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
    cfg_scale: float = 1.0  # classifier-free guidance of the generated rows (1 = off)
    cfg_ref: str = "empty"  # what it guides against: "empty" (the image prior), "query" (the query alone) or
    # "instruction" (the prompt without its examples)
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
        if not 0 <= self.cfg_scale <= 100:
            raise XPromptError(f"--cfg must be in [0, 100] (1 = off), got {self.cfg_scale}")
        if self.cfg_ref not in CFG_REFS or (self.cfg_ref != "empty" and self.benchmark == "t2i"):
            raise XPromptError(
                f"--cfg-ref must be one of {', '.join(CFG_REFS)} ('empty' for t2i, which has no query), "
                f"got {self.cfg_ref!r}"
            )
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

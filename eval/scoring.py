"""Scoring: per-sample metric values of a prediction against its item, reduced per task into report entries.

Design choices
* Split from ``benchmarks.py``: scoring knows items, task specs and the metric functions, never a model or a
  generation, so it can be tested and reused on saved predictions.
* ``SAMPLE_METRICS`` maps a metric name to a function of one ``_Sample`` (prediction and ground truth at one
  size, the query resized lazily, the scorers); the changed-region statistics are computed once per sample.
  Metrics without local weights (CLIP / DINO / LPIPS) give ``metrics.Unavailable`` values, reported as text.
* mIoU is reduced over the whole task (per-sample class maps, one confusion matrix); every other metric is a
  mean over the samples that have a number (``metrics.mean_score``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from xprompt.eval import metrics as M
from xprompt.eval.eval_config import EvalConfig, TaskSpec
from xprompt.eval.items import Item
from xprompt.eval.masked import METRIC_FUNCS
from xprompt.eval.metrics_real import REAL_METRICS, REAL_REDUCERS


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

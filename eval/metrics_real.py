"""Per-sample metrics of the real-dataset benchmarks (``eval/real.py``), scored against the raw ground truth
a reader keeps in ``Item.params`` rather than against the rendered target image.

Design choices
* **Depth (NYUv2)**: the prediction is decoded from grey nearness back to metres (``depth_from_render``, the
  inverse of the reader's target rendering), at the ground truth's resolution (the benchmark resizes every
  prediction to it), then ``metrics_dense.depth_errors`` over the Eigen crop and (0, 10 m]: ``depth_rmse``
  (metres), ``absrel``, ``delta1``. Computed once per sample and cached on it.
* **Segmentation (ADE20K)**: ``ade_miou`` maps each predicted pixel to the nearest of the 150 class colours
  (``nearest_index``; black, the ignore colour, is not a choice) and returns (pred, gt - 1) class maps; the
  benchmark reduces them over the whole set with one ``SegConfusion(150, ignore_index=-1)`` (ADE's 0 =
  ignore), the mmsegmentation convention (per-class IoU over the dataset, classes absent from both left out).
* Edit sets reuse the suite's ``l1``/``l2``/``clip_i``/``dino``/``clip_t``/``clip_dir``; low-level sets
  ``psnr``/``ssim`` and the changed-region metrics, all at the dataset's resolution.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xprompt.eval.metrics_dense import SegConfusion, depth_errors, nearest_index


def _depth(s) -> dict:
    cached = getattr(s, "_depth_errors", None)
    if cached is None:
        from xprompt.readers.nyu import DEPTH_CAP_M, depth_from_render, eigen_mask

        gt = s.item.params["depth_m"]  # (H, W) metres
        pred = depth_from_render(s.pred)  # (H, W) metres, s.pred already at the ground truth's size
        cached = depth_errors(pred, gt, eigen_mask(gt.shape), max_depth=DEPTH_CAP_M)
        s._depth_errors = cached
    return cached


def _ade_maps(s) -> tuple[np.ndarray, np.ndarray]:
    from xprompt.readers.ade import ADE_COLORS

    return nearest_index(s.pred, ADE_COLORS), s.item.params["labels"] - 1  # (H, W) 0..149; gt -1 = ignore


REAL_METRICS: dict[str, Any] = {
    "depth_rmse": lambda s: _depth(s)["rmse"],
    "absrel": lambda s: _depth(s)["absrel"],
    "delta1": lambda s: _depth(s)["delta1"],
    "ade_miou": _ade_maps,
}


def reduce_ade_miou(values: list) -> Any:
    from xprompt.readers.ade import NUM_CLASSES

    conf = SegConfusion(NUM_CLASSES, ignore_index=-1)
    for p, g in values:
        conf.update(p, g)
    return conf.miou()


REAL_REDUCERS = {"ade_miou": reduce_ade_miou}

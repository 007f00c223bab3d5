"""Dense-prediction metrics: depth RMSE, segmentation mIoU, surface-normal mean angle error.

Design choices
* The model answers dense tasks with an RGB image, so every metric first **decodes colours back to values**:
  ``decode_palette(img, palette (N, 3), values (N,))`` maps each pixel to the value of its nearest palette
  colour (Euclidean distance in RGB, a ``scipy.spatial.cKDTree`` query, so large images and palettes stay
  cheap). Depth uses the task's depth palette (the *reserved* palette for the held-out depth task), and
  segmentation the class colours (values = class ids).
* **Depth RMSE**: ``sqrt(mean((d_pred - d_gt)^2))`` per image over valid pixels, in the units of the palette's
  values (the task suite's depth is in (0, 1], 1 = far); per-image values are averaged over a benchmark, as
  Painter / X-Prompt do on NYUv2. On real depth in metres (NYUv2), ``depth_errors`` gives the standard trio
  over valid pixels (ground truth in (min_depth, max_depth], inside the caller's crop), with the prediction
  clipped to the same range (Eigen et al. 2014; BTS / AdaBins' evaluation): RMSE, AbsRel = mean(|p - g| / g)
  and delta1 = the fraction of pixels with max(p / g, g / p) < 1.25 (in percent-free [0, 1]).
* **mIoU**: a confusion matrix (``sklearn.metrics.confusion_matrix``) accumulated over the whole benchmark
  (the ADE20K convention), IoU_c = TP / (TP + FP + FN) for every class that occurs in the ground truth *or*
  the prediction (union > 0); classes absent from both are left out of the mean, not counted as 0 or 1.
  Reported in percent like Table 1. Pixels whose ground truth is ``ignore_index`` are dropped.
* **Normals**: RGB encodes a unit normal as ``rgb = (n + 1) / 2 * 255`` (the NYU / Omnidata visualisation);
  decoding inverts that and re-normalises; the error is the angle ``arccos(<n_pred, n_gt>)`` in degrees, mean
  over valid pixels of one image (pixels whose decoded ground-truth vector is ~0 are invalid).
"""

from __future__ import annotations

import numpy as np

from xprompt.errors import XPromptError
from xprompt.eval.metrics_image import EMPTY_REGION, Unavailable, as_image


# ---------------------------------------------------------------------- palettes
def _palette(palette, values=None) -> tuple[np.ndarray, np.ndarray]:
    palette = np.asarray(palette, dtype=np.float64)
    if palette.ndim != 2 or palette.shape[1] != 3 or len(palette) == 0:
        raise XPromptError(f"a palette must be an (N, 3) array of RGB colours, got shape {palette.shape}")
    values = np.arange(len(palette)) if values is None else np.asarray(values)
    if values.shape != (len(palette),):
        raise XPromptError(f"palette has {len(palette)} colours but {values.shape} values")
    return palette, values


def nearest_index(img, palette) -> np.ndarray:
    """uint8 (H, W, 3) -> int64 (H, W): index of the nearest palette colour of every pixel."""
    from scipy.spatial import cKDTree

    img = as_image(img)
    palette, _ = _palette(palette)
    _, idx = cKDTree(palette).query(img.reshape(-1, 3).astype(np.float64), k=1)  # (H*W,)
    return idx.reshape(img.shape[:2]).astype(np.int64)


def decode_palette(img, palette, values) -> np.ndarray:
    """Nearest-colour decoder: uint8 (H, W, 3) -> (H, W) array of ``values`` (dtype of ``values``)."""
    palette, values = _palette(palette, values)
    return values[nearest_index(img, palette)]


def encode_palette(value_map, palette, values) -> np.ndarray:
    """Inverse helper for tests and ground truth: (H, W) values -> uint8 (H, W, 3) nearest-value colours."""
    palette, values = _palette(palette, values)
    v = np.asarray(value_map, dtype=np.float64)
    idx = np.abs(v[..., None] - values.astype(np.float64)).argmin(-1)  # (H, W)
    return palette[idx].round().astype(np.uint8)


# ---------------------------------------------------------------------- depth
def depth_rmse(pred, gt, palette, values, valid=None) -> float | Unavailable:
    """RMSE between depth decoded from the predicted colours and the ground truth.

    ``gt`` is either a float ``(H, W)`` depth map (exact, preferred) or a palette-coloured uint8 image.
    """
    d_pred = decode_palette(pred, palette, values).astype(np.float64)  # (H, W)
    gt_arr = np.asarray(gt)
    if gt_arr.ndim == 3:
        d_gt = decode_palette(gt_arr, palette, values).astype(np.float64)
    elif gt_arr.ndim == 2:
        d_gt = gt_arr.astype(np.float64)
    else:
        raise XPromptError(
            f"depth ground truth must be (H, W) values or an (H, W, 3) image, got {gt_arr.shape}"
        )
    if d_gt.shape != d_pred.shape:
        raise XPromptError(f"predicted depth {d_pred.shape} and ground truth {d_gt.shape} differ in size")
    m = np.ones_like(d_gt, bool) if valid is None else np.asarray(valid, bool)
    if not m.any():
        return EMPTY_REGION
    return float(np.sqrt(np.mean((d_pred[m] - d_gt[m]) ** 2)))


def depth_errors(pred_m, gt_m, valid=None, min_depth: float = 1e-3, max_depth: float = 10.0) -> dict:
    """``{"rmse", "absrel", "delta1"}`` of float (H, W) depth in metres over ``valid`` pixels whose ground
    truth lies in (min_depth, max_depth]; the prediction is clipped to [min_depth, max_depth] first."""
    p, g = np.asarray(pred_m, np.float64), np.asarray(gt_m, np.float64)
    if p.shape != g.shape:
        raise XPromptError(f"predicted depth {p.shape} and ground truth {g.shape} differ in size")
    m = (g > min_depth) & (g <= max_depth)
    if valid is not None:
        m &= np.asarray(valid, bool)
    if not m.any():
        return {"rmse": EMPTY_REGION, "absrel": EMPTY_REGION, "delta1": EMPTY_REGION}
    p, g = np.clip(p[m], min_depth, max_depth), g[m]  # (N,)
    return {
        "rmse": float(np.sqrt(np.mean((p - g) ** 2))),
        "absrel": float(np.mean(np.abs(p - g) / g)),
        "delta1": float(np.mean(np.maximum(p / g, g / p) < 1.25)),
    }


# ---------------------------------------------------------------------- segmentation
class SegConfusion:
    """Confusion matrix over ``num_classes`` accumulated across images; ``miou()`` in percent."""

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        if num_classes < 1:
            raise XPromptError("num_classes must be >= 1")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.matrix = np.zeros((num_classes, num_classes), np.int64)  # [gt, pred]

    def update(self, pred_map, gt_map) -> SegConfusion:
        from sklearn.metrics import confusion_matrix

        p, g = np.asarray(pred_map).reshape(-1), np.asarray(gt_map).reshape(-1)
        if p.shape != g.shape:
            raise XPromptError(f"predicted class map and ground truth differ in size ({p.size} vs {g.size})")
        if self.ignore_index is not None:
            keep = g != self.ignore_index
            p, g = p[keep], g[keep]
        bad = (g < 0) | (g >= self.num_classes)
        if bad.any():
            raise XPromptError(
                f"ground-truth class ids outside [0, {self.num_classes}): {np.unique(g[bad])[:5]}"
            )
        if g.size:
            self.matrix += confusion_matrix(g, p, labels=np.arange(self.num_classes))
        return self

    def iou(self) -> np.ndarray:
        """(num_classes,) IoU per class; NaN for classes absent from both ground truth and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp  # pred + gt - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float | Unavailable:
        iou = self.iou()
        if np.all(np.isnan(iou)):
            return Unavailable("no pixels")
        return float(np.nanmean(iou) * 100.0)

    def pixel_accuracy(self) -> float | Unavailable:
        total = self.matrix.sum()
        return Unavailable("no pixels") if total == 0 else float(np.trace(self.matrix) / total * 100.0)


def class_map(img, class_colors) -> np.ndarray:
    """uint8 (H, W, 3) -> int64 (H, W) class ids by nearest class colour."""
    return nearest_index(img, class_colors)


def miou(pred, gt, class_colors, ignore_index: int | None = None) -> float | Unavailable:
    """Single-image mIoU (percent). ``gt`` is an (H, W) class-id map or a class-coloured image."""
    colors = np.asarray(class_colors)
    gt_arr = np.asarray(gt)
    g = class_map(gt_arr, colors) if gt_arr.ndim == 3 else gt_arr
    return SegConfusion(len(colors), ignore_index).update(class_map(pred, colors), g).miou()


# ---------------------------------------------------------------------- normals
def decode_normals(img) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (H, W, 3) -> (unit normals float64 (H, W, 3), valid (H, W) bool: vector length > 0.1)."""
    img = as_image(img)
    n = img.astype(np.float64) / 255.0 * 2.0 - 1.0  # (H, W, 3) in [-1, 1]
    norm = np.linalg.norm(n, axis=-1, keepdims=True)  # (H, W, 1)
    return n / np.maximum(norm, 1e-12), norm[..., 0] > 0.1


def encode_normals(normals) -> np.ndarray:
    """(H, W, 3) unit vectors -> uint8 RGB ``(n + 1) / 2 * 255``."""
    n = np.asarray(normals, dtype=np.float64)
    return np.clip(np.round((n + 1.0) / 2.0 * 255.0), 0, 255).astype(np.uint8)


def angle_error_map(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel angle (degrees, (H, W)) between decoded normals, and the validity mask of the ground truth."""
    n_p, _ = decode_normals(pred)
    n_g, valid = decode_normals(gt)
    if n_p.shape != n_g.shape:
        raise XPromptError(f"predicted normals {n_p.shape} and ground truth {n_g.shape} differ in size")
    cos = np.clip((n_p * n_g).sum(-1), -1.0, 1.0)  # (H, W)
    return np.degrees(np.arccos(cos)), valid


def normal_angle_error(pred, gt, valid=None) -> float | Unavailable:
    """Mean angle error in degrees over valid pixels (``valid`` and a non-degenerate ground-truth normal)."""
    err, ok = angle_error_map(pred, gt)
    if valid is not None:
        ok = ok & np.asarray(valid, bool)
    if not ok.any():
        return EMPTY_REGION
    return float(err[ok].mean())

"""Pixel metrics: PSNR, SSIM, MSE, L1, L2, masked / changed-region variants, the copy baseline.

Design choices (stated once, used by every benchmark)
* Inputs are RGB ``uint8`` arrays of shape ``(H, W, 3)`` (what the VQ tokenizer decodes to and what the task
  suite produces). Prediction and ground truth must have the same shape; a mismatch is an ``XPromptError``
  (we never resize silently: the benchmarks generate at the ground-truth size).
* **PSNR**: on 8-bit RGB, ``data_range = 255``, over all pixels and channels of one image,
  ``10 log10(255^2 / MSE)``; per-image values are averaged over a benchmark (the usual low-level protocol).
  Identical images have MSE 0: PSNR is capped at ``PSNR_CAP = 100`` dB so that averages stay finite.
* **SSIM**: scikit-image ``structural_similarity`` with the Wang et al. (2004) settings: Gaussian window,
  sigma 1.5 (11x11 support), ``use_sample_covariance=False``, K1 = 0.01, K2 = 0.03, ``data_range = 255``,
  computed per RGB channel and averaged (no Y-channel conversion). Images must be at least 11 px a side.
* **L1 / L2 (MagicBrush protocol)**: images mapped to [0, 1] (``ToTensor``), L1 = mean |a - b|,
  L2 = mean (a - b)^2 -- MagicBrush's "L2" is a mean *squared* error, and ACE/PixWizard copy its numbers.
* **MSE**: ``space="unit"`` gives the [0, 1] mean squared error; ``space="imagenet"`` first normalises both
  images with the ImageNet mean/std, the convention of Visual Prompting (Bar et al. 2022) whose inpainting /
  colorization numbers X-Prompt's Table 5 reports beside its own (values around 0.5-1).
* **Changed region** (docs/design.md: a model that copies its input scores well on most pixel metrics): pixels
  where the query and the ground truth differ by more than ``tol`` in some channel. On them we report PSNR,
  ``accuracy`` (fraction of changed pixels whose prediction is within ``acc_tol`` of the ground truth in
  every channel) and ``closer`` (fraction whose prediction is closer to the ground truth than to the query).
  The copy baseline scores ``closer = 0`` by construction.
* **Masked variants** (BrushEdit's masked-region protocol) take a boolean ``(H, W)`` mask and restrict the
  statistics to it (e.g. the inpainted hole, or the region that must be preserved).
* **Copy baseline**: ``copy_baseline(fn, query, gt)`` scores the query itself as the prediction. Every
  benchmark reports it beside the model's number.
* Metrics that cannot be computed return an :class:`Unavailable` marker (never a made-up number); it prints
  as ``unavailable: <reason>`` and averages of lists containing it stay unavailable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from xprompt.errors import XPromptError
from xprompt.images import as_image

PSNR_CAP = 100.0
SSIM_MIN_SIDE = 11
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])


# ---------------------------------------------------------------------- the "unavailable" marker
@dataclass(frozen=True)
class Unavailable:
    """A metric that could not be computed (missing weights, empty region...). Never a number."""

    reason: str = "no weights"

    def __str__(self) -> str:
        return f"unavailable: {self.reason}"

    def to_json(self) -> str:
        return str(self)

    def __bool__(self) -> bool:  # `if score:` must not treat it as a value
        return False


NO_WEIGHTS = Unavailable("no weights")
EMPTY_REGION = Unavailable("empty region")


def is_number(x) -> bool:
    return isinstance(x, (int, float, np.floating, np.integer)) and not isinstance(x, bool)


def mean_score(values: Sequence) -> float | Unavailable:
    """Mean of per-sample scores; any ``Unavailable`` makes the whole mean unavailable (same reason).

    Per-sample ``Unavailable("... empty ...")`` markers from region metrics are skipped instead when at least
    one sample has a number (a sample without changed pixels has nothing to say about the changed region).
    """
    values = list(values)
    if not values:
        return Unavailable("no samples")
    marks = [v for v in values if isinstance(v, Unavailable)]
    nums = [float(v) for v in values if not isinstance(v, Unavailable)]
    if marks and (any(m.reason != EMPTY_REGION.reason for m in marks) or not nums):
        return marks[0]
    return float(np.mean(nums))


# ---------------------------------------------------------------------- input checks
def _pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = as_image(pred, "prediction"), as_image(gt, "ground truth")
    if pred.shape != gt.shape:
        raise XPromptError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
    return pred, gt


def _mask(mask, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != tuple(shape[:2]):
        raise XPromptError(f"mask {mask.shape} does not match the image size {shape[:2]}")
    return mask.astype(bool)


def to_unit(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float64 (H, W, 3) in [0, 1] (torchvision ``ToTensor`` scaling)."""
    return img.astype(np.float64) / 255.0


# ---------------------------------------------------------------------- full-image metrics
def psnr_from_mse(mse: float, data_range: float = 255.0) -> float:
    if mse <= 0:
        return PSNR_CAP
    return float(min(PSNR_CAP, 10.0 * math.log10(data_range**2 / mse)))


def psnr(pred, gt, mask=None) -> float | Unavailable:
    """PSNR in dB on 8-bit RGB (data range 255), optionally over the pixels where ``mask`` is true."""
    pred, gt = _pair(pred, gt)
    d = pred.astype(np.float64) - gt.astype(np.float64)  # (H, W, 3)
    if mask is not None:
        m = _mask(mask, pred.shape)
        if not m.any():
            return EMPTY_REGION
        d = d[m]  # (P, 3)
    return psnr_from_mse(float(np.mean(d**2)))


def ssim(pred, gt) -> float:
    """SSIM, Gaussian window sigma 1.5 (11x11), data range 255, mean over the RGB channels."""
    from skimage.metrics import structural_similarity

    pred, gt = _pair(pred, gt)
    if min(pred.shape[:2]) < SSIM_MIN_SIDE:
        raise XPromptError(f"SSIM needs images of at least {SSIM_MIN_SIDE} px a side, got {pred.shape[:2]}")
    return float(
        structural_similarity(
            gt,
            pred,
            data_range=255,
            channel_axis=-1,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            K1=0.01,
            K2=0.03,
        )
    )


def _masked_mean(d: np.ndarray, mask, shape) -> float | Unavailable:
    """Mean of the per-pixel errors ``d`` (H, W, 3), over ``mask`` when given (empty mask: ``EMPTY_REGION``)."""
    if mask is not None:
        m = _mask(mask, shape)
        if not m.any():
            return EMPTY_REGION
        d = d[m]
    return float(d.mean())


def l1(pred, gt, mask=None) -> float | Unavailable:
    """MagicBrush L1: mean absolute difference of [0, 1] images."""
    pred, gt = _pair(pred, gt)
    d = np.abs(to_unit(pred) - to_unit(gt))  # (H, W, 3)
    return _masked_mean(d, mask, pred.shape)


def l2(pred, gt, mask=None) -> float | Unavailable:
    """MagicBrush "L2": mean squared difference of [0, 1] images."""
    return mse(pred, gt, mask=mask, space="unit")


def mse(pred, gt, mask=None, space: str = "unit") -> float | Unavailable:
    """Mean squared error on [0, 1] images (``space="unit"``) or ImageNet-normalised ones (``"imagenet"``)."""
    pred, gt = _pair(pred, gt)
    a, b = to_unit(pred), to_unit(gt)  # (H, W, 3)
    if space == "imagenet":
        a, b = (a - IMAGENET_MEAN) / IMAGENET_STD, (b - IMAGENET_MEAN) / IMAGENET_STD
    elif space != "unit":
        raise XPromptError(f"mse space must be 'unit' or 'imagenet', got {space!r}")
    d = (a - b) ** 2
    return _masked_mean(d, mask, pred.shape)


# ---------------------------------------------------------------------- changed region
def changed_mask(query, gt, tol: int = 10) -> np.ndarray:
    """Pixels (H, W) where query and ground truth differ by more than ``tol`` (of 255) in some channel."""
    query, gt = _pair(query, gt)
    return (np.abs(query.astype(np.int16) - gt.astype(np.int16)) > tol).any(axis=2)


def changed_region(pred, query, gt, tol: int = 10, acc_tol: int = 32) -> dict:
    """Metrics restricted to the pixels the task changes (query vs ground truth).

    Returns ``{"psnr", "accuracy", "closer", "fraction"}``: PSNR on the changed pixels, the fraction of them
    predicted within ``acc_tol`` in every channel, the fraction closer (L2 over RGB) to the ground truth than
    to the query, and the changed fraction of the image. With no changed pixels the first three are
    ``Unavailable("empty region")``.
    """
    pred, gt = _pair(pred, gt)
    query = as_image(query, "query")
    if query.shape != gt.shape:
        raise XPromptError(f"query {query.shape} and ground truth {gt.shape} differ in size")
    m = changed_mask(query, gt, tol)  # (H, W)
    out = {"fraction": float(m.mean())}
    if not m.any():
        return {**out, "psnr": EMPTY_REGION, "accuracy": EMPTY_REGION, "closer": EMPTY_REGION}
    p, g, q = (x[m].astype(np.int32) for x in (pred, gt, query))  # (P, 3) each
    out["psnr"] = psnr_from_mse(float(np.mean((p - g) ** 2)))
    out["accuracy"] = float(np.mean((np.abs(p - g) <= acc_tol).all(axis=1)))
    out["closer"] = float(np.mean(((p - g) ** 2).sum(1) < ((p - q) ** 2).sum(1)))
    return out


# ---------------------------------------------------------------------- copy baseline
def copy_baseline(fn: Callable, query, gt, **kwargs):
    """Score the query itself as the prediction: ``fn(query, gt, **kwargs)``."""
    return fn(query, gt, **kwargs)


def lowlevel_scores(pred, gt, query=None) -> dict:
    """The standard pixel bundle used by the benchmarks: PSNR, SSIM, L1, L2 (+ changed region if ``query``)."""
    out = {"psnr": psnr(pred, gt), "ssim": ssim(pred, gt), "l1": l1(pred, gt), "l2": l2(pred, gt)}
    if query is not None:
        cr = changed_region(pred, query, gt)
        out.update(
            {"changed_psnr": cr["psnr"], "changed_acc": cr["accuracy"], "changed_closer": cr["closer"]}
        )
    return out

"""All evaluation metrics in one namespace (``from xprompt.eval import metrics as M``).

The definitions and their conventions live in the three modules re-exported here:
* ``metrics_image``: PSNR, SSIM, MSE, L1, L2, masked and changed-region variants, the copy baseline, and the
  ``Unavailable`` marker;
* ``metrics_dense``: palette decoding, depth RMSE, segmentation mIoU, normal mean angle error;
* ``metrics_embed``: LPIPS, CLIP-I / CLIP-T / CLIP-dir and DINO (local weights only).

``LOWER_IS_BETTER`` tells the report which direction each named metric improves in.
"""

from __future__ import annotations

from xprompt.eval.metrics_dense import (  # noqa: F401
    SegConfusion,
    angle_error_map,
    class_map,
    decode_normals,
    decode_palette,
    depth_errors,
    depth_rmse,
    encode_normals,
    encode_palette,
    miou,
    nearest_index,
    normal_angle_error,
)
from xprompt.eval.metrics_embed import (  # noqa: F401
    ClipScorer,
    DinoScorer,
    LPIPSScorer,
    clip_dir,
    clip_i,
    clip_t,
    dino,
    load_clip,
    load_dino,
    load_lpips,
    lpips,
)
from xprompt.eval.metrics_image import (  # noqa: F401
    EMPTY_REGION,
    NO_WEIGHTS,
    PSNR_CAP,
    Unavailable,
    as_image,
    changed_mask,
    changed_region,
    copy_baseline,
    is_number,
    l1,
    l2,
    lowlevel_scores,
    mean_score,
    mse,
    psnr,
    psnr_from_mse,
    ssim,
)

LOWER_IS_BETTER = {
    "rmse", "absrel", "l1", "l2", "mse", "mse_imagenet", "lpips", "angle", "normal_angle", "mean_angle_error",
}  # fmt: skip
HIGHER_IS_BETTER = {
    "psnr", "ssim", "miou", "delta1", "clip_i", "clip_t", "clip_dir", "dino", "changed_psnr", "changed_acc",
    "changed_closer", "success", "edit_success",
}  # fmt: skip


def lower_is_better(name: str) -> bool:
    base = name.split("/")[-1]
    return base in LOWER_IS_BETTER or base.endswith(("_rmse", "_mse"))

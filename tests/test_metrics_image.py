"""Pixel metrics against scikit-image / torchmetrics references and hand-computed values."""

import math

import numpy as np
import pytest
import torch

from xprompt.errors import XPromptError
from xprompt.eval import metrics as M


def _rand(seed, shape=(32, 40, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _noisy(img, seed, sigma=20):
    n = np.random.default_rng(seed).normal(0, sigma, img.shape)
    return np.clip(img.astype(float) + n, 0, 255).astype(np.uint8)


def test_psnr_matches_skimage_and_torchmetrics():
    from skimage.metrics import peak_signal_noise_ratio
    from torchmetrics.functional.image import peak_signal_noise_ratio as tm_psnr

    gt = _rand(0)
    pred = _noisy(gt, 1)
    ref = peak_signal_noise_ratio(gt, pred, data_range=255)
    t = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None].double()
    ref_tm = float(tm_psnr(t(pred), t(gt), data_range=255.0))
    assert M.psnr(pred, gt) == pytest.approx(ref, abs=1e-9)
    assert M.psnr(pred, gt) == pytest.approx(ref_tm, abs=1e-6)


def test_psnr_hand_values_and_cap():
    gt = np.zeros((16, 16, 3), np.uint8)
    pred = gt.copy()
    assert M.psnr(pred, gt) == M.PSNR_CAP
    pred[:] = 255  # MSE = 255^2 -> 0 dB
    assert M.psnr(pred, gt) == pytest.approx(0.0)
    pred[:] = 1  # MSE = 1 -> 20 log10 255
    assert M.psnr(pred, gt) == pytest.approx(20 * math.log10(255))


def test_psnr_masked():
    gt = np.zeros((8, 8, 3), np.uint8)
    pred = gt.copy()
    pred[:4] = 255
    mask = np.zeros((8, 8), bool)
    mask[4:] = True
    assert M.psnr(pred, gt, mask=mask) == M.PSNR_CAP
    mask[:] = False
    mask[0, 0] = True
    assert M.psnr(pred, gt, mask=mask) == pytest.approx(0.0)
    assert isinstance(M.psnr(pred, gt, mask=np.zeros((8, 8), bool)), M.Unavailable)


def test_ssim_matches_torchmetrics_gaussian_settings():
    """Same Gaussian SSIM map as torchmetrics; ours averages it over the interior (skimage crops the 5-px border
    that torchmetrics fills by reflection), so the interior means agree exactly."""
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    gt = np.repeat(np.repeat(_rand(2, (16, 16, 3)), 4, 0), 4, 1)  # (64, 64, 3): smooth-ish blocks
    pred = _noisy(gt, 3, sigma=15)
    t = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None].double()
    _, full = tm_ssim(
        t(pred),
        t(gt),
        gaussian_kernel=True,
        sigma=1.5,
        kernel_size=11,
        data_range=255.0,
        return_full_image=True,
    )  # full: (1, 3, 64, 64)
    ref = float(full[..., 5:-5, 5:-5].mean())
    ours = M.ssim(pred, gt)
    assert 0.0 < ours < 1.0
    assert ours == pytest.approx(ref, abs=1e-6)
    assert M.ssim(gt, gt) == pytest.approx(1.0)


def test_ssim_rejects_tiny_images():
    with pytest.raises(XPromptError, match="at least 11"):
        M.ssim(_rand(0, (8, 8, 3)), _rand(1, (8, 8, 3)))


def test_l1_l2_mse_hand_values():
    gt = np.zeros((4, 4, 3), np.uint8)
    pred = np.full((4, 4, 3), 51, np.uint8)  # 0.2 in [0, 1]
    assert M.l1(pred, gt) == pytest.approx(0.2)
    assert M.l2(pred, gt) == pytest.approx(0.04)
    assert M.mse(pred, gt) == pytest.approx(0.04)
    # ImageNet normalisation divides each channel difference by its std
    expect = np.mean((0.2 / np.array([0.229, 0.224, 0.225])) ** 2)
    assert M.mse(pred, gt, space="imagenet") == pytest.approx(expect)
    with pytest.raises(XPromptError):
        M.mse(pred, gt, space="lab")


def test_shape_and_dtype_errors():
    with pytest.raises(XPromptError, match="differ in size"):
        M.psnr(_rand(0, (8, 8, 3)), _rand(0, (8, 9, 3)))
    with pytest.raises(XPromptError, match="uint8"):
        M.l1(np.zeros((8, 8, 3), np.float32), _rand(0, (8, 8, 3)))
    with pytest.raises(XPromptError, match="mask"):
        M.l1(_rand(0, (8, 8, 3)), _rand(0, (8, 8, 3)), mask=np.ones((4, 4), bool))


def test_changed_region_and_copy_baseline():
    query = np.full((10, 10, 3), 100, np.uint8)
    gt = query.copy()
    gt[:2] = 200  # 20 changed pixels of 100
    cr_copy = M.copy_baseline(lambda q, g: M.changed_region(q, q, g), query, gt)
    assert cr_copy["fraction"] == pytest.approx(0.2)
    assert cr_copy["closer"] == 0.0 and cr_copy["accuracy"] == 0.0
    assert cr_copy["psnr"] == pytest.approx(M.psnr_from_mse(100.0**2))
    perfect = M.changed_region(gt, query, gt)
    assert perfect["closer"] == 1.0 and perfect["accuracy"] == 1.0 and perfect["psnr"] == M.PSNR_CAP
    half = gt.copy()
    half[1] = 100  # one of the two changed rows left as in the query
    assert M.changed_region(half, query, gt)["closer"] == pytest.approx(0.5)
    none = M.changed_region(query, query, query)
    assert none["fraction"] == 0.0 and isinstance(none["psnr"], M.Unavailable)
    # the full-image copy baseline
    assert M.copy_baseline(M.psnr, query, gt) == M.psnr(query, gt)


def test_unavailable_marker_and_mean():
    u = M.NO_WEIGHTS
    assert str(u) == "unavailable: no weights" and not u
    assert M.mean_score([1.0, 2.0, 3.0]) == pytest.approx(2.0)
    assert M.mean_score([1.0, u]) is u
    assert M.mean_score([1.0, M.EMPTY_REGION, 3.0]) == pytest.approx(2.0)  # empty regions are skipped
    assert isinstance(M.mean_score([M.EMPTY_REGION]), M.Unavailable)
    assert isinstance(M.mean_score([]), M.Unavailable)


def test_lowlevel_bundle():
    gt = _rand(5)
    query = _noisy(gt, 6)
    s = M.lowlevel_scores(query, gt, query=query)
    assert set(s) >= {"psnr", "ssim", "l1", "l2", "changed_psnr", "changed_acc", "changed_closer"}
    assert s["changed_closer"] == 0.0
    assert M.lower_is_better("l1") and not M.lower_is_better("psnr") and M.lower_is_better("depth_rmse")

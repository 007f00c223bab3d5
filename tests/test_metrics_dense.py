"""Dense metrics: palette decoding, depth RMSE, mIoU, normal angle error (hand values + sklearn reference)."""

import numpy as np
import pytest

from xprompt.errors import XPromptError
from xprompt.eval import metrics as M

PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]])
VALUES = np.array([0.1, 0.3, 0.5, 0.7, 0.9])


def test_decode_palette_exact_and_noisy():
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(PALETTE), (12, 9))
    img = PALETTE[idx].astype(np.uint8)
    np.testing.assert_array_equal(M.decode_palette(img, PALETTE, VALUES), VALUES[idx])
    noisy = np.clip(img.astype(int) + rng.integers(-60, 61, img.shape), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(M.nearest_index(noisy, PALETTE), idx)  # colours are >= 255 apart
    np.testing.assert_array_equal(M.encode_palette(VALUES[idx], PALETTE, VALUES), img)


def test_decode_palette_matches_bruteforce_on_dense_palette():
    rng = np.random.default_rng(1)
    pal = rng.integers(0, 256, (64, 3))
    img = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    d = ((img.reshape(-1, 1, 3).astype(float) - pal[None].astype(float)) ** 2).sum(-1)  # (400, 64)
    ref = d.argmin(1).reshape(20, 20)
    got = M.nearest_index(img, pal)
    # ties may resolve differently; the chosen colour must be at the minimal distance
    assert np.allclose(d[np.arange(400), got.reshape(-1)], d.min(1))
    assert (got == ref).mean() > 0.95


def test_palette_errors():
    with pytest.raises(XPromptError, match="palette"):
        M.decode_palette(np.zeros((4, 4, 3), np.uint8), np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(XPromptError, match="values"):
        M.decode_palette(np.zeros((4, 4, 3), np.uint8), PALETTE, np.zeros(3))


def test_depth_rmse_hand_value():
    gt_depth = np.full((4, 4), 0.5)
    pred_img = M.encode_palette(np.full((4, 4), 0.5), PALETTE, VALUES)
    assert M.depth_rmse(pred_img, gt_depth, PALETTE, VALUES) == pytest.approx(0.0)
    pred_depth = np.full((4, 4), 0.5)
    pred_depth[0] = 0.9  # 4 of 16 pixels off by 0.4 -> sqrt(4 * 0.16 / 16) = 0.2
    pred_img = M.encode_palette(pred_depth, PALETTE, VALUES)
    assert M.depth_rmse(pred_img, gt_depth, PALETTE, VALUES) == pytest.approx(0.2)
    # ground truth given as a palette image gives the same number
    gt_img = M.encode_palette(gt_depth, PALETTE, VALUES)
    assert M.depth_rmse(pred_img, gt_img, PALETTE, VALUES) == pytest.approx(0.2)
    valid = np.ones((4, 4), bool)
    valid[0] = False
    assert M.depth_rmse(pred_img, gt_depth, PALETTE, VALUES, valid=valid) == pytest.approx(0.0)


def test_miou_hand_values():
    gt = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    pred = np.array([[0, 0, 0, 1], [0, 0, 1, 1]])
    # class 0: tp 4, fp 1, fn 0 -> 4/5 ; class 1: tp 3, fp 0, fn 1 -> 3/4 ; classes 2.. absent -> excluded
    conf = M.SegConfusion(5).update(pred, gt)
    assert conf.miou() == pytest.approx(100 * (0.8 + 0.75) / 2)
    assert np.isnan(conf.iou()[2:]).all()
    assert conf.pixel_accuracy() == pytest.approx(100 * 7 / 8)
    # a class only in the prediction counts (IoU 0)
    pred2 = pred.copy()
    pred2[0, 0] = 3
    # class 0: tp 3, union 5; class 1: tp 3, union 4; class 3: tp 0, union 1
    assert M.SegConfusion(5).update(pred2, gt).miou() == pytest.approx(100 * (3 / 5 + 3 / 4 + 0) / 3)


def test_miou_matches_sklearn_jaccard():
    from sklearn.metrics import jaccard_score

    rng = np.random.default_rng(2)
    conf = M.SegConfusion(6)
    gts, preds = [], []
    for _ in range(3):
        g = rng.integers(0, 4, (10, 10))  # classes 4, 5 never occur
        p = np.where(rng.random((10, 10)) < 0.7, g, rng.integers(0, 5, (10, 10)))
        conf.update(p, g)
        gts.append(g.ravel())
        preds.append(p.ravel())
    g, p = np.concatenate(gts), np.concatenate(preds)
    present = np.union1d(np.unique(g), np.unique(p))
    ref = jaccard_score(g, p, labels=present, average="macro") * 100
    assert conf.miou() == pytest.approx(ref)


def test_miou_from_colour_images_and_ignore():
    gt_ids = np.array([[0, 1], [2, 255]])
    pred = PALETTE[np.array([[0, 1], [2, 3]])].astype(np.uint8)
    assert M.miou(pred, gt_ids, PALETTE[:4], ignore_index=255) == pytest.approx(100.0)
    with pytest.raises(XPromptError, match="class ids"):
        M.miou(pred, gt_ids, PALETTE[:4])


def test_normals_angle_error():
    up = np.zeros((2, 2, 3))
    up[..., 2] = 1.0
    side = np.zeros((2, 2, 3))
    side[..., 0] = 1.0
    assert M.normal_angle_error(M.encode_normals(up), M.encode_normals(up)) == pytest.approx(0.0, abs=0.5)
    assert M.normal_angle_error(M.encode_normals(side), M.encode_normals(up)) == pytest.approx(90.0, abs=0.5)
    mixed = up.copy()
    mixed[0, 0] = -up[0, 0]  # one pixel flipped: 180 deg, three at 0 -> mean 45
    assert M.normal_angle_error(M.encode_normals(mixed), M.encode_normals(up)) == pytest.approx(45.0, abs=0.5)
    # a grey (128,128,128) ground-truth pixel decodes to ~0 and is invalid
    gt = M.encode_normals(up)
    gt[0, 0] = 128
    _err, valid = M.angle_error_map(M.encode_normals(up), gt)
    assert not valid[0, 0] and valid.sum() == 3


def test_normals_arbitrary_angle():
    a = np.array([0.0, 0.0, 1.0])
    b = np.array([np.sin(np.radians(30)), 0.0, np.cos(np.radians(30))])
    pa = M.encode_normals(np.broadcast_to(a, (3, 3, 3)))
    pb = M.encode_normals(np.broadcast_to(b, (3, 3, 3)))
    assert M.normal_angle_error(pb, pa) == pytest.approx(30.0, abs=0.6)  # 8-bit quantisation


def test_depth_decoding_matches_the_task_suite():
    from xprompt.train.tasks_dense import RESERVED_PALETTE, decode_depth, encode_depth, palette_lut

    rng = np.random.default_rng(3)
    depth = rng.uniform(0.05, 1.0, (16, 16))
    img = encode_depth(depth, RESERVED_PALETTE)
    noisy = np.clip(img.astype(int) + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)
    values = 1.0 - np.arange(256) / 255.0
    ours = M.decode_palette(noisy, palette_lut(RESERVED_PALETTE), values)
    ref = decode_depth(noisy, RESERVED_PALETTE)
    # equidistant palette neighbours may break ties differently: at most one palette step apart, rarely
    np.testing.assert_allclose(ours, ref, atol=1.01 / 255)
    assert np.mean(np.abs(ours - ref) < 1e-6) > 0.9
    assert (
        M.depth_rmse(img, depth, palette_lut(RESERVED_PALETTE), values) < 0.5 / 255 + 1e-9
    )  # 8-bit quantisation

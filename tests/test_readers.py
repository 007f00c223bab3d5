"""Dataset readers on tiny copies of the real layouts (folder/file/column structure and value encodings)."""

import numpy as np
import pytest
from PIL import Image

from xprompt.errors import XPromptError
from xprompt.readers import open_dataset, open_paired, parse_spec


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return arr


def _rgb(seed, h=8, w=12):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _lol(root, train=(1, 2), test=(10, 2, 1)):
    want = {}
    for split, sub, stems in (("train", "our485", train), ("test", "eval15", test)):
        for s in stems:
            lo, hi = (
                _png(root / sub / "low" / f"{s}.png", _rgb(s)),
                _png(root / sub / "high" / f"{s}.png", _rgb(100 + s)),
            )
            want[(split, str(s))] = (lo, hi)
    return want


# ---------------------------------------------------------------------- paired folders
def test_lol_pairs_by_name_in_natural_order(tmp_path):
    want = _lol(tmp_path / "LOL")
    ds = open_dataset("lol", tmp_path / "LOL")
    assert (ds.train_split, ds.test_split, ds.task) == ("train", "test", "lowlevel")
    assert ds.keys("test") == ["1", "2", "10"] and ds.keys("train") == ["1", "2"]
    p = ds.load("test", "10")
    assert np.array_equal(p.input, want[("test", "10")][0]) and np.array_equal(
        p.target, want[("test", "10")][1]
    )
    assert p.instruction == "Brighten this dark image."
    d = ds.describe()
    assert d["name"] == "lol" and len(d["fingerprint"]) == 16
    # the fingerprint follows the file list: the same files give the same value, one more file changes it
    assert open_dataset("lol", tmp_path / "LOL").fingerprint() == d["fingerprint"]
    _png(tmp_path / "LOL" / "our485" / "low" / "3.png", _rgb(3))
    _png(tmp_path / "LOL" / "our485" / "high" / "3.png", _rgb(4))
    assert open_dataset("lol", tmp_path / "LOL").fingerprint() != d["fingerprint"]


def test_lol_malformed_layouts_give_one_line_errors(tmp_path):
    _lol(tmp_path / "a")
    (tmp_path / "a" / "eval15" / "high" / "10.png").unlink()
    with pytest.raises(XPromptError, match=r"input .*10\.png has no target partner") as e:
        open_dataset("lol", tmp_path / "a").keys("test")
    assert "\n" not in str(e.value)
    _lol(tmp_path / "b")
    import shutil

    shutil.rmtree(tmp_path / "b" / "our485" / "high")
    with pytest.raises(XPromptError, match=r"expected folder .*our485/high"):
        open_dataset("lol", tmp_path / "b")
    with pytest.raises(XPromptError, match="no such directory|expected folder"):
        open_dataset("lol", tmp_path / "missing")
    _lol(tmp_path / "c", train=(1,), test=(1,))
    _png(tmp_path / "c" / "eval15" / "high" / "1.png", _rgb(5, 9, 12))
    with pytest.raises(XPromptError, match="a pair must have one size"):
        open_dataset("lol", tmp_path / "c").load("test", "1")


def test_rain100_layouts(tmp_path):
    # the original test-only release: rain/rain-001.png <-> norain/norain-001.png
    r = tmp_path / "Rain100H"
    a = _png(r / "rain" / "rain-001.png", _rgb(1))
    b = _png(r / "norain" / "norain-001.png", _rgb(2))
    _png(r / "rain" / "rain-002.png", _rgb(3)), _png(r / "norain" / "norain-002.png", _rgb(4))
    ds = open_dataset("rain100h", r)
    assert ds.name == "rain100h" and ds.train_split is None and ds.splits == ["test"]
    assert ds.keys("test") == ["001", "002"]
    p = ds.load("test", "001")
    assert np.array_equal(p.input, a) and np.array_equal(p.target, b)
    assert p.instruction == "Remove the rain from this image."
    # train/test with the training copy's naming (rain/norain-1x2.png) and input/target test folders
    r2 = tmp_path / "Rain100L"
    c = _png(r2 / "train" / "rain" / "norain-1x2.png", _rgb(5))
    _png(r2 / "train" / "norain" / "norain-1.png", _rgb(6))
    _png(r2 / "test" / "input" / "7.png", _rgb(7)), _png(r2 / "test" / "target" / "7.png", _rgb(8))
    ds2 = open_dataset("rain100l", r2)
    assert ds2.splits == ["train", "test"] and ds2.keys("train") == ["1"] and ds2.keys("test") == ["7"]
    assert np.array_equal(ds2.load("train", "1").input, c)
    with pytest.raises(
        XPromptError, match="expected .*rain\\+norain or input\\+target folders, found \\['x'\\]"
    ):
        (tmp_path / "bad" / "x").mkdir(parents=True)
        open_dataset("rain100h", tmp_path / "bad")


def test_generic_pairs_by_stem(tmp_path):
    a = _png(tmp_path / "in" / "cat.jpg", _rgb(1)[..., :3].copy())
    _png(tmp_path / "out" / "cat.png", _rgb(2))
    _png(tmp_path / "in" / "dog.png", _rgb(3)), _png(tmp_path / "out" / "dog.png", _rgb(4))
    ds = open_paired(tmp_path / "in", tmp_path / "out", "Sharpen it.")
    assert ds.keys("test") == ["cat", "dog"] and ds.train_split is None
    p = ds.load("test", "cat")
    assert p.instruction == "Sharpen it." and p.input.shape == a.shape
    _png(tmp_path / "out" / "eel.png", _rgb(5))
    with pytest.raises(XPromptError, match=r"target .*eel\.png has no input partner"):
        open_paired(tmp_path / "in", tmp_path / "out").keys("test")
    with pytest.raises(XPromptError, match="--target-dir .*not a directory"):
        open_paired(tmp_path / "in", tmp_path / "nope")


def test_parse_spec():
    assert parse_spec("LOL=/d/x=y") == ("lol", "/d/x=y")
    with pytest.raises(XPromptError, match="unknown dataset 'kitti'"):
        parse_spec("kitti=/x")
    with pytest.raises(XPromptError, match="expected NAME=PATH"):
        parse_spec("lol")


# ---------------------------------------------------------------------- NYUv2
def test_nyu_folder_layout_16bit_png_in_millimetres(tmp_path):
    from xprompt.readers.nyu import depth_from_render

    mm = np.array([[0, 1000, 2500, 10000], [12000, 500, 65535, 7500]], np.uint16)  # (2, 4) millimetres
    _png(tmp_path / "nyu" / "test" / "rgb" / "0001.jpg", _rgb(1, 2, 4))
    _png(tmp_path / "nyu" / "test" / "depth" / "0001.png", mm)
    ds = open_dataset("nyuv2", tmp_path / "nyu")
    assert ds.task == "depth" and ds.train_split is None and ds.keys("test") == ["0001"]
    p = ds.load("test", "0001")
    assert p.extra["depth_m"].dtype == np.float32
    np.testing.assert_allclose(p.extra["depth_m"], mm / 1000.0, rtol=1e-6)
    # grey nearness with the 10 m cap: 1 m -> rint(0.9 * 255) = 230, 2.5 m -> 191, >= 10 m -> 0, missing -> 0
    assert p.target[..., 0].tolist() == [[0, 230, 191, 0], [0, 242, 0, 64]]
    assert (p.target[..., 0] == p.target[..., 2]).all()
    np.testing.assert_allclose(
        depth_from_render(p.target)[0, 1:3], [10 * (1 - 230 / 255), 10 * (1 - 191 / 255)]
    )
    # another scale: decimetres
    assert (
        open_dataset("nyuv2", tmp_path / "nyu", depth_scale=10).load("test", "0001").extra["depth_m"][0, 1]
        == 100
    )
    # an 8-bit depth PNG is a visualisation: refused
    _png(tmp_path / "nyu" / "test" / "depth" / "0001.png", (mm // 256).astype(np.uint8))
    with pytest.raises(XPromptError, match="depth must be a 16-bit greyscale PNG, got mode L"):
        open_dataset("nyuv2", tmp_path / "nyu").load("test", "0001")


def test_nyu_datasets_layout_float_metres(tmp_path):
    from datasets import Array2D, Dataset, DatasetDict, Features
    from datasets import Image as HFImage

    depth = np.array([[1.0, 2.0, 4.0], [0.0, 5.5, 11.0]], np.float32)
    feats = Features({"image": HFImage(), "depth_map": Array2D((2, 3), "float32")})
    split = lambda s: Dataset.from_dict(
        {"image": [Image.fromarray(_rgb(s, 2, 3))], "depth_map": [depth]}, features=feats
    )
    DatasetDict({"train": split(1), "validation": split(2)}).save_to_disk(str(tmp_path / "hf"))
    ds = open_dataset("nyuv2", tmp_path / "hf")
    assert (ds.train_split, ds.test_split) == ("train", "validation")
    p = ds.load("validation", "0")
    np.testing.assert_array_equal(p.extra["depth_m"], depth)
    assert np.array_equal(p.input, _rgb(2, 2, 3))
    # integer depth (unknown unit) and missing columns are refused
    bad = Features({"image": HFImage(), "depth": HFImage()})
    Dataset.from_dict({"image": [Image.fromarray(_rgb(1, 2, 3))], "depth": [Image.fromarray(np.ones((2, 3), np.uint16))]},
                      features=bad).save_to_disk(str(tmp_path / "int"))  # fmt: skip
    with pytest.raises(
        XPromptError, match="depth is a mode-I;16 image; the datasets layout needs float metres"
    ):
        open_dataset("nyuv2", tmp_path / "int").load("all", "0")
    Dataset.from_dict({"image": [Image.fromarray(_rgb(1, 2, 3))]}).save_to_disk(str(tmp_path / "nodepth"))
    with pytest.raises(XPromptError, match=r"needs columns image and depth_map or depth; it has \['image'\]"):
        open_dataset("nyuv2", tmp_path / "nodepth").keys("all")


def test_depth_errors_with_the_eigen_crop_hand_computed():
    from xprompt.eval.metrics_dense import depth_errors
    from xprompt.readers.nyu import EIGEN_CROP, eigen_mask

    m = eigen_mask((480, 640))
    assert m.sum() == (EIGEN_CROP[1] - EIGEN_CROP[0]) * (EIGEN_CROP[3] - EIGEN_CROP[2])
    assert m[45, 41] and not m[44, 41] and not m[45, 601] and m[470, 600]
    gt = np.full((4, 4), 2.0)
    gt[0, 0] = 0.0  # no measurement: not scored
    gt[0, 1] = 12.0  # beyond the 10 m cap: not scored
    pred = np.full((4, 4), 2.2)
    pred[1] = 3.0  # 4 pixels off by 1 m (ratio 1.5)
    pred[2, 0] = 50.0  # clipped to 10 m, but masked out below
    valid = np.ones((4, 4), bool)
    valid[2, 0] = False
    r = depth_errors(pred, gt, valid)
    # scored: 16 - 3 = 13 pixels; 4 with error 1.0, 9 with error 0.2
    assert r["rmse"] == pytest.approx(np.sqrt((4 * 1.0 + 9 * 0.04) / 13))
    assert r["absrel"] == pytest.approx((4 * 0.5 + 9 * 0.1) / 13)
    assert r["delta1"] == pytest.approx(9 / 13)
    assert depth_errors(np.full((2, 2), 20.0), np.full((2, 2), 8.0))["rmse"] == pytest.approx(
        2.0
    )  # clipped to 10


# ---------------------------------------------------------------------- ADE20K
def test_ade20k_palette_indexed_and_grey_annotations(tmp_path):
    from xprompt.readers.ade import ADE_COLORS, render_labels

    root = tmp_path / "ADEChallengeData2016"
    labels = np.array([[0, 1, 150], [7, 7, 2]], np.uint8)
    _png(root / "images" / "validation" / "ADE_val_00000001.jpg", _rgb(1, 2, 3))
    p_img = Image.fromarray(labels, "L").convert("P")  # palette-indexed: the indices are the classes
    p_img.putpalette(list(np.random.default_rng(0).integers(0, 256, 768)))
    (root / "annotations" / "validation").mkdir(parents=True)
    p_img.save(root / "annotations" / "validation" / "ADE_val_00000001.png")
    _png(root / "images" / "training" / "ADE_train_00000001.jpg", _rgb(2, 2, 3))
    _png(root / "annotations" / "training" / "ADE_train_00000001.png", labels)  # mode L
    ds = open_dataset("ade20k", tmp_path)  # the parent of ADEChallengeData2016 also works
    assert (ds.train_split, ds.test_split, ds.task) == ("training", "validation", "segmentation")
    for split, key in (("validation", "ADE_val_00000001"), ("training", "ADE_train_00000001")):
        p = ds.load(split, key)
        assert p.extra["labels"].tolist() == labels.tolist()
    assert p.target[0, 0].tolist() == [0, 0, 0] and p.target[0, 1].tolist() == ADE_COLORS[0].tolist()
    assert p.target[0, 2].tolist() == ADE_COLORS[149].tolist()
    # 150 distinct colours, none black, at least 51 apart in some channel
    assert len({tuple(c) for c in ADE_COLORS}) == 150 and ADE_COLORS.max(1).min() > 0
    assert np.array_equal(render_labels(labels), p.target)
    _png(root / "annotations" / "training" / "ADE_train_00000001.png", _rgb(3, 2, 3))
    with pytest.raises(XPromptError, match="must be a single-channel class-index PNG .*got mode RGB"):
        ds.load("training", "ADE_train_00000001")
    _png(root / "annotations" / "training" / "ADE_train_00000001.png", np.full((2, 3), 151, np.uint8))
    with pytest.raises(XPromptError, match="class index 151 > 150"):
        ds.load("training", "ADE_train_00000001")
    with pytest.raises(XPromptError, match="no annotations/ folder"):
        (tmp_path / "x" / "images").mkdir(parents=True)
        open_dataset("ade20k", tmp_path / "x")


# ---------------------------------------------------------------------- editing sets
def _mb_rows(n, seed=0):
    rng = np.random.default_rng(seed)
    img = lambda: Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    masks = []
    for i in range(n):
        m = np.zeros((6, 8, 3), np.uint8)
        m[i : i + 2, 1:4] = 255  # white = edited region
        masks.append(Image.fromarray(m))
    return {"img_id": [f"{100 + i}" for i in range(n)], "turn_index": [i + 1 for i in range(n)],
            "source_img": [img() for _ in range(n)], "mask_img": masks,
            "instruction": [f"edit number {i}" for i in range(n)], "target_img": [img() for _ in range(n)]}  # fmt: skip


def _mb_features():
    from datasets import Features, Value
    from datasets import Image as HFImage

    return Features({"img_id": Value("string"), "turn_index": Value("int32"), "source_img": HFImage(),
                     "mask_img": HFImage(), "instruction": Value("string"), "target_img": HFImage()})  # fmt: skip


def test_magicbrush_save_to_disk_and_parquet(tmp_path):
    from datasets import Dataset, DatasetDict

    tr, dev = _mb_rows(3, 0), _mb_rows(2, 1)
    dd = DatasetDict({"train": Dataset.from_dict(tr, features=_mb_features()),
                      "dev": Dataset.from_dict(dev, features=_mb_features())})  # fmt: skip
    dd.save_to_disk(str(tmp_path / "mb"))
    (tmp_path / "pq" / "data").mkdir(
        parents=True
    )  # the hub snapshot: data/<split>-NNNNN-of-NNNNN-<hash>.parquet
    dd["train"].to_parquet(str(tmp_path / "pq" / "data" / "train-00000-of-00001-abc.parquet"))
    dd["dev"].to_parquet(str(tmp_path / "pq" / "data" / "dev-00000-of-00001-def.parquet"))
    for root in ("mb", "pq"):
        ds = open_dataset("magicbrush", tmp_path / root)
        assert (ds.train_split, ds.test_split, ds.task) == ("train", "dev", "edit")
        assert ds.keys("dev") == ["0", "1"] and len(ds.keys("train")) == 3
        p = ds.load("dev", "1")
        assert p.instruction == "edit number 1"
        assert np.array_equal(p.input, np.asarray(dev["source_img"][1]))
        assert np.array_equal(p.target, np.asarray(dev["target_img"][1]))
        assert p.extra["turn_index"] == 2 and p.extra["img_id"] == "101"
        want = np.zeros((6, 8), bool)
        want[1:3, 1:4] = True
        assert np.array_equal(p.extra["mask"], want)


def test_instructpix2pix_and_columns_mapping(tmp_path):
    from datasets import Dataset

    rng = np.random.default_rng(0)
    img = lambda: Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    Dataset.from_dict({"original_prompt": ["a dog", "a cat"], "original_image": [img(), img()],
                       "edit_prompt": ["make it a wolf", "add a hat"], "edited_prompt": ["a wolf", "a cat in a hat"],
                       "edited_image": [img(), img()]}).save_to_disk(str(tmp_path / "ip2p"))  # fmt: skip
    ds = open_dataset("instructpix2pix", tmp_path / "ip2p")
    assert ds.train_split is None and ds.test_split == "all" and ds.keys("all") == ["0", "1"]
    p = ds.load("all", "1")
    assert (p.instruction, p.extra["caption_in"], p.extra["caption_out"]) == (
        "add a hat",
        "a cat",
        "a cat in a hat",
    )
    # the same set through --columns, and a mapping that names a missing column
    ds2 = open_dataset(
        "edits",
        tmp_path / "ip2p",
        columns="source=original_image,target=edited_image,instruction=edit_prompt",
    )
    assert ds2.load("all", "0").instruction == "make it a wolf"
    with pytest.raises(XPromptError, match=r"lacks column\(s\) \['prompt'\]; it has \["):
        open_dataset(
            "edits", tmp_path / "ip2p", columns="source=original_image,target=edited_image,instruction=prompt"
        ).keys("all")
    with pytest.raises(XPromptError, match="lacks instruction"):
        open_dataset("edits", tmp_path / "ip2p", columns="source=a,target=b")
    with pytest.raises(XPromptError, match="needs --columns"):
        open_dataset("edits", tmp_path / "ip2p")
    # the hub layout: one "train" split, used for training and (other rows as examples) for evaluation
    from datasets import DatasetDict, load_from_disk

    DatasetDict({"train": load_from_disk(str(tmp_path / "ip2p"))}).save_to_disk(str(tmp_path / "ip2p_hub"))
    hub = open_dataset("instructpix2pix", tmp_path / "ip2p_hub")
    assert (hub.train_split, hub.test_split) == ("train", "train") and hub.splits == ["train"]
    with pytest.raises(XPromptError, match=r"lacks column\(s\) \['source_img', "):
        open_dataset("magicbrush", tmp_path / "ip2p").keys("all")

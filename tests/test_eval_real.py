"""``xprompt eval unseen|seen --dataset NAME=PATH``: real-dataset tasks on tiny copies of the layouts, with the
tiny test checkpoint of test_eval (reports, example selection, depth/ADE metrics against hand-computed values)."""

import json

import numpy as np
import pytest
from PIL import Image
from test_eval import ckpt, pipe  # noqa: F401  (the same tiny checkpoint and pipeline fixtures)
from test_readers import _lol, _png, _rgb

from xprompt.cli import main
from xprompt.errors import XPromptError
from xprompt.eval import benchmarks as B
from xprompt.eval import metrics as M
from xprompt.eval.eval_config import TaskSpec
from xprompt.eval.items import Item
from xprompt.eval.scoring import Scorers, reduce_scores, sample_scores


def _rain(root, n=3):
    for i in range(1, n + 1):
        _png(root / "rain" / f"rain-{i:03d}.png", _rgb(50 + i, 32, 48))
        _png(root / "norain" / f"norain-{i:03d}.png", _rgb(60 + i, 32, 48))
    return root


def test_cli_eval_unseen_on_lol_and_rain100h(ckpt, tmp_path, capsys):  # noqa: F811
    lol = tmp_path / "LOL"
    for split, sub, stems in (("train", "our485", (1, 2, 3)), ("test", "eval15", (1, 2))):
        for s in stems:
            _png(lol / sub / "low" / f"{s}.png", _rgb(s + 10 * len(split), 32, 48))
            _png(lol / sub / "high" / f"{s}.png", _rgb(s + 20 * len(split), 32, 48))
    rain = _rain(tmp_path / "Rain100H")
    out = tmp_path / "rep"
    argv = ["eval", "unseen", "--checkpoint", str(ckpt), "--out", str(out), "--dataset", f"lol={lol}",
            "--dataset", f"rain100h={rain}", "--limit", "2", "--batch-size", "2", "--quiet", "--seed", "3"]  # fmt: skip
    assert main(argv) == 0
    rep = json.loads((out / "report.json").read_text())
    assert list(rep["tasks"]) == ["lol", "rain100h"]
    assert rep["rows"] == ["none", "full", "xp", "wrong", "copy", "vqcopy", "vq"]
    d = {x["name"]: x for x in rep["datasets"]}
    assert d["lol"]["path"] == str(lol.resolve()) and d["lol"]["example_split"] == "train"
    assert (
        d["rain100h"]["example_split"] == "test" and d["rain100h"]["example_seed"] == 3 and d["lol"]["n"] == 2
    )
    from xprompt.readers import open_dataset

    assert d["lol"]["fingerprint"] == open_dataset("lol", lol).fingerprint()
    # the copy baseline is PSNR(query, target) at the dataset's resolution, averaged over the queries
    want = np.mean([M.psnr(_rgb(k + 40, 32, 48), _rgb(k + 80, 32, 48)) for k in (1, 2)])
    assert rep["tasks"]["lol"]["results"]["copy"]["psnr"] == pytest.approx(want)
    assert isinstance(rep["tasks"]["lol"]["results"]["xp"]["ssim"], float)
    # examples: LOL's from its training split; Rain100H (no train split) from other test pairs, never the query;
    # the wrong row shows the other dataset's example
    for i, s in enumerate(rep["tasks"]["rain100h"]["samples"]):
        ex = s["example_from"]["xp"]
        assert ex["split"] == "test" and ex["key"] != f"{i + 1:03d}"
        assert s["example_from"]["wrong"]["dataset"] == "lol"
    assert all(s["example_from"]["xp"]["split"] == "train" for s in rep["tasks"]["lol"]["samples"])
    md = (out / "report.md").read_text()
    assert f"file-list fingerprint `{d['lol']['fingerprint']}`" in md and "## LOL (`lol`, n = 2)" in md
    assert (out / "grids" / "lol.png").is_file() and (out / "grids" / "rain100h.png").is_file()
    # same seed, same examples; another seed draws others
    again = tmp_path / "rep2"
    assert main(argv[:5] + [str(again)] + argv[6:]) == 0
    rep2 = json.loads((again / "report.json").read_text())
    assert json.dumps(rep2["tasks"]) == json.dumps(rep["tasks"])


def test_example_selection_never_shows_the_query(tmp_path):
    from xprompt.eval.real import RealSuite

    rain = _rain(tmp_path / "r", n=5)
    seen = set()
    for seed in range(6):
        cfg = B.EvalConfig(benchmark="unseen", datasets=[f"rain100l={rain}"], limit=5, seed=seed)
        suite = RealSuite(cfg)
        _, src = suite.examples(0, 0, 5)
        assert [s["key"] for s in src] != [f"{i:03d}" for i in range(1, 6)]
        assert all(s["key"] != f"{i + 1:03d}" for i, s in enumerate(src))
        assert src == RealSuite(cfg).examples(0, 0, 5)[1]  # seeded: reproducible
        seen.add(tuple(s["key"] for s in src))
    assert len(seen) > 1  # the seed changes the draw
    assert cfg.rows == ["none", "full", "xp", "identity"]  # one dataset: no other dataset for `wrong`


def test_dataset_config_errors(tmp_path):
    rain = _rain(tmp_path / "r")
    with pytest.raises(XPromptError, match="give two --dataset"):
        B.EvalConfig(benchmark="unseen", datasets=[f"rain100h={rain}"], rows=["xp", "wrong"])
    with pytest.raises(XPromptError, match="run in the unseen and seen benchmarks"):
        B.EvalConfig(benchmark="raie", datasets=[f"rain100h={rain}"])
    with pytest.raises(XPromptError, match="--tasks selects suite tasks"):
        B.EvalConfig(benchmark="seen", datasets=[f"rain100h={rain}"], tasks=["depth"])
    with pytest.raises(XPromptError, match="do not apply to --dataset runs"):
        B.EvalConfig(benchmark="seen", datasets=[f"rain100h={rain}"], rows=["xp-mask"])


def test_cli_malformed_dataset_is_one_line_exit_2(ckpt, tmp_path, capsys):  # noqa: F811
    _lol(tmp_path / "LOL")
    (tmp_path / "LOL" / "eval15" / "low" / "2.png").unlink()
    argv = ["eval", "unseen", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--quiet"]
    assert main(argv + ["--dataset", f"lol={tmp_path / 'LOL'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no input partner" in err and len(err.splitlines()) == 1
    assert main(argv + ["--dataset", "kitti=/x"]) == 2
    assert main(argv + ["--input-dir", str(tmp_path)]) == 2
    assert "--target-dir go together" in capsys.readouterr().err


def _item(task, target, params):
    return Item(task, "", target, target, None, params)


def test_nyu_depth_metrics_through_the_benchmark_scorer():
    from xprompt.eval.real import SPECS
    from xprompt.readers.nyu import eigen_mask, render_depth

    spec = TaskSpec("nyuv2", "NYUv2", SPECS["depth"])
    depth = np.full((48, 64), 2.0, np.float32)
    depth[:24] = 5.0
    depth[0, 0] = 0.0
    it = _item("nyuv2", render_depth(depth), {"depth_m": depth})
    perfect = sample_scores(spec, it, render_depth(depth), Scorers())
    assert perfect["delta1"] == 1.0 and perfect["depth_rmse"] < 0.02  # only 8-bit quantisation error
    # predict 4 m everywhere: inside the Eigen crop (rows 4..46, cols 4..59 of 48 x 64) the top half is 5 m
    # (error 1, ratio 1.25 -> not < 1.25) and the bottom half 2 m (error 2, ratio 2)
    pred = render_depth(np.full((48, 64), 4.0))
    r = sample_scores(spec, it, pred, Scorers())
    crop = eigen_mask((48, 64))
    g = depth[crop].astype(np.float64)
    p4 = 10 * (1 - np.rint(0.6 * 255) / 255)  # 4 m after the 8-bit rendering
    assert r["depth_rmse"] == pytest.approx(np.sqrt(np.mean((p4 - g) ** 2)), rel=1e-5)
    assert r["absrel"] == pytest.approx(np.mean(np.abs(p4 - g) / g), rel=1e-5)
    assert r["delta1"] == pytest.approx(0.0)
    # a prediction at another size is resized to the ground truth's before scoring
    small = sample_scores(spec, it, render_depth(np.full((24, 32), 4.0)), Scorers())
    assert small["depth_rmse"] == pytest.approx(r["depth_rmse"], rel=1e-5)


def test_ade_miou_over_the_set_hand_computed():
    from xprompt.eval.real import SPECS
    from xprompt.readers.ade import render_labels

    spec = TaskSpec("ade20k", "ADE20K", SPECS["segmentation"])
    gt = np.array([[1, 1, 2, 2], [0, 0, 3, 3]])  # 0 = ignore
    pred_labels = np.array(
        [[1, 2, 2, 2], [5, 5, 3, 3]]
    )  # one class-1 pixel called 2; ignored pixels do not count
    it = _item("ade20k", render_labels(gt), {"labels": gt})
    v = sample_scores(spec, it, render_labels(pred_labels), Scorers())["ade_miou"]
    # IoU: class 1 = 1/2, class 2 = 2/3, class 3 = 2/2; class 5 predicted only on ignored pixels: not counted
    assert reduce_scores("ade_miou", [v]) == pytest.approx(100 * (0.5 + 2 / 3 + 1) / 3)
    perfect = sample_scores(spec, it, render_labels(gt), Scorers())["ade_miou"]
    # over the set (one confusion matrix): class 1 = 3 TP / 4, class 2 = 4 / 5, class 3 = 1
    assert reduce_scores("ade_miou", [perfect, v]) == pytest.approx(100 * (3 / 4 + 4 / 5 + 1) / 3)


def test_seen_on_nyu_and_ade_folders(ckpt, pipe, tmp_path):  # noqa: F811
    nyu = tmp_path / "nyu"
    for split in ("train", "test"):
        for k in range(2):
            _png(nyu / split / "rgb" / f"{k}.png", _rgb(k, 24, 32))
            _png(nyu / split / "depth" / f"{k}.png", np.full((24, 32), 1000 * (k + 1), np.uint16))
    ade = tmp_path / "ADEChallengeData2016"
    for split in ("training", "validation"):
        _png(ade / "images" / split / "a.jpg", _rgb(3, 24, 32))
        Image.fromarray(np.tile(np.arange(32, dtype=np.uint8) % 4, (24, 1))).save(
            (ade / "annotations" / split).mkdir(parents=True) or ade / "annotations" / split / "a.png"
        )
    cfg = B.EvalConfig(benchmark="seen", checkpoint=str(ckpt), datasets=[f"nyuv2={nyu}", f"ade20k={ade}"],
                       limit=2, rows=["xp", "wrong"], batch_size=2)  # fmt: skip
    rep, _ = B.run(cfg, pipe, progress=False)
    assert rep["tasks"]["nyuv2"]["metrics"] == ["depth_rmse", "absrel", "delta1"]
    assert rep["tasks"]["ade20k"]["n"] == 1
    for t in rep["tasks"].values():
        for row in rep["rows"]:
            assert all(isinstance(v, float) for v in t["results"][row].values()), (row, t["results"][row])
    # the VQ ceiling of a constant-depth map through the grid tokenizer stays close to the truth
    assert rep["tasks"]["nyuv2"]["results"]["vq"]["depth_rmse"] < 0.5


def test_one_split_edit_set_draws_examples_from_other_rows(tmp_path):
    from datasets import Dataset, DatasetDict

    from xprompt.eval.real import RealSuite

    img = lambda s: Image.fromarray(_rgb(s, 8, 8))
    DatasetDict({"train": Dataset.from_dict({
        "original_image": [img(i) for i in range(3)], "edited_image": [img(10 + i) for i in range(3)],
        "edit_prompt": ["a", "b", "c"], "original_prompt": ["x"] * 3, "edited_prompt": ["y"] * 3})}
    ).save_to_disk(str(tmp_path / "ip2p"))  # fmt: skip
    for seed in range(4):
        suite = RealSuite(B.EvalConfig(benchmark="unseen", datasets=[f"instructpix2pix={tmp_path / 'ip2p'}"],
                                       limit=3, seed=seed))  # fmt: skip
        items = suite.items(0)
        _, src = suite.examples(0, 0, 3)
        assert all(s["key"] != str(i) and s["split"] == "train" for i, s in enumerate(src))
        assert [it.caption_out for it in items] == ["y"] * 3
        assert suite.specs[0].metrics == ("l1", "l2", "clip_i", "dino", "clip_t", "clip_dir")


def test_generic_input_and_target_dirs(ckpt, pipe, tmp_path):  # noqa: F811
    for k in ("a", "b", "c"):
        _png(tmp_path / "in" / f"{k}.png", _rgb(ord(k), 16, 16))
        _png(tmp_path / "out" / f"{k}.jpg", _rgb(ord(k) + 1, 16, 16))
    cfg = B.EvalConfig(benchmark="unseen", checkpoint=str(ckpt), input_dir=str(tmp_path / "in"),
                       target_dir=str(tmp_path / "out"), instruction="Sharpen it.", rows=["xp"], limit=2)  # fmt: skip
    rep, _ = B.run(cfg, pipe, progress=False)
    t = rep["tasks"]["paired"]
    assert t["n"] == 2 and [s["instruction"] for s in t["samples"]] == ["Sharpen it."] * 2
    assert all(s["example_from"]["xp"]["key"] != k for s, k in zip(t["samples"], "ab", strict=True))
    assert rep["datasets"][0]["name"] == "paired" and rep["datasets"][0]["example_split"] == "test"


def test_magicbrush_edit_metrics(ckpt, pipe, tmp_path):  # noqa: F811
    from test_data_real import _magicbrush

    mb = _magicbrush(tmp_path / "mb")
    cfg = B.EvalConfig(benchmark="unseen", checkpoint=str(ckpt), datasets=[f"magicbrush={mb}"], rows=["xp"])
    rep, _ = B.run(cfg, pipe, progress=False)
    t = rep["tasks"]["magicbrush"]
    assert t["n"] == 1 and t["samples"][0]["instruction"] == "make it blue"  # the dev split
    assert t["samples"][0]["example_from"]["xp"]["split"] == "train"
    want = M.l1(_rgb(500, 16, 16), _rgb(502, 16, 16))  # copy baseline: source vs target of dev row 0
    assert t["results"]["copy"]["l1"] == pytest.approx(want)
    assert isinstance(t["results"]["xp"]["l2"], float)
    assert t["results"]["xp"]["clip_i"] == "unavailable: no weights"

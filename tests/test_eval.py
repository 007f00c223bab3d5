"""Benchmarks, reports and the ``xprompt eval`` command on a tiny random checkpoint (GridTokenizer, own BPE)."""

import json

import numpy as np
import pytest
import torch

from xprompt.cli import main
from xprompt.eval import benchmarks as B
from xprompt.eval import metrics as M
from xprompt.eval import rows as eval_rows
from xprompt.eval.controls import copy_vq_gap, example_sensitivity, mean_gap_closed
from xprompt.eval.eval_config import TASKS
from xprompt.eval.items import suite_items
from xprompt.eval.report import render_markdown, write_report
from xprompt.eval.scoring import Scorers, reduce_scores, sample_scores


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from xprompt.checkpoint import save_pretrained
    from xprompt.model import XPromptModel
    from xprompt.model_config import ModelConfig
    from xprompt.tokenizer.text import TextTokenizer
    from xprompt.tokenizer.vocab import Vocabulary
    from xprompt.train.tasks import all_tasks

    d = tmp_path_factory.mktemp("eval_ck")
    texts = [i for t in all_tasks().values() for i in t.instructions] * 3
    tok = TextTokenizer.train(texts, vocab_size=300)
    tok.save(d / "bpe.json")
    vocab = Vocabulary.build(text_size=max(300, tok.vocab_size), num_image_codes=512, num_xp=4, max_grid=16)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=vocab.size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64)
    model = XPromptModel(cfg).eval()
    extra = {"tokenizers": {"vq": "grid:8", "bpe": str(d / "bpe.json")}, "image_size": 64}
    return save_pretrained(d / "ck", model, vocab, extra=extra)


@pytest.fixture(scope="module")
def pipe(ckpt):
    from xprompt.pipeline import XPrompt

    torch.set_num_threads(1)
    return XPrompt.from_pretrained(ckpt)


def _run(ckpt, pipe, **kw):
    cfg = B.EvalConfig(checkpoint=str(ckpt), **kw)
    return B.run(cfg, pipe, progress=False)


def test_unseen_report_structure_baselines_and_determinism(ckpt, pipe, tmp_path):
    tasks = ["derain", "add_object", "depth_reserved", "inpainting"]
    rep, vis = _run(ckpt, pipe, benchmark="unseen", limit=2, tasks=tasks)
    assert rep["rows"] == ["none", "full", "xp", "wrong", "copy", "vqcopy", "vq"]
    assert list(rep["tasks"]) == tasks
    for t in tasks:
        res = rep["tasks"][t]["results"]
        assert set(res) == set(rep["rows"])
        for row in rep["rows"]:
            for m in rep["tasks"][t]["metrics"]:
                v = res[row][m]
                assert isinstance(v, float) or str(v).startswith("unavailable:"), (t, row, m, v)
    # the copy baseline is exactly the metric of the query against the ground truth
    items = suite_items("derain", 2, 64, 0)
    want = np.mean([M.psnr(it.query, it.target) for it in items])
    assert rep["tasks"]["derain"]["results"]["copy"]["psnr"] == pytest.approx(want)
    assert rep["tasks"]["derain"]["results"]["copy"]["closer"] == 0.0
    # weights-free run: CLIP and LPIPS say so, they are not numbers
    assert rep["tasks"]["add_object"]["results"]["xp"]["clip_dir"] == "unavailable: no weights"
    assert rep["tasks"]["inpainting"]["results"]["xp"]["lpips"] == "unavailable: no weights"
    # deterministic for a fixed seed
    rep2, _ = _run(ckpt, pipe, benchmark="unseen", limit=2, tasks=tasks)
    assert json.dumps(rep["tasks"]) == json.dumps(rep2["tasks"])
    # files
    out = write_report(tmp_path / "rep", rep, vis)
    for f in ("report.json", "report.md", "settings.png", "grids/derain.png", "grids/inpainting.png"):
        assert (out / f).is_file(), f
    md = (out / "report.md").read_text()
    assert "Copy baseline" in md and "In-context w/ XP" in md and "| Setting |" in md
    assert json.loads((out / "report.json").read_text())["benchmark"] == "unseen"
    assert md == render_markdown(json.loads((out / "report.json").read_text()))
    from PIL import Image

    g = np.asarray(Image.open(out / "grids" / "derain.png"))
    assert g.shape[1] == 128 * (
        2 + 1 + 6 + 1
    )  # example pair, query, none/full/xp/wrong/vqcopy/vq, ground truth


def test_seen_miou_and_normals(ckpt, pipe):
    rep, _ = _run(
        ckpt, pipe, benchmark="seen", limit=1, tasks=["segmentation", "normals"], rows=["none", "xp"]
    )
    seg = rep["tasks"]["segmentation"]["results"]
    assert 0.0 <= seg["xp"]["miou"] <= 100.0 and seg["vq"]["miou"] > seg["xp"]["miou"] - 100
    assert 0.0 <= rep["tasks"]["normals"]["results"]["xp"]["angle"] <= 180.0


def test_t2i_rows_and_ceiling(ckpt, pipe):
    rep, vis = _run(ckpt, pipe, benchmark="t2i", limit=2)
    res = rep["tasks"]["text_to_image"]["results"]
    assert rep["rows"] == ["t2i", "gt", "vq"] and not rep["greedy"]
    assert res["gt"]["overall"] >= 0.5  # the detector reads the ground-truth renders
    assert 0.0 <= res["t2i"]["overall"] <= 1.0
    assert isinstance(vis["text_to_image"][0].query, str)


def _magicbrush_dir(path, columns=("source_img", "target_img", "instruction"), n=2):
    from datasets import Dataset, Features, Image, Value
    from PIL import Image as PI

    rng = np.random.default_rng(0)
    img = lambda: PI.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    data = {"source_img": [img() for _ in range(n)], "target_img": [img() for _ in range(n)],
            "instruction": ["make it red", "remove the dog"], "output_caption": ["a red thing", "no dog"]}  # fmt: skip
    feats = {"source_img": Image(), "target_img": Image(), "instruction": Value("string"),
             "output_caption": Value("string")}  # fmt: skip
    keep = [c for c in data if c in columns or c == "output_caption"]
    Dataset.from_dict(
        {c: data[c] for c in keep}, features=Features({c: feats[c] for c in keep})
    ).save_to_disk(path)
    return path


def test_raie_with_magicbrush_and_a_store(ckpt, pipe, tmp_path):
    from xprompt.retrieval.store import InstructionStore

    rng = np.random.default_rng(1)
    pairs = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(4)]
    store = InstructionStore.build(["make the circle red", "remove the square"], pairs[:2], pairs[2:])
    store.save(tmp_path / "store")
    mb = _magicbrush_dir(tmp_path / "mb")
    rep, _ = _run(ckpt, pipe, benchmark="raie", limit=2, magicbrush=str(mb), store=str(tmp_path / "store"))
    t = rep["tasks"]["magicbrush"]
    assert rep["rows"] == ["text", "raie", "copy", "vq"]
    assert t["samples"][0]["retrieved"]["instruction"] == "make the circle red"
    assert isinstance(t["results"]["raie"]["l1"], float) and t["results"]["raie"]["clip_i"].startswith(
        "unavailable"
    )
    from xprompt.eval.report import render_markdown
    from xprompt.retrieval.encoders import DEFAULT_ENCODER

    rt = rep["retrieval"]  # which store and encoder retrieved the examples is on record
    assert rt["store"] == str(tmp_path / "store") and rt["entries"] == 2 and rt["encoder"] == DEFAULT_ENCODER
    assert f"encoder `{DEFAULT_ENCODER}`" in render_markdown(rep)


def test_cli_errors_exit_2(ckpt, tmp_path, capsys):
    out = str(tmp_path / "o")
    with pytest.raises(SystemExit) as e:  # each benchmark is a subcommand: argparse names the choices
        main(["eval", "nope", "--checkpoint", str(ckpt), "--out", out])
    assert e.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    (tmp_path / "notck").mkdir()
    assert main(["eval", "unseen", "--checkpoint", str(tmp_path / "notck"), "--out", out]) == 2
    assert "is not a model checkpoint" in capsys.readouterr().err
    (tmp_path / "vqlike").mkdir()
    (tmp_path / "vqlike" / "config.json").write_text('{"codebook_size": 1024}')
    assert main(["eval", "unseen", "--checkpoint", str(tmp_path / "vqlike"), "--out", out]) == 2
    assert "no meta.json" in capsys.readouterr().err
    assert main(["eval", "unseen", "--checkpoint", str(tmp_path / "missing"), "--out", out]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    mb = _magicbrush_dir(tmp_path / "mb_bad", columns=("source_img", "instruction"))
    args = [
        "eval",
        "raie",
        "--checkpoint",
        str(ckpt),
        "--out",
        out,
        "--magicbrush",
        str(mb),
        "--rows",
        "text",
    ]
    assert main(args) == 2
    assert "lacks column(s) ['target_img']" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["eval", "unseen", "--checkpoint", str(ckpt), "--out", str(tmp_path / "full")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["eval", "unseen", "--checkpoint", str(ckpt), "--out", out, "--rows", "raie"]) == 2
    assert "do not apply" in capsys.readouterr().err


def test_cli_runs_and_writes(ckpt, tmp_path, capsys):
    out = tmp_path / "rep"
    args = ["eval", "unseen", "--checkpoint", str(ckpt), "--out", str(out), "--limit", "1", "--tasks",
            "derain,colorization", "--quiet"]  # fmt: skip
    assert main(args) == 0
    rep = json.loads((out / "report.json").read_text())
    assert list(rep["tasks"]) == ["derain", "colorization"] and rep["config"]["limit"] == 1
    assert main(args) == 2  # exists now
    capsys.readouterr()
    assert main(args + ["--overwrite", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)  # --json: one JSON object on stdout, nothing else
    assert rec["output"] == str(out) and list(rec["report"]["tasks"]) == ["derain", "colorization"]


def test_gap_closed_and_compare_table(ckpt, tmp_path, capsys):
    from xprompt.eval.report import compare_markdown, gap_closed

    assert gap_closed(10.0, 15.0, 20.0) == pytest.approx(0.5)
    assert gap_closed(0.8, 0.5, 0.4) == pytest.approx(0.75)  # lower-is-better metrics work the same way
    assert gap_closed(1.0, 2.0, 1.0) is None and gap_closed("unavailable: no weights", 1.0, 2.0) is None

    def rep(v):
        return {"rows": ["none", "xp"], "tasks": {"derain": {"label": "Derain", "metrics": ["psnr", "closer"],
                "results": {"none": {"psnr": v, "closer": 0.1}, "xp": {"psnr": v + 4, "closer": 0.2}}}}}  # fmt: skip

    a, full = rep(10.0), rep(18.0)
    md = compare_markdown([("No context", a, "none"), ("In-context", a, "xp"), ("Full", full, "none")],
                          gap=("No context", "Full"))  # fmt: skip
    assert "| gap closed by In-context | 50 % |" in md and "closer" not in md.lower()
    for name, r in (("a", a), ("full", full)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(r))
    args = ["eval", "compare", "--out", str(tmp_path / "res.md"), "--gap", "none,full", "--inputs",
            f"none={tmp_path / 'a'}:none", f"xp={tmp_path / 'a'}:xp", f"full={tmp_path / 'full'}"]  # fmt: skip
    assert main(args) == 0 and "50 %" in (tmp_path / "res.md").read_text()
    assert main(args[:-1] + [f"full={tmp_path / 'full'}:zz"]) == 2
    assert "not 'zz'" in capsys.readouterr().err


def test_sample_scores_of_the_ground_truth_are_perfect():
    """No model: scoring the ground truth itself must give each metric's best value (and the detector agrees)."""
    specs = {s.task: s for b in ("unseen", "seen", "raie") for s in TASKS[b]}
    sc = Scorers()
    for task, check in {
        "derain": lambda r: (
            r["psnr"] == M.PSNR_CAP and r["ssim"] == pytest.approx(1.0) and r["closer"] == 1.0
        ),
        "depth_reserved": lambda r: r["rmse"] < 0.002,
        "segmentation": lambda r: True,
        "normals": lambda r: r["angle"] < 1.0,
        "add_object": lambda r: r["success"] == 1.0 and r["clip_dir"] == M.NO_WEIGHTS,
        "recolor": lambda r: r["success"] == 1.0 and r["l1"] == 0.0,
        "inpainting": lambda r: r["mse"] == 0.0,
    }.items():
        for it in suite_items(task, 2, 64, 5):
            r = sample_scores(specs[task], it, it.target, sc)
            assert check(r), (task, r)
            if task == "segmentation":
                assert reduce_scores("miou", [r["miou"]]) == pytest.approx(100.0)


# ---------------------------------------------------------------------- controls and references (issue 13)
def test_seen_covers_the_trained_families_and_no_held_out_task():
    from xprompt.train.heldout import excluded_tasks, split_tasks

    seen = [s.task for s in TASKS["seen"]]
    assert not set(seen) & set(excluded_tasks("train"))
    assert set(seen) <= set(split_tasks("train"))
    for t in (
        "invert",
        "channel_swap",
        "palette_map",
        "posterize",
        "sepia",
        "flip_rotate",
        "recolor",
        "move",
        "resize",
        "replace_background",
    ):
        assert t in seen, t


def test_wrong_rows_use_another_pair_with_the_same_query(ckpt, pipe, monkeypatch):
    calls = []
    real = eval_rows.generate_batch

    def spy(p, items, mode, examples, **kw):
        calls.append((mode, [it.query for it in items], list(examples)))
        return real(p, items, mode, examples, **kw)

    monkeypatch.setattr(eval_rows, "generate_batch", spy)
    tasks = ["invert", "channel_swap"]
    rep, _ = _run(ckpt, pipe, benchmark="seen", limit=2, tasks=tasks, rows=["xp", "wrong", "wrong-inst", "identity"],
                  batch_size=2)  # fmt: skip
    assert rep["rows"] == ["xp", "wrong", "wrong-inst", "identity", "copy", "vqcopy", "vq"]
    assert len(calls) == 2 * 4  # 2 tasks x 4 rows, one batch each
    names = [s.task for s in TASKS["seen"]]
    for ti, task in enumerate(tasks):
        items = suite_items(task, 3, 64, 0)
        (m_xp, q_xp, ex_xp), (m_w, q_w, ex_w), (m_wi, q_wi, ex_wi), (m_id, q_id, ex_id) = calls[
            4 * ti : 4 * ti + 4
        ]
        assert m_xp == m_w == m_wi == m_id == "xp"  # controls run in the example mode, like the xp row
        other = suite_items(names[names.index(task) + 1], 2, 64, 0)
        for i in range(2):
            for q in (q_w[i], q_wi[i]):
                assert np.array_equal(q, q_xp[i]) and np.array_equal(q, items[i].query)  # same query
            assert all(
                np.array_equal(a, b) for a, b in zip(ex_xp[i], items[i].example, strict=True)
            )  # the right pair
            assert all(
                np.array_equal(a, b) for a, b in zip(ex_w[i], other[i].example, strict=True)
            )  # next task's pair
            assert all(
                np.array_equal(a, b) for a, b in zip(ex_wi[i], items[i + 1].example, strict=True)
            )  # next instance
            assert not np.array_equal(ex_w[i][1], ex_xp[i][1]) and not np.array_equal(
                ex_wi[i][1], ex_xp[i][1]
            )
            assert np.array_equal(q_id[i], q_xp[i]) and np.array_equal(ex_id[i][0], ex_xp[i][0])  # only the
            assert np.array_equal(ex_id[i][1], ex_xp[i][0])  # example's output changes: it is its input
        s0 = rep["tasks"][task]["samples"][1]["example_from"]
        assert s0 == {"xp": {"task": task, "index": 1}, "wrong": {"task": names[names.index(task) + 1], "index": 1},
                      "wrong-inst": {"task": task, "index": 2},
                      "identity": {"task": task, "index": 1, "output": "input"}}  # fmt: skip
        sens = rep["tasks"][task]["sensitivity"]
        assert set(sens) == {"wrong", "wrong-inst", "identity"}
        for sv in sens.values():
            assert sv["reference"] == "xp" and sv["pixel_mad"] >= 0 and 0 <= sv["identical"] <= 1
            assert sv["logit_max_abs_diff"] > 0 and sv["logit_std"] > 0  # a random model reads its context


def test_vqcopy_is_the_query_through_the_tokenizer(ckpt, pipe):
    rep, vis = _run(ckpt, pipe, benchmark="unseen", limit=2, tasks=["derain"], rows=["xp"])
    assert rep["rows"] == ["xp", "copy", "vqcopy", "vq"]
    items = suite_items("derain", 2, 64, 0)
    vqc = [pipe.decode(pipe.encode(it.query)) for it in items]
    assert np.array_equal(vis["derain"][0].outputs["vqcopy"], vqc[0])
    want = np.mean([M.psnr(v, it.target) for v, it in zip(vqc, items, strict=True)])
    assert rep["tasks"]["derain"]["results"]["vqcopy"]["psnr"] == pytest.approx(want)
    assert "sensitivity" not in rep["tasks"]["derain"]  # no control row asked for
    assert "VQ-copy" in render_markdown(rep)


def test_example_sensitivity_on_given_outputs():
    a = [np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 7, np.uint8)]
    same = example_sensitivity(a, [x.copy() for x in a], np.ones((2, 5)), np.ones((2, 5)))
    assert same["pixel_mad"] == 0.0 and same["identical"] == 1.0 and same["logit_max_abs_diff"] == 0.0
    b = [a[0], np.full((4, 4, 3), 10, np.uint8)]
    lr = np.array([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    lw = np.array([[0.0, 1.5, 2.0], [0.0, 0.0, -1.0]])
    d = example_sensitivity(a, b, lr, lw)
    assert d["pixel_mad"] == pytest.approx(1.5) and d["identical"] == 0.5
    assert d["logit_max_abs_diff"] == pytest.approx(0.75) and d["logit_max_abs_diff_max"] == pytest.approx(
        1.0
    )
    assert d["logit_std"] == pytest.approx(np.std([0.0, 1.0, 2.0]) / 2)


def test_gap_closed_over_copy_and_vq_on_a_hand_made_report():
    def task(metric, copy, vq, xp, wrong):
        return {"label": metric, "metrics": [metric], "n": 1, "results": {
            "xp": {metric: xp}, "wrong": {metric: wrong}, "copy": {metric: copy}, "vqcopy": {metric: copy},
            "vq": {metric: vq}}}  # fmt: skip

    rep = {"rows": ["xp", "wrong", "copy", "vqcopy", "vq"], "tasks": {
        "a": task("psnr", 20.0, 30.0, 26.0, 18.0),  # xp closes 60 %, wrong -20 %
        "b": task("rmse", 0.4, 0.2, 0.3, 0.5),  # lower is better: xp closes 50 %, wrong -50 %
        "c": task("psnr", 30.0, 25.0, 28.0, 28.0),  # VQ ceiling below copy: no gap to close
    }}  # fmt: skip
    for t in rep["tasks"].values():
        t["gap_closed"] = copy_vq_gap(t)
    ga, gb, gc = (rep["tasks"][k]["gap_closed"] for k in "abc")
    assert ga["metric"] == "psnr" and ga["vq_beats_copy"] and ga["rows"]["xp"] == pytest.approx(0.6)
    assert (
        ga["rows"]["wrong"] == pytest.approx(-0.2) and ga["rows"]["copy"] == 0.0 and ga["rows"]["vq"] == 1.0
    )
    assert gb["rows"]["xp"] == pytest.approx(0.5) and gb["rows"]["wrong"] == pytest.approx(-0.5)
    assert not gc["vq_beats_copy"] and gc["rows"]["xp"] is None
    mg = mean_gap_closed(rep)
    assert mg["tasks"] == ["a", "b"] and mg["mean"]["xp"] == pytest.approx(0.55)
    assert mg["mean"]["wrong"] == pytest.approx(-0.35) and mg["beats_copy"] == {
        "xp": 2, "wrong": 0, "copy": 0, "vqcopy": 0, "vq": 2}  # fmt: skip
    # VQ-copy = copy here: xp matches it on a (26 >= 20) and b (0.3 <= 0.4), not c (28 < 30); wrong on none
    assert mg["n_tasks"] == 3 and mg["matches_vqcopy"] == {"xp": 2, "wrong": 0}
    assert mg["xp_beats_control"] == {"wrong": 2}  # a and b; on c xp and wrong tie (no win)
    rep["gap_closed"] = mg
    rep.update(benchmark="seen", config={"limit": 1, "seed": 0}, checkpoint={"path": "x"}, size=64, greedy=True,
               row_labels={r: r for r in rep["rows"]})  # fmt: skip
    md = render_markdown(rep)
    assert mg["median"]["xp"] == pytest.approx(0.55)
    assert "| 60 % |" in md and "`xp` 55 % (median 55 %, beats copy on 2/2)" in md and "n/a" in md


def test_controls_follow_the_example_mode(ckpt, pipe):
    """With --example-mode full the controls run in full mode and are compared with the full row."""
    rep, _ = _run(
        ckpt, pipe, benchmark="unseen", limit=1, tasks=["derain"], rows=["full", "wrong"], train_mode="full"
    )
    sv = rep["tasks"]["derain"]["sensitivity"]["wrong"]
    assert sv["reference"] == "full" and sv["logit_std"] > 0
    assert rep["tasks"]["derain"]["samples"][0]["example_from"]["wrong"]["task"] == "add_object"

"""The training campaign's pieces: loss on the examples' outputs, contrast groups (one query, two task
instances), and the in-context probe (right / wrong / no example, changed tokens)."""

from __future__ import annotations

import numpy as np
import pytest
from gen_helpers import CharTok, tiny_model, tiny_vocab

from xprompt.sequence import Seg, build_sample, convert_mode, with_example_loss
from xprompt.train.pairing import draw_contrast_group
from xprompt.train.probe import changed_targets, donors, probe, swap_example
from xprompt.train.tasks import SAME_AS_EXAMPLE, get_task


@pytest.fixture(scope="module")
def vocab():
    return tiny_vocab()


def _img(v):
    return np.full((2, 2), v)


def _ends(vocab):
    return vocab.special("<eoi>"), vocab.special("<eot>")


def test_example_loss_marks_exactly_each_example_output(vocab):
    kw = {
        "mode": "xp",
        "instruction": "ab",
        "examples": [(_img(1), _img(2)), (_img(3), _img(4))],
        "query": _img(5),
    }
    s = build_sample(vocab, CharTok(), answer=_img(6), **kw)
    ref = build_sample(vocab, CharTok(), answer=_img(6), loss_on_examples=True, **kw)
    got = with_example_loss(s, *_ends(vocab))
    assert got.loss.tolist() == ref.loss.tolist()  # the builder's own flag is the definition
    assert got.loss.sum() > s.loss.sum() and (got.ids == s.ids).all() and (got.segs == s.segs).all()
    assert not got.loss[s.segs == Seg.PREFIX].any() and not got.loss[s.segs == Seg.XP].any()


def test_example_loss_text_outputs_and_difference_examples(vocab):
    tok = CharTok()
    cases = [
        [(_img(1), "ab"), (_img(2), "cd")],  # captions: image -> text
        [("ab", _img(1)), ("cd", _img(2))],  # text -> image
        [([_img(1), _img(2)], "ab"), ([_img(3), _img(4)], "cd")],  # difference: two images -> text
    ]
    for examples in cases:
        s = build_sample(vocab, tok, mode="xp", examples=examples, query=_img(5), answer="x")
        ref = build_sample(
            vocab, tok, mode="xp", examples=examples, query=_img(5), answer="x", loss_on_examples=True
        )
        assert with_example_loss(s, *_ends(vocab)).loss.tolist() == ref.loss.tolist(), examples


def test_example_loss_is_identity_without_examples(vocab):
    s = build_sample(vocab, CharTok(), mode="none", query=_img(5), answer=_img(6))
    assert with_example_loss(s, *_ends(vocab)).loss.tolist() == s.loss.tolist()


def test_contrast_group_shares_the_query_and_differs_in_instance():
    task = get_task("palette_map")
    g = draw_contrast_group(task, np.random.default_rng(0), 32, "train", first_index=10)
    assert g is not None and [s.index for s in g] == [10, 11]
    a, b = g
    assert np.array_equal(a.query.inputs[0], b.query.inputs[0])  # one query image
    assert not np.array_equal(a.query.output, b.query.output)  # two answers
    assert a.params != b.params
    assert {a.instruction, b.instruction} <= {SAME_AS_EXAMPLE, ""}  # only the example can tell them apart
    assert a.true_instruction and b.true_instruction
    # the examples show the sample's own instance: applying it to the example input gives the example output
    assert not np.array_equal(a.example.output, b.example.output)


def test_contrast_group_refuses_tasks_without_instances():
    assert draw_contrast_group(get_task("invert"), np.random.default_rng(0), 32, "train") is None
    assert draw_contrast_group(get_task("caption"), np.random.default_rng(0), 32, "train") is None


def test_contrast_build_is_deterministic_and_zero_contrast_changes_nothing():
    from xprompt.train.build import BuildConfig, draw_groups

    base = BuildConfig(n=40, size=32, seed=3)
    c = BuildConfig(n=40, size=32, seed=3, mix={"contrast": 1.0, "instruction_drop": 0.3})
    z = BuildConfig(n=40, size=32, seed=3, mix={"contrast": 0.0})
    key = lambda ss: [
        (
            s.task,
            s.instruction,
            s.query.inputs[0].tobytes() if hasattr(s.query.inputs[0], "tobytes") else s.query.inputs[0],
        )
        for s in ss
    ]
    assert key(draw_groups(base, 0, 20)) == key(draw_groups(z, 0, 20))
    one, two = draw_groups(c, 0, 20), draw_groups(c, 0, 20)
    assert key(one) == key(two)
    shared = [
        g
        for g in range(20)
        if one[2 * g].kind == "i2i"
        and np.array_equal(one[2 * g].query.inputs[0], one[2 * g + 1].query.inputs[0])
        and one[2 * g].params != one[2 * g + 1].params
    ]
    assert shared  # some groups became contrast pairs


def test_swap_example_keeps_everything_but_the_example(vocab):
    tok = CharTok()
    a = build_sample(
        vocab, tok, mode="xp", instruction="ab", examples=[(_img(1), _img(2))], query=_img(5), answer=_img(6)
    )
    b = build_sample(
        vocab, tok, mode="xp", instruction="cd", examples=[(_img(3), _img(4))], query=_img(7), answer=_img(8)
    )
    w = swap_example(a, b)
    assert (w.ids[w.segs == Seg.IE] == b.ids[b.segs == Seg.IE]).all()
    for seg in (Seg.PREFIX, Seg.XP, Seg.TD):
        assert (w.ids[w.segs == seg] == a.ids[a.segs == seg]).all()
        assert (w.loss[w.segs == seg] == a.loss[a.segs == seg]).all()
    assert not w.loss[w.segs == Seg.IE].any()


def test_changed_targets_exact(vocab):
    q = np.array([[1, 2], [3, 4]])
    ans = np.array([[1, 9], [3, 7]])
    s = build_sample(vocab, CharTok(), mode="xp", examples=[(_img(1), _img(2))], query=q, answer=ans)
    m = changed_targets(s, vocab)
    assert sorted(vocab.ids_to_codes(s.ids[m]).tolist()) == [7, 9]
    same = build_sample(vocab, CharTok(), mode="xp", examples=[(_img(1), _img(2))], query=q, answer=q)
    assert not changed_targets(same, vocab).any()
    other_shape = build_sample(
        vocab, CharTok(), mode="xp", examples=[(_img(1), _img(2))], query=q, answer=np.ones((3, 2), int)
    )
    assert not changed_targets(other_shape, vocab).any()


def test_donors_pick_another_task():
    tasks = ["a", "a", "b", "b", "c", "a"]
    d = donors(tasks, seed=1)
    assert all(tasks[int(j)] != t for j, t in zip(d, tasks, strict=True))
    assert d.tolist() == donors(tasks, seed=1).tolist()


def test_probe_wrong_equals_right_when_examples_are_identical(vocab):
    rng = np.random.default_rng(0)
    model = tiny_model(vocab)
    seqs, tasks = [], []
    for i in range(4):
        q = rng.integers(0, 16, (2, 3))
        seqs.append(
            build_sample(vocab, None, mode="xp", examples=[(_img(1), _img(2))], query=q, answer=(q + 1) % 16)
        )
        tasks.append(f"t{i % 2}")
    r = probe(model, seqs, tasks, ["f"] * 4, vocab, batch=3)
    m = r.metrics
    assert m["right"]["n_changed"] == m["right"]["n"] == 4 * 6
    assert m["wrong"]["loss"] == pytest.approx(m["right"]["loss"], abs=1e-5)  # same example, other donor
    assert m["none"]["loss"] != pytest.approx(m["right"]["loss"], abs=1e-5)
    assert r.summary()["reads_example"] == pytest.approx(0.0, abs=1e-5)
    # different examples do move a random model's loss
    seqs2 = [convert_mode(s, "xp") for s in seqs]
    seqs2[1] = build_sample(
        vocab, None, mode="xp", examples=[(_img(9), _img(11))], query=_img(3), answer=_img(4)
    )
    r2 = probe(model, seqs2, tasks, ["f"] * 4, vocab, batch=3)
    assert abs(r2.summary()["reads_example"]) > 1e-4


def test_wsd_schedule_exact():
    from xprompt.train.train_config import TrainConfig

    c = TrainConfig(steps=10, warmup_steps=2, schedule="wsd", decay_steps=4, min_lr_ratio=0.2)
    f = [round(c.lr_factor(s), 6) for s in range(10)]
    assert f == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2]
    legs = TrainConfig(steps=6, warmup_steps=1, schedule="wsd", decay_steps=0)
    assert [legs.lr_factor(s) for s in range(6)] == [1.0] * 6  # a leg to be continued: no decay
    with pytest.raises(ValueError):
        TrainConfig(steps=10, warmup_steps=2, schedule="wsd", decay_steps=9)
    with pytest.raises(ValueError):
        TrainConfig(schedule="linear")


def test_code_features_follow_what_codes_look_like():
    from xprompt.tokenizer.loading import GridTokenizer
    from xprompt.train.code_init import code_features, projected_rows

    tok = GridTokenizer(4)  # code = 3-bit levels per channel
    f = code_features(tok)
    assert f.shape == (512, 12)
    assert np.allclose(f[:, :3], f[:, 9:])  # a flat code has one colour in every quadrant
    img = tok.decode(np.array([[[7]]]))[0, 0, 0] / 255.0
    assert np.allclose(f[7, :3], img, atol=1e-6)
    rows = projected_rows(f, 32, 0.02, noise=0.0).numpy()
    d = lambda a, b: np.linalg.norm(rows[a] - rows[b])
    # nearby colours get nearby rows: one level step is closer than the opposite corner of the cube
    assert d(0, 1) < d(0, 511)
    assert rows.std() == pytest.approx(0.02, rel=0.05)


def test_prepare_model_vq_rows_and_init_from(tmp_path):
    from types import SimpleNamespace

    import torch

    from xprompt.checkpoint import save_pretrained
    from xprompt.errors import XPromptError
    from xprompt.train.code_init import prepare_model

    vocab = tiny_vocab()
    m = tiny_model(vocab)
    before = m.embed_tokens.weight.clone()
    meta = {"tokenizers.json": {"image_tokenizer": {"path": "grid:8"}}}
    # grid:8 has 512 codes; the tiny vocabulary 16: the mismatch is refused, nothing half-written
    cfg = SimpleNamespace(init_from="", embed_init="vq", seed=0)
    with pytest.raises(ValueError, match="512 code features"):
        prepare_model(m, cfg, vocab, meta)
    assert torch.equal(m.embed_tokens.weight, before)
    with pytest.raises(XPromptError, match="names none"):
        prepare_model(m, cfg, vocab, {})
    # init_from: the exact weights of an exported model
    src = tiny_model(vocab, seed=5)
    save_pretrained(tmp_path / "m", src, vocab)
    done = prepare_model(
        m, SimpleNamespace(init_from=str(tmp_path / "m"), embed_init="random", seed=0), vocab, {}
    )
    assert "weights of" in done
    for (k, a), b in zip(m.state_dict().items(), src.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    other = tiny_model(vocab, rope_theta=500.0)
    with pytest.raises(XPromptError, match="model config differs"):
        prepare_model(
            other, SimpleNamespace(init_from=str(tmp_path / "m"), embed_init="random", seed=0), vocab, {}
        )


def test_mode_mix_lays_each_sample_out_in_its_own_mode_deterministically(tmp_path):
    from test_packing import make_dataset

    from xprompt.train.packing import load_training_data

    make_dataset(tmp_path / "d", n=40)
    td = load_training_data(tmp_path / "d", val_fraction=0.25, mode_mix={"xp": 1, "full": 1}, seed=3)
    src = td.train
    assert sorted(set(src.modes)) == ["full", "xp"]
    seqs = src.get(np.arange(len(src)))
    for s, m, n in zip(seqs, src.modes, src.lengths, strict=True):
        assert len(s) == n  # the plan's lengths are the mixed layouts' lengths
        assert (s.segs == Seg.XP).any() == (m == "xp") and (s.segs == Seg.IE).any()
    again = load_training_data(tmp_path / "d", val_fraction=0.25, mode_mix={"xp": 1, "full": 1}, seed=3)
    assert again.train.modes == src.modes
    assert td.val.modes is None and all((s.segs == Seg.XP).any() for s in td.val.get(np.arange(len(td.val))))
    with pytest.raises(ValueError, match="mode_mix"):
        from xprompt.train.train_config import TrainConfig

        TrainConfig(mode_mix={"xp": 0, "full": 0})


def test_trainer_time_budget_probe_and_init_from(tmp_path):
    import json
    import os

    from test_packing import make_dataset
    from test_trainer import cfg

    from xprompt.train.trainer import train

    saved = dict(os.environ)
    try:
        data = make_dataset(tmp_path / "d", n=80)
        a = train(cfg(steps=8, val_every=8, probe_samples=4), data, tmp_path / "a", progress=False)
        recs = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
        probes = [r for r in recs if r["kind"] == "probe"]
        assert len(probes) == 1 and {"reads_example", "right_changed_loss", "none_loss"} <= set(probes[0])
        # a tiny budget stops cleanly after the first step, with a checkpoint and an export
        b = train(cfg(steps=8, max_minutes=1e-6), data, tmp_path / "b", progress=False)
        assert (
            b["steps"] == 1
            and not b["interrupted"]
            and (tmp_path / "b" / "model" / "model.safetensors").is_file()
        )
        b_recs = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in b_recs if r["kind"] == "val"] == [1]  # a leg ends measured
        assert any(r.get("event") == "time budget reached" for r in b_recs)
        # the next leg starts from a's weights: its first loss is a's level, not a fresh model's
        c = train(cfg(steps=1, init_from=str(tmp_path / "a" / "model")), data, tmp_path / "c", progress=False)
        first = lambda run: next(
            json.loads(x)["loss"]
            for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()
            if json.loads(x)["kind"] == "train"
        )
        assert c["steps"] == 1 and first("c") < first("b") - 0.05
        assert a["last_train_loss"] < first("b")
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_cli_eval_probe(tmp_path, capsys):
    import json

    from gen_helpers import tiny_checkpoint
    from test_packing import make_dataset

    from xprompt.checkpoint import load_pretrained
    from xprompt.cli import main

    ck = tiny_checkpoint(tmp_path / "ck")
    _, ck_vocab = load_pretrained(ck)
    data = make_dataset(tmp_path / "d", n=12, vocab=ck_vocab)
    out = tmp_path / "probe.json"
    assert (
        main(
            ["eval", "probe", "--checkpoint", str(ck), "--data", str(data), "--out", str(out), "--limit", "6"]
        )
        == 0
    )
    rep = json.loads(out.read_text())
    assert rep["samples"] == 6 and set(rep["metrics"]) == {"right", "wrong", "none"}
    assert "reads_example" in rep["summary"] and "| all |" in capsys.readouterr().out
    # bad input: one line, exit 2
    assert main(["eval", "probe", "--checkpoint", str(ck), "--out", str(out)]) == 2
    assert "probe needs --data" in capsys.readouterr().err
    other = make_dataset(tmp_path / "o", n=4)  # another vocabulary
    assert main(["eval", "probe", "--checkpoint", str(ck), "--data", str(other), "--out", str(out)]) == 2
    assert "another vocabulary" in capsys.readouterr().err


def _pixels(p):
    return [x.tobytes() if hasattr(x, "tobytes") else x for x in (*p.inputs, p.output)]


def test_multi_example_group_rotates_distinct_pairs_of_one_instance():
    from xprompt.train.pairing import draw_group

    task = get_task("palette_map")
    one = draw_group(task, np.random.default_rng(5), 32, "train", k=2)
    three = draw_group(task, np.random.default_rng(5), 32, "train", k=2, n_examples=3)
    # the first pairs are drawn as before; 4 pairs for queries 0, 1 and examples (1, 2, 3), (2, 3, 0)
    assert _pixels(one[0].query) == _pixels(three[0].query) and _pixels(one[1].query) == _pixels(
        three[1].query
    )
    assert not one[0].more_examples and len(three[0].more_examples) == 2
    pairs = [three[0].query, three[1].query, *three[0].more_examples[1:], three[0].more_examples[0]]
    assert len({tuple(_pixels(p)) for p in pairs}) == 4
    for j, s in enumerate(three):
        shown = [s.example, *s.more_examples]
        assert all(p is not s.query for p in shown) and s.params == three[0].params
        assert shown[0] is three[(j + 1) % 2].query or j == 1
    with pytest.raises(ValueError, match="n_examples"):
        draw_group(task, np.random.default_rng(5), 32, "train", n_examples=0)


def test_multi_example_build_lays_out_every_example_and_leaves_other_groups_unchanged(tmp_path):
    from xprompt.paths import shipped
    from xprompt.train.build import BuildConfig, build_dataset, draw_groups, load_built

    base = BuildConfig(n=40, size=32, seed=3)
    multi = BuildConfig(n=40, size=32, seed=3, mix={"multi_example": 0.5})
    a, b = draw_groups(base, 0, 20), draw_groups(multi, 0, 20)
    n_more = [len(s.more_examples) for s in b]
    assert set(n_more) == {0, 1, 2}  # 1, 2 or 3 examples
    for s, t in zip(a, b, strict=True):  # stream 5 decides: one-example groups are exactly as before
        assert (s.task, s.instruction, _pixels(s.query)) == (t.task, t.instruction, _pixels(t.query))
        assert t.more_examples or _pixels(s.example) == _pixels(t.example)
    cfg = BuildConfig(n=8, size=32, seed=3, chunk=8, mix={"multi_example": 1.0}, tasks=["palette_map"])
    card = build_dataset(cfg, tmp_path / "ds", tokenizer="grid:8", bpe=str(shipped("bpe")), progress=False)
    assert card["multi_example_samples"] == 8
    ds, vocab, _ = load_built(tmp_path / "ds")
    boi = vocab.special("<boi>")
    for row in ds:
        ids, segs = np.asarray(row["input_ids"]), np.asarray(row["segs"])
        assert int(((ids == boi) & (segs == Seg.IE)).sum()) in (4, 6)  # 2 or 3 (input, output) pairs


def test_ramp_palette_lut_round_trip_and_distance_from_the_reserved_palette():
    from xprompt.train import scenes
    from xprompt.train.tasks_dense import (
        RAMP_MIN_RESERVED_DISTANCE,
        RAMP_MIN_STOP_DISTANCE,
        RESERVED_PALETTE,
        SEEN_PALETTES,
        decode_depth,
        encode_depth,
        palette_lut,
        ramp_stops,
        random_ramp,
    )

    lut = palette_lut("ramp-000000-ff0000-ffffff")
    assert lut[0].tolist() == [0, 0, 0] and lut[255].tolist() == [255, 255, 255]
    assert lut[128].tolist() == [255, 1, 1] and lut[64].tolist() == [128, 0, 0]
    for bad in ("ramp-ff0000", "ramp-ff00-00ff00", "ramp-gg0000-000000"):
        with pytest.raises(ValueError):
            ramp_stops(bad)
    reserved = palette_lut(RESERVED_PALETTE).astype(float)
    nearest_seen = min(
        np.linalg.norm(palette_lut(p).astype(float)[::d] - reserved, axis=1).mean()
        for p in SEEN_PALETTES
        for d in (1, -1)
    )
    assert (
        RAMP_MIN_RESERVED_DISTANCE <= nearest_seen
    )  # no ramp is nearer the held-out palette than a seen one
    depth = scenes.render_maps(scenes.random_scene(np.random.default_rng(4)), 64)["depth"]
    names = [random_ramp(np.random.default_rng(i)) for i in range(30)]
    assert names == [random_ramp(np.random.default_rng(i)) for i in range(30)] and len(set(names)) == 30
    for name in names:
        stops = ramp_stops(name)
        assert len(stops) in (3, 4)
        assert (
            min(np.linalg.norm(a - b) for i, a in enumerate(stops) for b in stops[i + 1 :])
            >= RAMP_MIN_STOP_DISTANCE
        )
        lut = palette_lut(name).astype(float)
        for d in (1, -1):
            assert np.linalg.norm(lut[::d] - reserved, axis=1).mean() >= RAMP_MIN_RESERVED_DISTANCE
        # two neighbouring entries may round to one colour: decoding is then one entry off at most
        assert np.abs(decode_depth(encode_depth(depth, name), name) - depth).max() <= 1.5 / 255 + 1e-6


def test_ramp_palettes_change_only_depth_instances_and_only_the_example_names_them(tmp_path):
    from xprompt.paths import shipped
    from xprompt.train.build import BuildConfig, build_dataset, draw_groups
    from xprompt.train.tasks_dense import RAMP_PREFIX, SEEN_PALETTES, with_ramp_palette

    base = BuildConfig(n=400, size=32, seed=3)
    ramp = BuildConfig(n=400, size=32, seed=3, mix={"ramp_palettes": 0.5})
    a, b = draw_groups(base, 0, 200), draw_groups(ramp, 0, 200)
    n_ramp = 0
    for s, t in zip(a, b, strict=True):  # stream 6 decides: the same tasks, content and other instances
        assert s.task == t.task and (s.query.scene_before, s.example.scene_before) == (
            t.query.scene_before,
            t.example.scene_before,
        )
        if get_task(s.task).base != "depth":
            assert (s.params, s.instruction, _pixels(s.query)) == (t.params, t.instruction, _pixels(t.query))
        elif t.params["palette"].startswith(RAMP_PREFIX):
            n_ramp += 1
            assert "ramp" not in t.true_instruction and not any(
                c in s.true_instruction for c in SEEN_PALETTES[:1]
            )
            assert t.true_instruction == s.true_instruction.replace(s.params["palette"], "custom")
            assert _pixels(s.query) != _pixels(
                t.query
            )  # the depth map (or its input) is in the ramp's colours
        else:
            assert t.params["palette"] in SEEN_PALETTES
    depth_samples = sum(get_task(s.task).base == "depth" for s in a)
    assert depth_samples >= 10 and 0 < n_ramp < depth_samples
    ev = [
        BuildConfig(n=60, size=32, seed=3, split="eval", tasks=["depth"], mix=m)
        for m in ({}, {"ramp_palettes": 1.0})
    ]
    assert [s.params for s in draw_groups(ev[0], 0, 30)] == [
        s.params for s in draw_groups(ev[1], 0, 30)
    ]  # never
    r = np.random.default_rng(1)
    always = lambda task, p: with_ramp_palette(task, p, r, 1.0)
    pair = draw_contrast_group(get_task("depth"), np.random.default_rng(2), 32, "train", remap=always)
    assert pair[0].params["palette"] != pair[1].params["palette"]
    assert all(s.params["palette"].startswith(RAMP_PREFIX) for s in pair)
    assert _pixels(pair[0].query)[0] == _pixels(pair[1].query)[0]  # one query, two ramps
    cfg = BuildConfig(
        n=8, size=32, seed=3, chunk=8, mix={"ramp_palettes": 1.0}, tasks=["depth", "depth_to_image"]
    )
    card = build_dataset(cfg, tmp_path / "ds", tokenizer="grid:8", bpe=str(shipped("bpe")), progress=False)
    assert card["ramp_palette_samples"] == 8 and card["mix"]["ramp_palettes"] == 1.0

"""`xprompt data build` / `data show`: pre-tokenized datasets, reproducibility, eval images, bad input."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from xprompt.cli import main
from xprompt.paths import shipped
from xprompt.sequence import Seg, parse_image, split_items
from xprompt.tokenizer.loading import GridTokenizer, load_text_tokenizer
from xprompt.train.build import (
    BuildConfig,
    build_dataset,
    load_built,
    row_to_sequence,
)
from xprompt.train.pairing import RawSample, raie_pair
from xprompt.train.tasks import Pair

BPE = str(shipped("bpe"))
pytestmark = pytest.mark.skipif(not (shipped("bpe") / "tokenizer.json").exists(), reason="no shipped BPE")


def _build(tmp_path, name="ds", **kw):
    cfg = BuildConfig(**{"n": 12, "size": 64, "seed": 0, "shard_size": 5, "chunk": 4, **kw})
    out = tmp_path / name
    card = build_dataset(cfg, out, tokenizer="grid:8", bpe=BPE, progress=False)
    return out, card


def test_build_columns_and_sequences(tmp_path):
    out, card = _build(tmp_path)
    ds, vocab, card2 = load_built(out)
    assert card == card2 and len(ds) == 12 and card["num_shards"] == 3
    assert sum(card["tasks"].values()) == 12 and "derain" in card["held_out"]
    for col in ("input_ids", "segs", "loss", "task", "family", "seed", "n_tokens", "example_task", "params"):
        assert col in ds.column_names
    assert (out / "vocab.json").exists() and (out / "README.md").exists()
    refs = json.loads((out / "tokenizers.json").read_text())
    assert refs["vocab_fingerprint"] == vocab.fingerprint() and refs["bpe"]["fingerprint"]
    bpe = load_text_tokenizer(BPE)
    for row in ds:
        seq = row_to_sequence(row)
        assert len(seq) == row["n_tokens"]
        assert set(np.unique(seq.segs)) == {Seg.PREFIX, Seg.IE, Seg.XP, Seg.TD}
        assert (seq.segs == Seg.XP).sum() == 16
        assert not seq.loss[seq.segs != Seg.TD].any() and seq.loss.any()
        assert row["task"] not in card["held_out"] and row["example_task"] not in card["held_out"]
        items = split_items(vocab, bpe, seq.ids)
        n_img = sum(not isinstance(x, str) for x in items)
        assert n_img >= 2 and all(x.shape == (8, 8) for x in items if not isinstance(x, str))


def test_reproducible_from_seed(tmp_path):
    a, _ = _build(tmp_path, "a")
    b, _ = _build(tmp_path, "b", chunk=8, shard_size=100)  # chunking and sharding do not matter
    c, _ = _build(tmp_path, "c", seed=1)
    da, db, dc = (load_built(p)[0] for p in (a, b, c))
    assert da["input_ids"] == db["input_ids"] and da["task"] == db["task"]
    assert da["input_ids"] != dc["input_ids"]


def test_eval_split_keeps_raw_images(tmp_path):
    out, card = _build(tmp_path, "ev", split="eval", n=6)
    ds, vocab, _ = load_built(out)
    assert card["held_out"] == []
    grid = GridTokenizer(8)
    for row in ds:
        assert row["true_instruction"]
        target = row["target"]
        if row["target_text"]:
            assert target is None
            continue
        img = np.asarray(target.convert("RGB"))
        assert img.shape == (64, 64, 3)
        # the answer tokens are the encoding of the stored target image
        seq = row_to_sequence(row)
        ans = seq.ids[seq.loss][:-1]  # answer image tokens (without <eos>)
        assert np.array_equal(parse_image(vocab, ans), grid.encode(img[None])[0])


def test_cli_build_show_and_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["data", "build", "--n", "6", "--out", str(out), "--tokenizer", "grid:8", "--bpe", BPE, "--quiet"]
    assert main(args) == 0
    assert main(["data", "show", str(out), "--n", "4", "-o", str(tmp_path / "g.png")]) == 0
    with Image.open(tmp_path / "g.png") as im:
        assert im.size[0] > 200 and im.size[1] > 200
    stamp = (out / "dataset_card.json").read_text()
    # existing dataset without --overwrite: refused, untouched
    assert main(args) == 2
    assert (out / "dataset_card.json").read_text() == stamp
    # --overwrite replaces it
    assert main([*args, "--seed", "4", "--overwrite"]) == 0
    assert json.loads((out / "dataset_card.json").read_text())["seed"] == 4
    # a non-dataset directory is never overwritten
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    base = ["data", "build", "--n", "4", "--tokenizer", "grid:8", "--bpe", BPE, "--quiet"]
    assert main([*base, "--out", str(other), "--overwrite"]) == 2
    assert (other / "keep.txt").read_text() == "precious" and len(list(other.iterdir())) == 1
    # unknown task, size not a multiple of the tokenizer factor, unknown split, held-out task
    assert main([*base, "--out", str(tmp_path / "x1"), "--tasks", "teleport"]) == 2
    assert main([*base, "--out", str(tmp_path / "x2"), "--size", "72", "--tokenizer", "grid:16"]) == 2
    assert main([*base, "--out", str(tmp_path / "x3"), "--split", "nope"]) == 2
    assert main([*base, "--out", str(tmp_path / "x4"), "--tasks", "derain"]) == 2
    assert main([*base, "--out", str(tmp_path / "x5"), "--tokenizer", str(tmp_path / "missing")]) == 2
    bad_mix = tmp_path / "mix.json"
    bad_mix.write_text(json.dumps({"edit": 1.0, "edits": 2.0}))
    assert main([*base, "--out", str(tmp_path / "x6"), "--mix", str(bad_mix)]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'teleport'" in err and "multiple of the image tokenizer factor 16" in err
    assert "unknown config key" in err
    assert not any((tmp_path / f"x{i}").exists() for i in range(1, 7))


class _BagOfWords:
    """A deterministic stand-in text encoder: hashed bag of words, unit norm."""

    def encode(self, texts, progress=False):
        v = np.zeros((len(texts), 64), np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                v[i, hash(w) % 64] += 1
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_raie_pairing_hook():
    img = np.zeros((8, 8, 3), np.uint8)

    def s(i, instr, fam="edit"):
        p = Pair([img + i], img + i + 1)
        return RawSample(i, "recolor", fam, "i2i", instr, instr, {}, Pair([img], img), p)

    samples = [
        s(0, "make the red circle blue"),
        s(1, "make the red circle green"),
        s(2, "move the black square to the top"),
        s(3, "move the black square to the left"),
        s(4, "denoise", fam="lowlevel"),
    ]
    pytest.importorskip("faiss")
    n = raie_pair(samples, _BagOfWords())
    assert n == 4
    assert samples[0].example is samples[1].query and samples[1].example is samples[0].query
    assert samples[2].example is samples[3].query
    assert samples[0].example_instruction == "make the red circle green"
    assert samples[4].example is not samples[0].query  # non-edit samples untouched


def test_show_png_is_valid(tmp_path):
    out, _ = _build(tmp_path, "s", n=4)
    main(["data", "show", str(out), "--n", "2", "-o", str(tmp_path / "s.png"), "--random", "0"])
    data = (tmp_path / "s.png").read_bytes()
    assert Image.open(io.BytesIO(data)).format == "PNG"


def test_show_refuses_a_changed_tokenizer(tmp_path):
    from xprompt.tokenizer.text import TextTokenizer

    bpe = tmp_path / "tokenizer.json"
    bpe.write_bytes((shipped("bpe") / "tokenizer.json").read_bytes())
    out = tmp_path / "d"
    build_dataset(BuildConfig(n=2, chunk=2), out, tokenizer="grid:8", bpe=bpe, progress=False)
    assert main(["data", "show", str(out), "-o", str(tmp_path / "ok.png")]) == 0
    TextTokenizer.train(["a completely different corpus"] * 3, vocab_size=260).save(bpe)
    assert main(["data", "show", str(out), "-o", str(tmp_path / "bad.png")]) == 2
    assert not (tmp_path / "bad.png").exists()


@pytest.mark.slow  # spawns two processes that import torch (~30 s on the shared cores)
def test_worker_processes_give_the_same_dataset(tmp_path):
    a, _ = _build(tmp_path, "one", n=8)
    b, _ = _build(tmp_path, "two", n=8, workers=2)
    da, db = load_built(a)[0], load_built(b)[0]
    assert da["input_ids"] == db["input_ids"] and da["instruction"] == db["instruction"]

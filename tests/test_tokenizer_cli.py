"""`xprompt train tokenizer` / `xprompt train bpe` through xprompt.cli.main: results and one-line errors."""

from __future__ import annotations

import json
import sys

import numpy as np
from PIL import Image

from xprompt.cli import main


def _err_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("xprompt: error: ")
    return err[0]


def test_check_image_bad_inputs(tmp_path, capsys):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((9, 7, 3), np.uint8)).save(good)
    assert main(["train", "tokenizer", "--out", str(tmp_path / "x"), "--check-image", str(good)]) == 0
    assert "ok 7x9" in capsys.readouterr().out

    notimg = tmp_path / "a.png"
    notimg.write_text("hello")
    assert main(["train", "tokenizer", "--out", "x", "--check-image", str(notimg)]) == 2
    assert "not a readable image" in _err_line(capsys)

    data = good.read_bytes()
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(big)
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(big.read_bytes()[:300])
    assert main(["train", "tokenizer", "--out", "x", "--check-image", str(trunc)]) == 2
    assert "truncated" in _err_line(capsys)

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_image_io import _png_header_only

    zero, huge = tmp_path / "zero.png", tmp_path / "huge.png"
    _png_header_only(zero, 0, 0)
    _png_header_only(huge, 50_000, 50_000)
    assert main(["train", "tokenizer", "--out", "x", "--check-image", str(zero)]) == 2
    assert "no pixels (0x0)" in _err_line(capsys)
    assert main(["train", "tokenizer", "--out", "x", "--check-image", str(huge)]) == 2
    assert "too large" in _err_line(capsys)
    assert data  # the good file was untouched


def test_train_tokenizer_tiny(tmp_path, capsys):
    out = tmp_path / "vq"
    argv = [
        "train",
        "tokenizer",
        "--out",
        str(out),
        "--size",
        "16",
        "--factor",
        "4",
        "--codebook-size",
        "16",
        "--code-dim",
        "4",
        "--base-channels",
        "8",
        "--max-channels",
        "16",
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--eval-every",
        "3",
        "--eval-images",
        "4",
        "--quiet",
    ]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["steps"] == 3 and 0 < res["psnr_scenes"] < 100
    from xprompt.tokenizer.vq import VQTokenizer

    tok = VQTokenizer.from_pretrained(out)
    assert tok.factor == 4 and tok.codebook_size == 16
    assert tok.encode(np.zeros((1, 16, 16, 3), np.uint8)).shape == (1, 4, 4)
    # continuing from it works; a mismatching architecture is refused with one line
    assert main(argv[:-1] + ["--init", str(out), "--steps", "1", "--eval-every", "1", "--quiet"]) == 0
    capsys.readouterr()
    bad = [a if a != "16" else "32" for a in argv]  # size/codebook 32: different codebook
    assert main(bad + ["--init", str(out), "--out", str(tmp_path / "vq2")]) == 2
    assert "different VQ config" in _err_line(capsys)


def test_train_tokenizer_bad_args(tmp_path, capsys):
    assert main(["train", "tokenizer", "--out", str(tmp_path / "v"), "--size", "60", "--factor", "8"]) == 2
    assert "multiple of --factor" in _err_line(capsys)
    assert main(["train", "tokenizer", "--out", str(tmp_path / "v"), "--factor", "6", "--size", "60"]) == 2
    assert "power of two" in _err_line(capsys)
    f = tmp_path / "file"
    f.write_text("x")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "other.txt").write_text("x")
    assert main(["train", "tokenizer", "--out", str(tmp_path / "d"), "--steps", "1"]) == 2
    assert "not a VQ checkpoint directory" in _err_line(capsys)


def test_train_bpe_text_files(tmp_path, capsys):
    txt = tmp_path / "t.txt"
    txt.write_text("\n".join(["make the sky blue", "remove the red circle", "add rain to the photo"] * 50))
    out = tmp_path / "bpe" / "tokenizer.json"
    assert (
        main(["train", "bpe", "--out", str(out), "--vocab-size", "300", "--no-corpus", "--text", str(txt)])
        == 0
    )
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["texts"] == 150 and 256 < info["vocab_size"] <= 300
    from xprompt.tokenizer.text import TextTokenizer

    tok = TextTokenizer.load(out)
    assert tok.decode(tok.encode("remove the red circle")) == "remove the red circle"
    assert len(tok.encode("remove the red circle")) < len("remove the red circle")  # merges were learned


def test_train_bpe_errors(tmp_path, capsys):
    assert main(["train", "bpe", "--out", str(tmp_path / "t.json"), "--no-corpus"]) == 2
    assert "needs at least one" in _err_line(capsys)
    assert (
        main(["train", "bpe", "--out", str(tmp_path / "t.json"), "--text", str(tmp_path / "missing.txt")])
        == 2
    )
    assert "file not found" in _err_line(capsys)
    binf = tmp_path / "b.txt"
    binf.write_bytes(b"\xff\xfe\x00\x81")
    assert main(["train", "bpe", "--out", str(tmp_path / "t.json"), "--no-corpus", "--text", str(binf)]) == 2
    assert "UTF-8" in _err_line(capsys)


def test_train_bpe_missing_corpus_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "xprompt.train.corpus", None)  # import raises ModuleNotFoundError
    assert main(["train", "bpe", "--out", str(tmp_path / "t.json")]) == 2
    assert "xprompt.train.corpus" in _err_line(capsys)


def test_train_bpe_on_corpus(tmp_path, capsys, monkeypatch):
    from xprompt.train import corpus

    real = corpus.iter_texts
    monkeypatch.setattr(corpus, "iter_texts", lambda: real(n_scenes=200, n_params=4))
    out = tmp_path / "tok"
    out.mkdir()
    assert main(["train", "bpe", "--out", str(out), "--vocab-size", "512"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["texts"] > 100 and (out / "tokenizer.json").is_file()

"""``xprompt data build --source NAME=PATH``: real training pairs (forward, reversed, difference; RAIE pairing
for edit sets) in the pre-tokenized dataset, and the held-out protocol (held-out sets never reach training)."""

import json

import numpy as np
import pytest
from test_data_build import BPE, _BagOfWords
from test_readers import _mb_features, _png, _rgb

from xprompt.cli import main
from xprompt.errors import XPromptError
from xprompt.sequence import split_items
from xprompt.tokenizer.image_io import fit_image
from xprompt.tokenizer.loading import GridTokenizer, load_text_tokenizer
from xprompt.train.build import BuildConfig, build_dataset, load_built

MB_TRAIN = ["make the sky red", "add a hat to the man", "make the sea red", "turn the dog into a cat"]


def _lol(root):
    for split, sub, stems in (("train", "our485", (1, 2, 3)), ("test", "eval15", (1,))):
        for s in stems:
            _png(root / sub / "low" / f"{s}.png", _rgb(s + 10 * len(split), 32, 48))
            _png(root / sub / "high" / f"{s}.png", _rgb(s + 20 * len(split), 32, 48))
    return root


def _magicbrush(root):
    from datasets import Dataset, DatasetDict
    from PIL import Image

    def rows(instrs, seed):
        n = len(instrs)
        img = lambda i, k: Image.fromarray(_rgb(seed + 10 * i + k, 16, 16))
        return {"img_id": [str(i) for i in range(n)], "turn_index": [1] * n,
                "source_img": [img(i, 0) for i in range(n)], "mask_img": [img(i, 1) for i in range(n)],
                "instruction": instrs, "target_img": [img(i, 2) for i in range(n)]}  # fmt: skip

    DatasetDict({"train": Dataset.from_dict(rows(MB_TRAIN, 0), features=_mb_features()),
                 "dev": Dataset.from_dict(rows(["make it blue"], 500), features=_mb_features())}
                ).save_to_disk(str(root))  # fmt: skip
    return root


def _codes(img):
    return GridTokenizer(8).encode(fit_image(img, 32)[None])[0]


def _build(tmp_path, name, **kw):
    cfg = BuildConfig(
        **{"n": 0, "size": 32, "seed": 0, "split": "full", "mix": {"instruction_drop": 0.0}, **kw}
    )
    return build_dataset(
        cfg, tmp_path / name, tokenizer="grid:8", bpe=BPE, progress=False, encoder=_BagOfWords()
    )


def test_build_with_lol_and_magicbrush(tmp_path):
    lol, mb = _lol(tmp_path / "LOL"), _magicbrush(tmp_path / "mb")
    card = _build(tmp_path, "ds", sources=[f"lol={lol}", f"magicbrush={mb}"], n=4)
    ds, vocab, _ = load_built(tmp_path / "ds")
    bpe = load_text_tokenizer(BPE)
    assert card["n_total"] == len(ds) == 4 + 3 * 3 + 4 * 3
    for t, k in (("lol", 3), ("lol_reverse", 3), ("lol_difference", 3), ("magicbrush", 4),
                 ("magicbrush_reverse", 4), ("magicbrush_difference", 4)):  # fmt: skip
        assert card["tasks"][t] == k
    src = {r["name"]: r for r in card["real_sources"]}
    assert (
        src["lol"]["split"] == "train" and src["lol"]["pairs"] == 3 and len(src["lol"]["fingerprint"]) == 16
    )
    rows = {
        (r["task"], json.loads(r["params"])["key"]): r for r in ds if r["task"].startswith(("lol", "magic"))
    }
    # LOL forward: instruction, example = another training pair, answer = the (fitted) high image
    r = rows[("lol", "2")]
    instr, ex_in, ex_out, q, ans = split_items(vocab, bpe, r["input_ids"])
    assert instr == "Brighten this dark image."
    assert np.array_equal(q, _codes(_rgb(2 + 50, 32, 48))) and np.array_equal(
        ans, _codes(_rgb(2 + 100, 32, 48))
    )
    other = [k for k in (1, 3) if np.array_equal(ex_in, _codes(_rgb(k + 50, 32, 48)))]
    assert len(other) == 1 and np.array_equal(ex_out, _codes(_rgb(other[0] + 100, 32, 48)))
    # reversed: high -> low, "Darken"
    instr, _, _, q, ans = split_items(vocab, bpe, rows[("lol_reverse", "2")]["input_ids"])
    assert instr == "Darken this image." and np.array_equal(ans, _codes(_rgb(2 + 50, 32, 48)))
    # the eval15 test pair never appears
    test_codes = _codes(_rgb(1 + 40, 32, 48))
    for row in ds:
        assert not any(np.array_equal(x, test_codes) for x in split_items(vocab, bpe, row["input_ids"])
                       if not isinstance(x, str))  # fmt: skip
    # MagicBrush: RAIE pairs "make the sky red" with "make the sea red" (nearest instruction), both ways
    for q_i, ex_i in ((0, 2), (2, 0)):
        items = split_items(vocab, bpe, rows[("magicbrush", str(q_i))]["input_ids"])
        assert items[0] == MB_TRAIN[q_i]
        assert np.array_equal(items[1], _codes(_rgb(10 * ex_i, 16, 16)))  # the neighbour's source image
    # difference description: (before, after) -> the instruction; reversed edit: no instruction names it
    items = split_items(vocab, bpe, rows[("magicbrush_difference", "3")]["input_ids"])
    assert items[0] == "What changed between these two images?" and items[-1] == "turn the dog into a cat"
    assert (
        split_items(vocab, bpe, rows[("magicbrush_reverse", "3")]["input_ids"])[0]
        == "Do the same to this image."
    )
    assert "Real source `lol`" in (tmp_path / "ds" / "README.md").read_text()


def test_held_out_sets_never_reach_training(tmp_path):
    lol, mb = _lol(tmp_path / "LOL"), _magicbrush(tmp_path / "mb")
    # the default split holds low-light enhancement out (X-Prompt Table 4): LOL is refused, nothing written
    with pytest.raises(XPromptError, match="lol is low_light_enhance, held out of this split"):
        _build(tmp_path, "a", split="train", sources=[f"lol={lol}"])
    assert not (tmp_path / "a").exists()
    # an explicitly held-out set is refused in any split
    with pytest.raises(XPromptError, match="magicbrush is marked held out"):
        _build(tmp_path, "b", sources=[f"magicbrush={mb}"], holdout=["magicbrush"])
    with pytest.raises(XPromptError, match="unknown dataset name"):
        _build(tmp_path, "b2", sources=[f"magicbrush={mb}"], holdout=["magicbrsh"])
    # a test-only copy cannot be trained on
    for i in (1, 2):
        _png(tmp_path / "rain" / "rain" / f"rain-{i}.png", _rgb(i))
        _png(tmp_path / "rain" / "norain" / f"norain-{i}.png", _rgb(i))
    with pytest.raises(XPromptError, match="no training split"):
        _build(tmp_path, "c", sources=[f"rain100h={tmp_path / 'rain'}"])
    # the train split holds object addition out: MagicBrush's add edit is dropped from every task and counted
    card = _build(tmp_path, "d", split="train", sources=[f"magicbrush={mb}"])
    ds, _, _ = load_built(tmp_path / "d")
    assert card["real_sources"][0]["dropped_add_remove"] == 1 and card["tasks"]["magicbrush"] == 3
    assert all(json.loads(r["params"])["key"] != "1" for r in ds)


def test_cli_source_errors(tmp_path, capsys):
    base = ["data", "build", "--n", "0", "--tokenizer", "grid:8", "--bpe", BPE, "--quiet", "--size", "32"]
    lol = _lol(tmp_path / "LOL")
    assert main([*base, "--out", str(tmp_path / "x"), "--source", f"lol={lol}"]) == 2
    assert "held out of this split" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "x"), "--source", f"lol={lol}", "--split", "eval"]) == 2
    assert main([*base, "--out", str(tmp_path / "x"), "--source", "kitti=/x"]) == 2
    assert (
        main(
            ["data", "build", "--n", "0", "--out", str(tmp_path / "y"), "--tokenizer", "grid:8", "--bpe", BPE]
        )
        == 2
    )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()

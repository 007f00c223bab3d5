"""Issue 14: the shared options on every model-running command, per-subcommand help, --json, outputs at the
input's size (CLI), and each warning exactly when it applies."""

from __future__ import annotations

import argparse
import json
import os
import stat

import numpy as np
import pytest
from gen_helpers import tiny_checkpoint, write_png
from PIL import Image

from xprompt.cli import build_parser, main
from xprompt.cli_options import SHARED
from xprompt.paths import shipped

pytestmark = pytest.mark.skipif(
    not (shipped("bpe") / "tokenizer.json").is_file(), reason="shipped BPE missing"
)

# Every leaf command, classified: a new command must be added to one of these (the test below fails otherwise).
PIPELINE = {  # load an XPrompt: every shared option
    ("generate",): {"run", "device", "tokenizers", "image_size", "json", "output_size"},
    ("inpaint",): {"run", "device", "tokenizers", "image_size", "json", "output_size"},
    ("edit",): {"run", "device", "tokenizers", "image_size", "json", "output_size"},
    ("describe",): {"run", "device", "tokenizers", "image_size", "json"},
    ("t2i",): {"run", "device", "tokenizers", "image_size", "json"},
    ("compile-prompt",): {"run", "device", "tokenizers", "image_size", "json"},
    ("demo",): {"run", "device", "tokenizers", "image_size", "json"},
    ("eval", "unseen"): {"run", "device", "tokenizers", "image_size", "json"},
    ("eval", "seen"): {"run", "device", "tokenizers", "image_size", "json"},
    ("eval", "raie"): {"run", "device", "tokenizers", "image_size", "json"},
    ("eval", "t2i"): {"run", "device", "tokenizers", "image_size", "json"},
    ("eval", "probe"): {"run", "device", "json"},
    ("train", "model"): {"run", "device"},
    ("data", "build"): {"run", "tokenizers", "image_size"},
    ("index", "build"): {"run", "image_size", "json"},
    ("index", "search"): {"run", "json"},
    ("index", "train-encoder"): {"run"},
    ("train", "tokenizer"): {"run"},
    ("serve",): {"run", "device", "tokenizers", "image_size"},
}
NO_MODEL = {
    ("train", "bpe"), ("data", "show"), ("data", "photos"), ("eval", "compare"), ("export",),
    ("convert", "published"), ("convert", "vqgan"),
}  # fmt: skip


def _leaves(parser: argparse.ArgumentParser, path=()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, p in subs[0].choices.items():
        yield from _leaves(p, (*path, name))


def _options(parser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def test_every_model_running_command_takes_the_shared_options():
    leaves = dict(_leaves(build_parser()))
    assert set(leaves) == set(PIPELINE) | NO_MODEL, "classify new commands in PIPELINE or NO_MODEL"
    for path, groups in PIPELINE.items():
        opts = _options(leaves[path])
        for g in groups:
            missing = set(SHARED[g]) - opts
            assert not missing, f"{' '.join(path)} lacks {sorted(missing)}"
    # and they parse: the same spelling everywhere
    ns = build_parser().parse_args(
        [
            "eval",
            "unseen",
            "--out",
            "x",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--no-progress",
            "--quiet",
            "--vq",
            "v",
            "--bpe",
            "b",
            "--image-size",
            "64",
            "--json",
        ]
    )
    assert (ns.threads, ns.device, ns.no_progress, ns.quiet, ns.vq, ns.bpe, ns.size, ns.json) == (
        1,
        "cpu",
        True,
        True,
        "v",
        "b",
        64,
        True,
    )
    ns = build_parser().parse_args(
        ["data", "build", "--n", "1", "--out", "x", "--vq", "grid:8", "--threads", "1"]
    )
    assert ns.tokenizer == "grid:8" and ns.threads == 1  # --tokenizer stays as an alias of --vq
    ns = build_parser().parse_args(
        ["train", "model", "--config", "c", "--data", "d", "--out", "o", "--quiet"]
    )
    assert ns.quiet and ns.threads == 0 and ns.device == "auto"


def test_subcommand_help_lists_only_its_options(capsys):
    for path, absent, present in (
        (
            ["eval", "unseen"],
            ["--inputs", "--gap", "--metrics", "--magicbrush", "--store"],
            ["--rows", "--json"],
        ),
        (["eval", "compare"], ["--rows", "--checkpoint", "--limit"], ["--inputs", "--gap"]),
        (["eval", "raie"], ["--inputs"], ["--magicbrush", "--store"]),
        (["eval", "probe"], ["--rows", "--inputs"], ["--data"]),
    ):
        with pytest.raises(SystemExit):
            main([*path, "--help"])
        text = capsys.readouterr().out
        assert all(f"{a} " not in text and f"{a}\n" not in text for a in absent), (path, absent)
        assert all(p in text for p in present), (path, present)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("opts")
    ck = tiny_checkpoint(d / "ck")
    return d, ck


def _run(args, capsys):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.mark.parametrize(
    "hw",
    [(32, 32), (40, 96), (96, 40), (5, 3), (1200, 900)],
    ids=["square", "wide", "tall", "tiny", "huge"],
)
def test_cli_outputs_have_the_query_size(env, capsys, hw):
    d, ck = env
    q = write_png(d / f"q{hw[0]}x{hw[1]}.png", *hw, seed=1)
    out = d / f"out{hw[0]}x{hw[1]}.png"
    code, o, _ = _run(
        ["generate", "--checkpoint", ck, "--mode", "none", "--query", q, "--greedy", "-o", out, "--json"],
        capsys,
    )
    assert code == 0
    rec = json.loads(o)  # one JSON object, nothing else on stdout
    assert (rec["height"], rec["width"]) == hw and Image.open(out).size == (hw[1], hw[0])
    if hw != (40, 96):
        return
    code, o, _ = _run(
        [
            "generate",
            "--checkpoint",
            ck,
            "--mode",
            "none",
            "--query",
            q,
            "--greedy",
            "-o",
            out,
            "--keep-model-size",
        ],
        capsys,
    )
    assert code == 0 and "(32x32)" in o and Image.open(out).size == (32, 32)
    code, o, _ = _run(
        [
            "edit",
            "--checkpoint",
            ck,
            "--image",
            q,
            "--instruction",
            "Remove the red square",
            "--no-retrieval",
            "-o",
            out,
            "--json",
        ],
        capsys,
    )
    assert code == 0 and (json.loads(o)["height"], json.loads(o)["width"]) == hw
    assert Image.open(out).size == (hw[1], hw[0])


def test_describe_json_reports_confidence(env, capsys):
    d, ck = env
    a, b = write_png(d / "da.png", 32, 32, seed=2), write_png(d / "db.png", 32, 32, seed=3)
    code, o, e = _run(
        ["describe", "--checkpoint", ck, "--before", a, "--after", b, "--max-tokens", "6", "--json"], capsys
    )
    rec = json.loads(o)
    assert code == 0 and set(rec) >= {"text", "mean_logprob", "token_prob", "confident"}
    assert rec["mean_logprob"] <= 0 and 0 < rec["token_prob"] <= 1
    assert rec["confident"] == (rec["mean_logprob"] >= -0.3)
    code, o, e = _run(
        ["describe", "--checkpoint", ck, "--before", a, "--after", b, "--max-tokens", "6"], capsys
    )
    assert code == 0 and o.strip() == rec["text"] and "confidence: mean token probability" in e
    assert ("treat this description as a guess" in e) == (not rec["confident"])


def test_mode_mismatch_warns_only_when_the_training_mode_is_known_and_differs(env, capsys, tmp_path):
    from xprompt.checkpoint import read_meta, save_pretrained
    from xprompt.pipeline import XPrompt

    d, ck = env
    q = write_png(d / "mq.png", 32, 32, seed=4)
    base = [
        "generate",
        "--checkpoint",
        None,
        "--example",
        q,
        q,
        "--query",
        q,
        "--greedy",
        "-o",
        tmp_path / "o.png",
    ]

    def gen(ckpt, mode):
        args = list(base)
        args[2] = ckpt
        return _run([*args, "--mode", mode], capsys)

    # the tiny checkpoint records no training mode: no warning in any mode
    for mode in ("xp", "full"):
        code, _, e = gen(ck, mode)
        assert code == 0 and "warning" not in e
    # one trained in xp: full warns (one line), xp does not
    pipe = XPrompt.from_pretrained(ck)
    extra = dict(read_meta(ck)["extra"], training={"train_config": {"mode": "xp", "mode_mix": {}}})
    xp_ck = save_pretrained(tmp_path / "xpck", pipe.model, pipe.vocab, extra=extra)
    code, _, e = gen(xp_ck, "full")
    assert code == 0 and e.count("xprompt: warning:") == 1 and "trained with examples in mode xp" in e
    code, _, e = gen(xp_ck, "xp")
    assert code == 0 and "warning" not in e
    # a mixed-mode model accepts both
    extra["training"] = {"train_config": {"mode": "xp", "mode_mix": {"xp": 0.5, "full": 0.5}}}
    mix_ck = save_pretrained(tmp_path / "mixck", pipe.model, pipe.vocab, extra=extra)
    assert "warning" not in gen(mix_ck, "full")[2]
    # the exported weights have the mode of their siblings
    modes = {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in xp_ck.iterdir()}
    assert len(set(modes.values())) == 1, modes


def test_bpe_smaller_than_asked_warns(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("a red square\na blue circle\n" * 20)
    code, o, e = _run(
        ["train", "bpe", "--out", tmp_path / "b1", "--no-corpus", "--text", text, "--vocab-size", "4000"],
        capsys,
    )
    got = json.loads(o)["vocab_size"]
    assert code == 0 and got < 4000 and e.count("xprompt: warning:") == 1
    assert f"{got:,} entries, fewer than the 4,000 asked for" in e
    code, o, e = _run(
        ["train", "bpe", "--out", tmp_path / "b2", "--no-corpus", "--text", text, "--vocab-size", str(got)],
        capsys,
    )
    assert code == 0 and "warning" not in e


def test_bad_set_value_is_reported_as_a_set_value(tmp_path):
    from xprompt.errors import ConfigError
    from xprompt.paths import REPO_ROOT
    from xprompt.train.train_config import load_train_config

    cfg = REPO_ROOT / "configs" / "tiny.json"
    load_train_config(cfg)  # the file itself is fine
    with pytest.raises(ConfigError, match=r"^--set mode=\"diagonal\" \(on .*tiny.json\)"):
        load_train_config(cfg, {"mode": "diagonal"})


def test_index_search_json_is_one_object(tmp_path, capsys):
    out = tmp_path / "store"
    code, o, _ = _run(
        [
            "index",
            "build",
            "--pairs",
            "suite:edit:12",
            "--out",
            out,
            "--image-size",
            "32",
            "--json",
            "--quiet",
        ],
        capsys,
    )
    assert code == 0 and json.loads(o)["examples"] == 12
    code, o, _ = _run(
        ["index", "search", "--store", out, "--instruction", "Remove the square", "-k", "2", "--json"], capsys
    )
    rec = json.loads(o)
    assert code == 0 and [r["rank"] for r in rec["results"]] == [1, 2]


def test_edit_retrieved_grid_is_labelled(env, tmp_path, capsys):
    from xprompt.images import image_grid

    _, ck = env
    store = tmp_path / "s"
    assert (
        main(["index", "build", "--pairs", "suite:edit:8", "--out", str(store), "--size", "32", "--quiet"])
        == 0
    )
    q = write_png(tmp_path / "q.png", 32, 32, seed=5)
    out = tmp_path / "e.png"
    code, o, _ = _run(
        [
            "edit",
            "--checkpoint",
            ck,
            "--image",
            q,
            "--instruction",
            "Remove the red square",
            "--store",
            store,
            "--show-retrieved",
            "-o",
            out,
        ],
        capsys,
    )
    assert code == 0 and "labelled rows" in o
    grid = np.asarray(Image.open(tmp_path / "e.retrieved.png"))
    unlabelled = image_grid([[np.zeros((32, 32, 3), np.uint8)] * 2] * 2, (96, 96), pad=4)
    assert grid.shape[0] > unlabelled.shape[0]  # header and caption strips above the rows
    assert (grid[:20] < 128).any()  # dark text pixels in the header strip

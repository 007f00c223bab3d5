"""CLI: generate / describe / t2i / compile-prompt end to end on a random tiny checkpoint; bad input -> exit 2."""

import json

import numpy as np
import pytest
from gen_helpers import tiny_checkpoint, write_png
from PIL import Image

from xprompt.cli import main
from xprompt.paths import shipped

pytestmark = pytest.mark.skipif(
    not (shipped("bpe") / "tokenizer.json").is_file(), reason="shipped BPE missing"
)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    ck = tiny_checkpoint(d / "ck")
    imgs = {n: write_png(d / f"{n}.png", 32, 32, seed=i) for i, n in enumerate(["a", "b", "c", "d"])}
    imgs["wide"] = write_png(d / "wide.png", 32, 48, seed=9)
    (d / "broken.png").write_bytes(b"\x89PNG broken")
    imgs["broken"] = d / "broken.png"
    return d, ck, imgs


def run(args, capsys):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_generate_compile_and_task(env, capsys):
    d, ck, im = env
    out = d / "out.png"
    code, o, _ = run(
        [
            "generate",
            "--checkpoint",
            ck,
            "--example",
            im["a"],
            im["b"],
            "--example",
            im["c"],
            im["d"],
            "--query",
            im["c"],
            "--instruction",
            "do it",
            "--greedy",
            "-o",
            out,
        ],
        capsys,
    )
    assert code == 0 and "wrote" in o
    direct = np.asarray(Image.open(out))
    assert direct.shape == (32, 32, 3)
    code, o, _ = run(
        [
            "compile-prompt",
            "--checkpoint",
            ck,
            "--example",
            im["a"],
            im["b"],
            "--example",
            im["c"],
            im["d"],
            "--instruction",
            "do it",
            "-o",
            d / "task.xpt",
        ],
        capsys,
    )
    assert code == 0 and (d / "task.xpt").is_file()
    code, _, _ = run(
        [
            "generate",
            "--checkpoint",
            ck,
            "--task",
            d / "task.xpt",
            "--query",
            im["c"],
            "--greedy",
            "-o",
            d / "out2.png",
        ],
        capsys,
    )
    assert code == 0
    np.testing.assert_array_equal(np.asarray(Image.open(d / "out2.png")), direct)
    # a task prompt from another model is refused
    other = tiny_checkpoint(d / "other", seed=1)
    code, _, err = run(
        ["generate", "--checkpoint", other, "--task", d / "task.xpt", "--query", im["c"], "-o", d / "x.png"],
        capsys,
    )
    assert code == 2 and "another model" in err and err.count("\n") == 1


def test_t2i_and_describe(env, capsys):
    d, ck, im = env
    code, _, _ = run(
        ["t2i", "--checkpoint", ck, "--prompt", "a blue square", "--size", "2", "2", "-o", d / "t.png"],
        capsys,
    )
    assert code == 0 and np.asarray(Image.open(d / "t.png")).shape == (16, 16, 3)
    code, o, _ = run(
        [
            "describe",
            "--checkpoint",
            ck,
            "--before",
            im["a"],
            "--after",
            im["b"],
            "--max-tokens",
            "4",
            "-o",
            d / "diff.txt",
        ],
        capsys,
    )
    assert code == 0 and (d / "diff.txt").read_text().strip() == o.strip()


@pytest.mark.parametrize(
    "case,needle",
    [
        (["--example", "A"], "exactly two"),
        (["--example", "A", "B", "C"], "exactly two"),
        (["--example", "A", "WIDE"], "one size"),
        (["--example", "A", "BROKEN"], "not a readable image"),
        ([], "needs at least one --example"),
    ],
)
def test_generate_bad_input(env, capsys, case, needle):
    d, ck, im = env
    names = {"A": im["a"], "B": im["b"], "C": im["c"], "WIDE": im["wide"], "BROKEN": im["broken"]}
    args = [
        "generate",
        "--checkpoint",
        ck,
        *[names.get(x, x) for x in case],
        "--query",
        im["c"],
        "-o",
        d / "o.png",
    ]
    code, _, err = run(args, capsys)
    assert code == 2 and needle in err and err.startswith("xprompt: error:") and err.count("\n") == 1


def test_checkpoint_vocab_mismatch_exit_2(env, capsys, tmp_path):
    d, _, im = env
    ck = tiny_checkpoint(tmp_path / "ck")
    v = json.loads((ck / "vocab.json").read_text())
    v["size"] += 1
    v["image_ids"]["count"] += 1
    (ck / "vocab.json").write_text(json.dumps(v))
    code, _, err = run(
        [
            "generate",
            "--checkpoint",
            ck,
            "--example",
            im["a"],
            im["b"],
            "--query",
            im["c"],
            "-o",
            d / "o.png",
        ],
        capsys,
    )
    assert code == 2 and "vocab" in err and err.count("\n") == 1


def test_output_and_missing_checkpoint(env, capsys, tmp_path):
    d, ck, im = env
    code, _, err = run(
        [
            "generate",
            "--checkpoint",
            ck,
            "--example",
            im["a"],
            im["b"],
            "--query",
            im["c"],
            "-o",
            d / "o.txt",
        ],
        capsys,
    )
    assert code == 2 and "must end in" in err
    code, _, err = run(["t2i", "--checkpoint", tmp_path / "none", "--prompt", "x", "-o", d / "o.png"], capsys)
    assert code == 2 and "not found" in err


def test_threads_option(capsys):
    """``--threads N`` is applied before the command runs (default 1); a negative count is a clean exit 2."""
    import argparse

    import torch

    from xprompt.cli import add_threads_arg, run_command

    before = torch.get_num_threads()
    seen = []
    p = argparse.ArgumentParser()
    add_threads_arg(p)
    try:
        for argv, want in (([], 1), (["--threads", "2"], 2)):
            assert run_command(lambda a: seen.append(torch.get_num_threads()), p.parse_args(argv)) == 0
            assert seen[-1] == want
        assert run_command(lambda a: 0, p.parse_args(["--threads", "0"])) == 0  # torch's default: untouched
        assert main(["demo", "--threads", "-1"]) == 2
        assert "--threads must be an integer >= 0" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)

"""`xprompt demo` end to end on a random tiny checkpoint (the shipped model is exercised by `make demo`)."""

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from gen_helpers import tiny_checkpoint

from xprompt.cli import main


def test_demo_writes_grid_and_page(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "ckpt", image_size=32)
    out = tmp_path / "demo"
    rc = main(
        [
            "demo",
            "--checkpoint",
            str(ckpt),
            "--out",
            str(out),
            "--tasks",
            "invert",
            "derain",
            "--queries",
            "2",
            "--modes",
            "xp",
            "none",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert f"grid: {out / 'demo_grid.png'}" in printed and f"page: {out / 'index.html'}" in printed
    assert "rows beating the copy baseline's MSE: " in printed and "/8" in printed
    grid = Image.open(out / "demo_grid.png")
    # 2 tasks x 2 queries x 2 modes rows, 6 columns of 32 px images at scale 2, a 14 px column-label strip
    # and a 14 px caption strip above every row (each followed by 4 px of padding)
    assert grid.size == (6 * (64 + 4) + 4, 8 * (64 + 4) + 4 + 9 * (14 + 4))
    page = (out / "index.html").read_text()
    assert page.count("<tr>") == 9 and "(held out)" in page and "copy" in page and "VQ-copy" in page
    assert page.count("beats copy") + page.count("does not beat copy") >= 8  # a verdict on every row
    assert "rows beat the copy baseline's MSE" in page and "VQ ceiling" in page


def test_demo_takes_guidance(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "ckpt", image_size=32)
    args = ["demo", "--checkpoint", str(ckpt), "--tasks", "invert", "--queries", "1", "--modes", "full"]
    assert main([*args, "--out", str(tmp_path / "a"), "--cfg", "2", "--cfg-ref", "instruction"]) == 0
    assert "/1" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # argparse: exit 2 with the choices named
        main([*args, "--out", str(tmp_path / "b"), "--cfg-ref", "examples"])
    assert e.value.code == 2 and "invalid choice: 'examples'" in capsys.readouterr().err


def test_demo_row_meta_judges_against_copy():
    from xprompt.eval.demo import row_meta

    gt = np.zeros((4, 4, 3), np.uint8)
    q, vc = np.full_like(gt, 10), np.full_like(gt, 12)
    m = row_meta("invert", "xp", "x", False, q, vc, np.full_like(gt, 3), gt)
    assert (m["mse_output"], m["mse_copy"], m["mse_vqcopy"], m["beats_copy"]) == (9.0, 100.0, 144.0, True)
    assert not row_meta("invert", "xp", "x", False, q, vc, q, gt)["beats_copy"]  # equal to copy is not a win
    assert row_meta("invert", "xp", "x", False, q, vc, q, gt, vq=np.full_like(gt, 1))["mse_vq"] == 1.0


def test_demo_missing_checkpoint_exit_2(tmp_path, capsys):
    rc = main(["demo", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_demo_unknown_task_exit_2(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "ckpt", image_size=32)
    rc = main(["demo", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--tasks", "bogus"])
    assert rc == 2 and "unknown task" in capsys.readouterr().err

"""`xprompt demo` end to end on a random tiny checkpoint (the shipped model is exercised by `make demo`)."""

import sys
from pathlib import Path

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
    grid = Image.open(out / "demo_grid.png")
    # 2 tasks x 2 queries x 2 modes rows, 5 columns of 32 px images at scale 2
    assert grid.size == (5 * (64 + 4) + 4, 8 * (64 + 4) + 4)
    page = (out / "index.html").read_text()
    assert page.count("<tr>") == 9 and "(held out)" in page and "copy" in page


def test_demo_missing_checkpoint_exit_2(tmp_path, capsys):
    rc = main(["demo", "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_demo_unknown_task_exit_2(tmp_path, capsys):
    ckpt = tiny_checkpoint(tmp_path / "ckpt", image_size=32)
    rc = main(["demo", "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--tasks", "bogus"])
    assert rc == 2 and "unknown task" in capsys.readouterr().err

"""CLI mask-guided editing: ``generate --mask``, ``edit --box/--mask``, ``inpaint``; pixels outside the mask are
the input's; bad masks -> one line, exit 2."""

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
    d = tmp_path_factory.mktemp("climask")
    ck = tiny_checkpoint(d / "ck")
    imgs = {n: write_png(d / f"{n}.png", 32, 32, seed=i) for i, n in enumerate(["a", "b", "q"])}
    m = np.zeros((32, 32), np.uint8)
    m[8:20, 4:14] = 255
    Image.fromarray(m).save(d / "m.png")
    Image.fromarray(np.where(m > 0, 200, 0).astype(np.uint8)).save(d / "grey.png")
    Image.fromarray(m[:16]).save(d / "small.png")
    (d / "text.png").write_text("not an image")
    return d, ck, imgs, m > 0


def run(args, capsys):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_generate_edit_inpaint_keep_pixels_outside_the_mask(env, capsys):
    d, ck, im, m = env
    q = np.asarray(Image.open(im["q"]))
    ex = ["--example", im["a"], im["b"]]
    cases = [
        ["generate", *ex, "--query", im["q"], "--mask", d / "m.png", "-o", d / "g.png"],
        ["generate", "--mode", "none", "--query", im["q"], "--box", "4,8,14,20", "-o", d / "g2.png"],
        ["generate", *ex, "--query", im["q"], "--mask", d / "m.png", "--cfg", "2", "--cfg-ref", "query"]
        + ["--blend", "changed", "-o", d / "g3.png"],
        ["edit", "--image", im["q"], "--instruction", "remove the square", "--no-retrieval"]
        + ["--box", "4,8,14,20", "-o", d / "e.png"],
        ["edit", "--image", im["q"], "--instruction", "remove the square", "--no-retrieval", "--cfg", "3"]
        + ["--cfg-ref", "query", "--blend", "changed", "--box", "4,8,14,20", "-o", d / "e2.png"],
        ["inpaint", "--image", im["q"], "--mask", d / "m.png", "--greedy", "-o", d / "i.png"],
        ["inpaint", "--image", im["q"], *ex, "--box", "4,8,14,20", "--feather", "0", "-o", d / "i2.png"],
    ]
    for args in cases:
        code, _, err = run([*args, "--checkpoint", ck], capsys)
        assert code == 0, err
        got = np.asarray(Image.open(args[-1]))
        np.testing.assert_array_equal(got[~m], q[~m])


@pytest.mark.parametrize(
    ("extra", "msg"),
    [
        (["--mask", "grey.png"], "not binary"),
        (["--mask", "small.png"], "the mask is 32x16 but the image is 32x32"),
        (["--mask", "text.png"], "cannot read the mask"),
        (["--box", "1,2,3"], "four integers"),
        (["--box", "0,0,50,5"], "not inside the 32x32 image"),
    ],
)
def test_bad_masks_exit_2(env, capsys, extra, msg):
    d, ck, im, _ = env
    extra = [d / e if e.endswith(".png") else e for e in extra]
    code, _, err = run(["inpaint", "--image", im["q"], *extra, "--checkpoint", ck, "-o", d / "x.png"], capsys)
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1


def test_inpaint_needs_a_region(env, capsys):
    d, ck, im, _ = env
    with pytest.raises(SystemExit) as e:
        main(["inpaint", "--image", str(im["q"]), "--checkpoint", str(ck), "-o", str(d / "x.png")])
    assert e.value.code == 2
    assert "--mask" in capsys.readouterr().err

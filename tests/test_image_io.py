"""tokenizer/image_io.py: mode conversion, bad files, fitting and Lumina-mGPT crop sizes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xprompt.errors import ImageInputError, XPromptError
from xprompt.tokenizer.image_io import (
    choose_crop_size,
    crop_size_list,
    fit_image,
    fit_image_any,
    load_image,
)


def _save(tmp_path, im: Image.Image, name: str) -> str:
    p = tmp_path / name
    im.save(p)
    return str(p)


def test_rgb_roundtrip(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = load_image(_save(tmp_path, Image.fromarray(arr), "a.png"))
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, arr)


def test_rgba_composited_over_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 255  # one opaque red pixel, the rest fully transparent
    rgba[1, 1, 3] = 128  # half transparent
    out = load_image(_save(tmp_path, Image.fromarray(rgba, "RGBA"), "a.png"))
    assert tuple(out[0, 0]) == (200, 0, 0)
    assert tuple(out[2, 2]) == (255, 255, 255)
    assert 220 <= out[1, 1, 0] <= 235 and 120 <= out[1, 1, 1] <= 135  # 50 % over white


def test_la_l_and_1(tmp_path):
    la = Image.fromarray(np.stack([np.full((3, 3), 50, np.uint8), np.zeros((3, 3), np.uint8)], -1), "LA")
    assert (load_image(_save(tmp_path, la, "la.png")) == 255).all()  # transparent -> white
    grey = Image.fromarray(np.full((3, 3), 77, np.uint8), "L")
    assert (load_image(_save(tmp_path, grey, "l.png")) == 77).all()
    bw = Image.new("1", (4, 2), 1)
    out = load_image(_save(tmp_path, bw, "b.png"))
    assert out.shape == (2, 4, 3) and (out == 255).all()


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (3, 3), 0)
    im.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    im.info["transparency"] = 0
    out = load_image(_save(tmp_path, im, "p.png"))
    assert (out == 255).all()
    im2 = Image.new("P", (3, 3), 0)
    im2.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    assert tuple(load_image(_save(tmp_path, im2, "p2.png"))[0, 0]) == (10, 20, 30)


def test_16bit_grey_is_rescaled_not_clipped(tmp_path):
    arr = np.array([[0, 65535], [32896, 1000]], dtype=np.uint16)
    im = Image.fromarray(arr)  # mode I;16
    out = load_image(_save(tmp_path, im, "g16.png"))
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 255 and out[1, 0, 0] == 128
    assert out[1, 1, 0] == 4  # 1000/65535*255


def test_cmyk(tmp_path):
    im = Image.new("CMYK", (2, 2), (0, 255, 255, 0))  # red
    out = load_image(_save(tmp_path, im, "c.jpg"))
    assert out[0, 0, 0] > 200 and out[0, 0, 1] < 60


def test_pil_image_passthrough():
    out = load_image(Image.new("RGBA", (2, 3), (1, 2, 3, 255)))
    assert out.shape == (3, 2, 3) and tuple(out[0, 0]) == (1, 2, 3)


def test_bad_files(tmp_path):
    txt = tmp_path / "notes.png"
    txt.write_text("this is not an image")
    with pytest.raises(ImageInputError, match="not a readable image"):
        load_image(txt)
    with pytest.raises(ImageInputError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageInputError, match="not a file"):
        load_image(tmp_path)

    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.png"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageInputError, match="damaged or truncated"):
        load_image(trunc)


def _png_header_only(path, w: int, h: int) -> None:
    """A PNG whose IHDR claims w x h (no pixel data needed: the size check happens before decoding)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_zero_and_huge_images(tmp_path):
    zero = tmp_path / "zero.png"
    _png_header_only(zero, 0, 0)
    with pytest.raises(ImageInputError, match=r"no pixels \(0x0\)"):
        load_image(zero)
    huge = tmp_path / "huge.png"
    _png_header_only(huge, 100_000, 100_000)
    with pytest.raises(ImageInputError, match="too large"):
        load_image(huge)
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 100)).save(small)
    with pytest.raises(ImageInputError, match="too large"):
        load_image(small, max_pixels=5_000)
    assert issubclass(ImageInputError, XPromptError)


def test_fit_image_square_and_rect():
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 20:60] = 255  # white centre band, exactly the centre crop of the square
    out = fit_image(img, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert out[:, 2:14].min() > 240  # centre crop kept the band
    assert fit_image(img, (8, 24)).shape == (8, 24, 3)
    with pytest.raises(ImageInputError):
        fit_image(np.zeros((0, 4, 3), np.uint8), 8)
    with pytest.raises(ImageInputError):
        fit_image(np.zeros((4, 4), np.uint8), 8)


def test_crop_size_list_matches_lumina_definition():
    sizes = crop_size_list(16, 8, max_ratio=4.0)
    grids = {(h // 8, w // 8) for h, w in sizes}
    assert (4, 4) in grids and (2, 8) in grids and (8, 2) in grids and (1, 16) not in grids
    for h, w in sizes:
        assert h % 8 == 0 and w % 8 == 0
        hp, wp = h // 8, w // 8
        assert hp * wp <= 16 and max(hp, wp) / min(hp, wp) <= 4.0
    with pytest.raises(ImageInputError):
        crop_size_list(0, 8)


def test_choose_crop_size_prefers_matching_aspect():
    sizes = crop_size_list(64, 8)
    assert choose_crop_size((480, 640), sizes) in {(48, 80), (56, 72), (48, 88)}
    h, w = choose_crop_size((1000, 250), sizes)
    assert h > w and h / w >= 3
    assert choose_crop_size((300, 300), sizes) == (64, 64)
    out = fit_image_any(np.zeros((100, 400, 3), np.uint8), 64, 8)
    assert out.shape[1] > out.shape[0] and out.shape[0] % 8 == 0 and out.shape[1] % 8 == 0

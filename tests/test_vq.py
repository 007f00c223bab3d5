"""VQ model and the VQTokenizer contract: shapes, factors, batching, checkpoints, errors, training smoke."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from xprompt.errors import CheckpointError, ConfigError, ImageInputError
from xprompt.tokenizer.vq import VQConfig, VQModel, VQTokenizer

TINY = {"codebook_size": 32, "code_dim": 4, "base_channels": 8, "max_channels": 16, "mid_blocks": 1}


def _tok(factor: int = 8, patch: int = 2, **kw) -> VQTokenizer:
    torch.manual_seed(0)
    return VQTokenizer(VQModel(VQConfig(factor=factor, patch=patch, **{**TINY, **kw})))


def _imgs(b: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (b, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("factor,patch", [(4, 1), (4, 2), (8, 2), (8, 1), (16, 2), (16, 4)])
def test_encode_decode_shapes(factor, patch):
    tok = _tok(factor, patch)
    assert tok.factor == factor and tok.codebook_size == 32
    imgs = _imgs(3, 2 * factor, 3 * factor)
    codes = tok.encode(imgs)
    assert codes.dtype == np.int64 and codes.shape == (3, 2, 3)
    assert codes.min() >= 0 and codes.max() < 32
    out = tok.decode(codes)
    assert out.dtype == np.uint8 and out.shape == imgs.shape


def test_batched_equals_single_and_lists_accepted():
    tok = _tok()
    tok.batch_size = 2
    imgs = _imgs(5, 16, 16)
    codes = tok.encode(imgs)
    for i in range(5):
        np.testing.assert_array_equal(tok.encode(imgs[i])[0], codes[i])  # single HxWx3 array
    np.testing.assert_array_equal(tok.encode([Image.fromarray(a) for a in imgs]), codes)  # PIL list
    np.testing.assert_array_equal(tok.encode(list(imgs)), codes)  # list of arrays
    dec = tok.decode(codes)
    np.testing.assert_array_equal(tok.decode(codes[1]), dec[1:2])


def test_bad_inputs():
    tok = _tok()
    with pytest.raises(ImageInputError, match="multiple of the tokenizer factor 8"):
        tok.encode(_imgs(1, 12, 16))
    with pytest.raises(ImageInputError, match="uint8"):
        tok.encode(_imgs(1, 16, 16).astype(np.float32))
    with pytest.raises(ImageInputError, match=r"\(B,H,W,3\)"):
        tok.encode(np.zeros((1, 16, 16, 4), np.uint8))
    with pytest.raises(ImageInputError, match="same size"):
        tok.encode([np.zeros((16, 16, 3), np.uint8), np.zeros((8, 16, 3), np.uint8)])
    with pytest.raises(ImageInputError, match=r"\[0, 32\)"):
        tok.decode(np.full((1, 2, 2), 32))
    with pytest.raises(ImageInputError, match="integer codes"):
        tok.decode(np.zeros((1, 2, 2), np.float32))


def test_config_validation():
    with pytest.raises(ConfigError, match="power of two"):
        VQConfig(factor=6)
    with pytest.raises(ConfigError, match="patch"):
        VQConfig(factor=2, patch=4)
    assert VQConfig(factor=16, patch=2).levels == 3


def test_checkpoint_roundtrip_strict(tmp_path):
    tok = _tok()
    tok.model.save_pretrained(tmp_path / "ck")
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "config.json",
        "integrity.json",
        "model.safetensors",
    ]
    tok2 = VQTokenizer.from_pretrained(tmp_path / "ck")
    imgs = _imgs(2, 16, 24)
    np.testing.assert_array_equal(tok2.encode(imgs), tok.encode(imgs))
    np.testing.assert_array_equal(tok2.decode(tok.encode(imgs)), tok.decode(tok.encode(imgs)))

    # config disagreeing with the weights -> CheckpointError, not a silent partial load
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    cfg["codebook_size"] = 64
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="config.json is truncated"):  # integrity.json's checksums
        VQTokenizer.from_pretrained(tmp_path / "ck")
    (tmp_path / "ck" / "integrity.json").unlink()  # as before checksums: the deeper checks below
    with pytest.raises(CheckpointError, match="shape"):
        VQTokenizer.from_pretrained(tmp_path / "ck")
    cfg["codebook_size"], cfg["mid_blocks"] = 32, 2
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing"):
        VQTokenizer.from_pretrained(tmp_path / "ck")
    cfg["mid_blocks"], cfg["bogus"] = 1, 3
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="bogus"):
        VQTokenizer.from_pretrained(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="not found"):
        VQTokenizer.from_pretrained(tmp_path / "nowhere")
    del cfg["bogus"]
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="safetensors"):
        VQTokenizer.from_pretrained(tmp_path / "ck")


def test_restart_dead_codes():
    tok = _tok()
    q = tok.model.quantizer
    dead = torch.zeros(32, dtype=torch.bool)
    dead[[3, 7]] = True
    before = q.embedding.weight.detach().clone()
    z = torch.nn.functional.normalize(torch.randn(50, 4), dim=-1)
    assert q.restart_dead_codes(z, dead, noise=0.0) == 2
    after = q.embedding.weight.detach()
    assert torch.equal(after[~dead], before[~dead])
    cb = q.codebook().detach()
    sims = cb[[3, 7]] @ z.T  # each restarted code equals (up to scale) one of the encoder outputs
    assert torch.allclose(sims.max(dim=1).values, torch.ones(2), atol=1e-5)


def test_train_smoke_improves_psnr(tmp_path, monkeypatch):
    """A few steps of the real trainer on a fixed batch lower the loss; checkpoint and log are written."""
    from xprompt.tokenizer import vq_train

    rng = np.random.default_rng(0)
    fixed = np.repeat(
        np.repeat(rng.integers(0, 256, (4, 4, 4, 3), dtype=np.uint8), 4, 1), 4, 2
    )  # (4,16,16,3)
    monkeypatch.setattr(vq_train, "sample_batch", lambda rng, n, size, frac, split="train": fixed[:n])
    monkeypatch.setattr(
        vq_train, "heldout_batches", lambda seed, n, size: {"scenes": fixed, "photos": fixed[::-1]}
    )
    vq = VQConfig(factor=4, patch=2, image_size=16, **TINY)
    first = vq_train.train_vq(
        vq_train.VQTrainConfig(steps=1, batch_size=4, eval_every=1, vq=vq), tmp_path / "a", progress=False
    )
    cfg = vq_train.VQTrainConfig(
        steps=60, batch_size=4, lr=3e-3, warmup=5, eval_every=30, restart_every=10, vq=vq
    )
    res = vq_train.train_vq(cfg, tmp_path / "b", progress=False)
    assert res["psnr_scenes"] > first["psnr_scenes"] + 2.0
    log = json.loads((tmp_path / "b" / "train_log.json").read_text())
    assert [e["step"] for e in log] == [30, 60]
    assert VQTokenizer.from_pretrained(tmp_path / "b").factor == 4


def test_shipped_checkpoint_quality():
    """The shipped vq-64 loads strictly and reconstructs held-out scenes and eval photos at a useful PSNR."""
    from xprompt.paths import shipped
    from xprompt.tokenizer.vq_train import psnr_uint8
    from xprompt.train.sources import photo_crop, scene_image

    path = shipped("vq-64")
    if not (path / "model.safetensors").is_file():
        pytest.skip("no shipped vq-64 checkpoint")
    tok = VQTokenizer.from_pretrained(path)
    assert tok.factor == 8 and tok.codebook_size == 1024
    rng = np.random.default_rng(4242)
    scenes = np.stack([scene_image(rng, 64) for _ in range(8)])
    photos = np.stack([photo_crop(rng, 64, split="eval") for _ in range(8)])
    assert psnr_uint8(scenes, tok.decode(tok.encode(scenes))) > 20.0
    assert psnr_uint8(photos, tok.decode(tok.encode(photos))) > 19.0
    # non-square inputs work with the same weights
    assert tok.decode(tok.encode(np.zeros((1, 32, 96, 3), np.uint8))).shape == (1, 32, 96, 3)

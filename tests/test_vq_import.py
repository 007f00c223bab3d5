"""Published-format import: a randomly initialised transformers JanusVQVAE written with save_pretrained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from xprompt.errors import CheckpointError
from xprompt.tokenizer.vq import VQTokenizer

transformers = pytest.importorskip("transformers")

TINY = {
    "embed_dim": 4,
    "num_embeddings": 64,
    "latent_channels": 32,
    "base_channels": 32,
    "channel_multiplier": [1, 1, 2],  # factor 4
    "num_res_blocks": 1,
    "num_patches": 4,
    "projection_dim": 16,
    "image_token_embed_dim": 16,
}


@pytest.fixture(scope="module")
def janus_dir(tmp_path_factory):
    from transformers import JanusVQVAE, JanusVQVAEConfig

    torch.manual_seed(0)
    model = JanusVQVAE(JanusVQVAEConfig(**TINY)).eval()
    d = tmp_path_factory.mktemp("janus_vq")
    model.save_pretrained(d)
    return d, model


def test_janus_vq_roundtrip_matches_transformers(janus_dir):
    d, ref = janus_dir
    tok = VQTokenizer.from_pretrained(d)
    assert tok.factor == 4 and tok.codebook_size == 64
    imgs = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    codes = tok.encode(imgs)
    assert codes.shape == (2, 4, 4) and codes.dtype == np.int64
    out = tok.decode(codes)
    assert out.shape == imgs.shape and out.dtype == np.uint8
    # decode agrees with transformers' own decode on its square num_patches grid
    with torch.no_grad():
        ref_px = ref.decode(torch.from_numpy(codes).view(2, -1))  # (2,3,16,16)
    ref_u8 = ((ref_px.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.abs(out.astype(int) - ref_u8.astype(int)).max() <= 1
    # with l2_norm=False the encoder matches transformers' quantizer exactly
    from xprompt.tokenizer.vq_import import load_janus_vq

    raw = VQTokenizer(load_janus_vq(d, l2_norm=False))
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        ref_codes = ref.encode(x).image_tokens.view(2, 4, 4).numpy()
    np.testing.assert_array_equal(raw.encode(imgs), ref_codes)


def test_janus_vq_any_grid(janus_dir):
    tok = VQTokenizer.from_pretrained(janus_dir[0])
    imgs = np.zeros((1, 8, 24, 3), np.uint8)
    assert tok.decode(tok.encode(imgs)).shape == (1, 8, 24, 3)


def test_full_janus_checkpoint_prefix(janus_dir, tmp_path):
    from safetensors.torch import save_file

    d, ref = janus_dir
    state = {"model.vqmodel." + k: v.contiguous() for k, v in ref.state_dict().items()}
    state["model.language_model.embed_tokens.weight"] = torch.zeros(2, 2)  # ignored
    save_file(state, str(tmp_path / "model.safetensors"))
    cfg = {"model_type": "janus", "vq_config": json.loads((d / "config.json").read_text())}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    imgs = np.random.default_rng(1).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        VQTokenizer.from_pretrained(tmp_path).encode(imgs), VQTokenizer.from_pretrained(d).encode(imgs)
    )


def test_bad_published_checkpoints(janus_dir, tmp_path):
    d, _ref = janus_dir
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="unsupported model_type"):
        VQTokenizer.from_pretrained(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["num_embeddings"] = 128
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="shape"):
        VQTokenizer.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        VQTokenizer.from_pretrained(tmp_path)

"""LPIPS / CLIP / DINO: the no-weights marker, loading from local paths, and agreement with references.

No real weights exist on this machine, so the tests save *random* networks of the right architecture to a
temp dir and check that our scorers load them and compute exactly what the reference code computes with
the same network (torchmetrics' public LPIPS function, open_clip / timm / transformers forward passes).
"""

import json

import numpy as np
import pytest
import torch

from xprompt.errors import XPromptError
from xprompt.eval import metrics as M


def _img(seed, size=64):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_no_weights_gives_marker_not_number():
    for loader in (M.load_lpips, M.load_clip, M.load_dino):
        assert loader(None) is M.NO_WEIGHTS
    a, b = _img(0), _img(1)
    for v in (
        M.lpips(a, b, M.NO_WEIGHTS), M.clip_i(a, b, M.NO_WEIGHTS), M.clip_t(a, "x", M.NO_WEIGHTS),
        M.clip_dir(a, b, "x", "y", M.NO_WEIGHTS), M.dino(a, b, M.NO_WEIGHTS),
    ):  # fmt: skip
        assert isinstance(v, M.Unavailable) and str(v) == "unavailable: no weights"


def test_missing_weight_paths_are_user_errors(tmp_path):
    for loader in (M.load_lpips, M.load_clip, M.load_dino):
        with pytest.raises(XPromptError, match="not found"):
            loader(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(XPromptError, match="cannot read"):
        M.load_lpips(bad)


def test_lpips_matches_torchmetrics_with_same_backbone(tmp_path, monkeypatch):
    import torchvision
    from torchmetrics.functional.image import learned_perceptual_image_patch_similarity as tm_lpips

    torch.manual_seed(0)
    alex = torchvision.models.alexnet(weights=None)
    torch.save(alex.state_dict(), tmp_path / "alex.pth")
    scorer = M.load_lpips(tmp_path / "alex.pth", net="alex")
    a, b = _img(0), _img(1)
    ours = M.lpips(a, b, scorer)

    # reference: torchmetrics' public function, its "pretrained" backbone replaced by the same alexnet
    real_alexnet = torchvision.models.alexnet

    def fake_alexnet(weights=None, **kw):
        m = real_alexnet(weights=None)
        m.load_state_dict(torch.load(tmp_path / "alex.pth"))
        return m

    monkeypatch.setattr(torchvision.models, "alexnet", fake_alexnet)
    t = lambda x: torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255
    ref = float(tm_lpips(t(a), t(b), net_type="alex", normalize=True))
    assert ours > 0 and ours == pytest.approx(ref, rel=1e-5)
    assert M.lpips(a, a, scorer) == pytest.approx(0.0, abs=1e-7)


def test_lpips_rejects_wrong_architecture(tmp_path):
    torch.save({"features.0.weight": torch.zeros(3, 3)}, tmp_path / "w.pth")
    with pytest.raises(XPromptError, match="not a torchvision alexnet"):
        M.load_lpips(tmp_path / "w.pth")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip

    d = tmp_path_factory.mktemp("clip")
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 224, "layers": 1, "width": 64, "patch_size": 32, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    }
    (d / "xp-test-clip.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(d / "xp-test-clip.json")
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("xp-test-clip")
    torch.save(model.state_dict(), d / "clip.pt")
    return d / "clip.pt", model.eval(), preprocess, open_clip.get_tokenizer("xp-test-clip")


def test_clip_scores_match_open_clip(tiny_clip):
    from PIL import Image

    path, model, preprocess, tok = tiny_clip
    scorer = M.load_clip(path, model_name="xp-test-clip")
    q, p, g = _img(0), _img(1), _img(2)
    with torch.no_grad():
        fi = model.encode_image(torch.stack([preprocess(Image.fromarray(x)) for x in (p, g, q)]))  # (3, 32)
        ft = model.encode_text(tok(["a red circle", "a blue square"]))  # (2, 32)
    fi, ft = (
        fi / fi.norm(dim=1, keepdim=True),
        ft / ft.norm(dim=1, keepdim=True),
    )  # InstructPix2Pix normalises
    cos = torch.nn.functional.cosine_similarity
    assert M.clip_i(p, g, scorer) == pytest.approx(float(cos(fi[0], fi[1], dim=0)), abs=1e-5)
    assert M.clip_t(p, "a red circle", scorer) == pytest.approx(float(cos(fi[0], ft[0], dim=0)), abs=1e-5)
    ref_dir = float(cos(fi[0] - fi[2], ft[0] - ft[1], dim=0))
    assert M.clip_dir(p, q, "a blue square", "a red circle", scorer) == pytest.approx(ref_dir, abs=1e-5)
    assert M.clip_i(p, p, scorer) == pytest.approx(1.0, abs=1e-6)


def test_dino_timm_state_dict(tmp_path):
    import timm

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).eval()
    torch.save({"teacher": {f"backbone.{k}": v for k, v in vit.state_dict().items()}}, tmp_path / "dino.pth")
    scorer = M.load_dino(tmp_path / "dino.pth", arch="vit_tiny_patch16_224")
    a, b = _img(3, 96), _img(4, 96)
    x = torch.stack([scorer.transform(__import__("PIL.Image").Image.fromarray(i)) for i in (a, b)])
    assert x.shape == (2, 3, 224, 224)
    with torch.no_grad():
        f = vit(x)
    ref = float(torch.nn.functional.cosine_similarity(f[0], f[1], dim=0))
    assert M.dino(a, b, scorer) == pytest.approx(ref, abs=1e-5)
    assert M.dino(a, a, scorer) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(XPromptError, match="does not match"):
        M.load_dino(tmp_path / "dino.pth", arch="vit_small_patch16_224")


def test_dino_transformers_dir(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=14,
        image_size=224,
    )
    Dinov2Model(cfg).save_pretrained(tmp_path / "dinov2")
    scorer = M.load_dino(tmp_path / "dinov2")
    a, b = _img(5), _img(6)
    s = M.dino(a, b, scorer)
    assert -1.0 <= s <= 1.0 and M.dino(a, a, scorer) == pytest.approx(1.0, abs=1e-6)

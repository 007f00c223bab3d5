"""Metrics that need pretrained networks: LPIPS, CLIP-I / CLIP-T / CLIP-dir, DINO.

Design choices
* **Weights only from a local path.** Nothing is downloaded. ``load_lpips(path)``, ``load_clip(path)`` and
  ``load_dino(path)`` return a scorer, or the ``NO_WEIGHTS`` marker (``unavailable: no weights``) when the path
  is ``None``; every metric function given the marker returns the marker, so a report can never show a number
  the machine could not compute. A path that is given but unusable is an ``XPromptError``.
* **LPIPS** is torchmetrics' implementation (the linear calibration layers ship inside torchmetrics); only the
  ImageNet backbone (torchvision ``alexnet`` / ``vgg16`` / ``squeezenet1_1`` state dict, ``.pth`` or
  ``.safetensors``) must be given. Images are fed in [-1, 1] at their own size.
* **CLIP (MagicBrush / Emu Edit protocol)** through ``open_clip`` (default ``ViT-B-32``; use
  ``ViT-B-32-quickgelu`` for OpenAI's weights in open_clip format) with its own preprocessing (resize shortest
  side to 224, centre crop, CLIP mean/std). Features are L2-normalised; then
  - CLIP-I = cos(E_img(pred), E_img(gt)),
  - CLIP-T (CLIP_out) = cos(E_img(pred), E_txt(output caption)),
  - CLIP-dir = cos(E_img(pred) - E_img(query), E_txt(output caption) - E_txt(input caption)) (InstructPix2Pix),
  none multiplied by 100 (MagicBrush/X-Prompt tables print 0.27, not 27).
* **DINO**: the CLS embedding of a ViT-S/16 trained with DINO (MagicBrush uses ``dino_vits16``), with
  MagicBrush's transform (resize 256 bicubic, centre crop 224, ImageNet mean/std); DINO = cos of the two CLS
  embeddings. Accepted weights: a timm / DINO-style state dict file for ``vit_small_patch16_224`` (the DINO
  release's key names match timm's), or a local ``transformers`` directory (e.g. DINOv2), whose
  ``pooler_output`` (normed CLS) is used.
* Runs on CPU by default; ``device="cuda"`` is honoured only when CUDA is available (otherwise an error).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xprompt.errors import XPromptError
from xprompt.eval.metrics_image import NO_WEIGHTS, Unavailable, _pair, as_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _device(device: str):
    import torch

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise XPromptError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return torch.device(device)


def _weights_file(path, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise XPromptError(f"{what} weights not found: {p} (give a local file; nothing is downloaded)")
    return p


def _load_state_dict(path: Path) -> dict:
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- corrupt file, pickle with code, ...
        raise XPromptError(f"cannot read weights {path}: {type(e).__name__}: {e}") from None
    for key in ("state_dict", "model", "teacher"):  # common wrappers (DINO releases use "teacher")
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise XPromptError(f"{path} does not hold a state dict")
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in sd.items()}


def _to_tensor(imgs: Sequence[np.ndarray]):
    """list of uint8 (H, W, 3) -> float32 (B, 3, H, W) in [0, 1]."""
    import torch

    arr = np.stack([as_image(i) for i in imgs]).astype(np.float32) / 255.0  # (B, H, W, 3)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------------- LPIPS
class LPIPSScorer:
    """torchmetrics LPIPS with a locally loaded backbone."""

    def __init__(self, backbone_weights, net: str = "alex", device: str = "cpu"):
        import torch
        import torchvision
        from torchmetrics.functional.image.lpips import _NoTrainLpips

        tv_name = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}.get(net)
        if tv_name is None:
            raise XPromptError(f"LPIPS net must be alex, vgg or squeeze, got {net!r}")
        sd = _load_state_dict(_weights_file(backbone_weights, "LPIPS backbone"))
        tv = getattr(torchvision.models, tv_name)(weights=None)
        # a full torchvision state dict ("features.0.weight", "classifier...") or the features alone ("0.weight")
        feats = {k.removeprefix("features."): v for k, v in sd.items() if k.startswith("features.")} or sd
        try:
            tv.features.load_state_dict(feats, strict=True)
        except RuntimeError as e:
            raise XPromptError(
                f"{backbone_weights} is not a torchvision {tv_name} state dict ({e})"
            ) from None
        # pnet_rand=True: build the backbone without downloading, then copy our loaded layers into its slices.
        self.net = _NoTrainLpips(net=net, pretrained=True, pnet_rand=True)
        for sl in self.net.net.children():
            for name, layer in sl.named_children():
                layer.load_state_dict(tv.features[int(name)].state_dict())
        self.device = _device(device)
        self.net.to(self.device).eval()
        self._torch = torch

    def __call__(self, pred, gt) -> float:
        pred, gt = _pair(pred, gt)
        with self._torch.no_grad():
            a, b = (_to_tensor([x]).to(self.device) * 2 - 1 for x in (pred, gt))  # (1, 3, H, W) in [-1, 1]
            return float(self.net(a, b).reshape(-1)[0])


def load_lpips(backbone_weights=None, net: str = "alex", device: str = "cpu"):
    return NO_WEIGHTS if backbone_weights is None else LPIPSScorer(backbone_weights, net, device)


def lpips(pred, gt, scorer) -> float | Unavailable:
    return scorer if isinstance(scorer, Unavailable) else scorer(pred, gt)


# ---------------------------------------------------------------------- CLIP
class ClipScorer:
    """open_clip model + preprocessing + tokenizer, from a local weights file."""

    def __init__(self, weights, model_name: str = "ViT-B-32", device: str = "cpu"):
        import open_clip
        import torch

        path = _weights_file(weights, "CLIP")
        self.device = _device(device)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=str(path), device=self.device
            )
        except XPromptError:
            raise
        except Exception as e:  # noqa: BLE001 -- third-party loaders raise anything
            raise XPromptError(
                f"cannot load CLIP {model_name} from {path}: {type(e).__name__}: {e}"
            ) from None
        self.model, self.preprocess = model.eval(), preprocess
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self._torch = torch

    def image_features(self, imgs: Sequence[np.ndarray]):
        """list of uint8 (H, W, 3) -> (B, D) unit vectors."""
        from PIL import Image

        x = self._torch.stack([self.preprocess(Image.fromarray(as_image(i))) for i in imgs]).to(self.device)
        with self._torch.no_grad():
            f = self.model.encode_image(x).float()  # (B, D)
        return f / f.norm(dim=-1, keepdim=True)

    def text_features(self, texts: Sequence[str]):
        """list of str -> (B, D) unit vectors."""
        with self._torch.no_grad():
            f = self.model.encode_text(self.tokenizer(list(texts)).to(self.device)).float()  # (B, D)
        return f / f.norm(dim=-1, keepdim=True)


def load_clip(weights=None, model_name: str = "ViT-B-32", device: str = "cpu"):
    return NO_WEIGHTS if weights is None else ClipScorer(weights, model_name, device)


def _cos(a, b) -> float:
    return float(
        (a * b).sum(-1).reshape(-1)[0] / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-12).reshape(-1)[0]
    )


def _image_cosine(pred, gt, features) -> float:
    """Cosine of the embeddings ``features([pred, gt])`` (2, D) of two images (CLIP-I, DINO)."""
    pred, gt = _pair(pred, gt)
    f = features([pred, gt])  # (2, D)
    return _cos(f[0:1], f[1:2])


def clip_i(pred, gt, scorer) -> float | Unavailable:
    """CLIP image similarity between the prediction and the ground truth."""
    if isinstance(scorer, Unavailable):
        return scorer
    return _image_cosine(pred, gt, scorer.image_features)


def clip_t(pred, caption: str, scorer) -> float | Unavailable:
    """CLIP text-image similarity between the prediction and the output caption (CLIP_out)."""
    if isinstance(scorer, Unavailable):
        return scorer
    return _cos(scorer.image_features([pred]), scorer.text_features([caption]))


def clip_dir(pred, query, caption_in: str, caption_out: str, scorer) -> float | Unavailable:
    """CLIP directional similarity: image change (pred - query) vs caption change (out - in)."""
    if isinstance(scorer, Unavailable):
        return scorer
    f_img = scorer.image_features([pred, query])  # (2, D)
    f_txt = scorer.text_features([caption_out, caption_in])  # (2, D)
    return _cos(f_img[0:1] - f_img[1:2], f_txt[0:1] - f_txt[1:2])


# ---------------------------------------------------------------------- DINO
class DinoScorer:
    """DINO ViT CLS embeddings from a local timm-style state dict or a transformers directory."""

    def __init__(self, weights, arch: str = "vit_small_patch16_224", device: str = "cpu"):
        import torch
        from torchvision import transforms as T

        path = _weights_file(weights, "DINO")
        self.device = _device(device)
        self._torch = torch
        if path.is_dir():
            from transformers import AutoModel

            try:
                self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
            except Exception as e:  # noqa: BLE001 -- third-party loaders raise anything
                raise XPromptError(
                    f"cannot load a transformers model from {path}: {type(e).__name__}: {e}"
                ) from None
            self.kind = "hf"
        else:
            import timm

            try:
                self.model = timm.create_model(arch, pretrained=False, num_classes=0)
            except Exception as e:  # noqa: BLE001 -- third-party loaders raise anything
                raise XPromptError(f"unknown timm architecture {arch!r}: {e}") from None
            sd = {k: v for k, v in _load_state_dict(path).items() if not k.startswith("head")}
            try:
                missing, unexpected = self.model.load_state_dict(sd, strict=False)
            except RuntimeError as e:  # shape mismatches
                raise XPromptError(
                    f"{path} does not match {arch}: {str(e).splitlines()[1].strip()}"
                ) from None
            if missing or unexpected:
                raise XPromptError(
                    f"{path} does not match {arch}: missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]}"
                )
            self.kind = "timm"
        self.model.to(self.device).eval()
        self.transform = T.Compose(
            [
                T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
                T.CenterCrop(224),
                T.ToTensor(),
                T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def features(self, imgs: Sequence[np.ndarray]):
        """list of uint8 (H, W, 3) -> (B, D) CLS embeddings (not normalised)."""
        from PIL import Image

        x = self._torch.stack([self.transform(Image.fromarray(as_image(i))) for i in imgs]).to(self.device)
        with self._torch.no_grad():
            if self.kind == "hf":
                out = self.model(pixel_values=x)
                f = (
                    out.pooler_output
                    if getattr(out, "pooler_output", None) is not None
                    else out.last_hidden_state[:, 0]
                )
            else:
                f = self.model(x)  # (B, D): timm ViT with num_classes=0 -> normed CLS token
        return f.float()


def load_dino(weights=None, arch: str = "vit_small_patch16_224", device: str = "cpu"):
    return NO_WEIGHTS if weights is None else DinoScorer(weights, arch, device)


def dino(pred, gt, scorer) -> float | Unavailable:
    """DINO similarity: cosine of the CLS embeddings of prediction and ground truth."""
    if isinstance(scorer, Unavailable):
        return scorer
    return _image_cosine(pred, gt, scorer.features)

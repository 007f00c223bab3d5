"""Load a published VQ tokenizer from a local directory: transformers' ``JanusVQVAE`` (LlamaGen VQ-16 layout).

Design choices
* Format: a directory written by ``JanusVQVAE.save_pretrained`` (``config.json`` with
  ``model_type = "janus_vqgan"`` + safetensors), or a full Janus checkpoint (``model_type = "janus"``) from
  which only the ``model.vqmodel.*`` tensors are read (the 1-7B language model is never instantiated).
  Loading is strict: a missing or unexpected tensor is a ``CheckpointError``.
* The wrapper ``JanusVQBackend`` offers ``encode_tensor`` / ``decode_tensor`` / ``factor`` /
  ``codebook_size``, so ``VQTokenizer`` gives it the same numpy interface as our own model.
* Quantisation follows LlamaGen (``codebook_l2_norm=True``, how the Janus/LlamaGen codebooks were trained):
  encoder output and codebook are both l2-normalised before the nearest-neighbour search. transformers'
  ``JanusVQVAEVectorQuantizer.forward`` searches with unnormalised vectors although its
  ``get_codebook_entry`` (decode) normalises; pass ``l2_norm=False`` to reproduce transformers exactly.
* Decoding goes through ``embedding -> normalise -> post_quant_conv -> decoder`` directly rather than
  ``JanusVQVAE.decode``, which only accepts the square ``num_patches`` grid; any (h, w) grid works.
* Pixels are in [-1, 1] (Janus' image processor uses mean = std = 0.5).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from xprompt.errors import CheckpointError

JANUS_PREFIX = "model.vqmodel."


class JanusVQBackend(nn.Module):
    """A transformers ``JanusVQVAE`` behind the ``encode_tensor`` / ``decode_tensor`` interface."""

    def __init__(self, vq: nn.Module, l2_norm: bool = True):
        super().__init__()
        self.vq = vq
        self.l2_norm = l2_norm

    @property
    def factor(self) -> int:
        return 2 ** (len(self.vq.config.channel_multiplier) - 1)

    @property
    def codebook_size(self) -> int:
        return int(self.vq.config.num_embeddings)

    def encode_tensor(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,H,W) in [-1,1] -> (B,h,w) long
        z = self.vq.quant_conv(self.vq.encoder(x))  # (B,D,h,w)
        b, d, h, w = z.shape
        z = z.permute(0, 2, 3, 1).reshape(-1, d)  # (N,D)
        cb = self.vq.quantize.embedding.weight  # (K,D)
        if self.l2_norm:
            z, cb = F.normalize(z, dim=-1), F.normalize(cb, dim=-1)
        dist = (cb * cb).sum(1)[None, :] - 2.0 * z @ cb.t()  # (N,K), ||z||^2 dropped (constant per row)
        return dist.argmin(dim=1).view(b, h, w)

    def decode_tensor(self, codes: torch.Tensor) -> torch.Tensor:  # (B,h,w) long -> (B,3,H,W)
        e = F.normalize(self.vq.quantize.embedding(codes), dim=-1)  # (B,h,w,D), as get_codebook_entry
        return self.vq.decoder(self.vq.post_quant_conv(e.permute(0, 3, 1, 2).contiguous()))


def _read_safetensors(path: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """All tensors (whose name starts with ``prefix``, prefix stripped) from a file or a sharded index."""
    from safetensors import SafetensorError, safe_open

    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (path / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise CheckpointError(
            f"{path}: no model.safetensors (or index) found; only safetensors weights are loaded"
        )
    out: dict[str, torch.Tensor] = {}
    for name in files:
        try:
            with safe_open(str(path / name), framework="pt") as f:
                for k in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                    if k.startswith(prefix):
                        out[k[len(prefix) :]] = f.get_tensor(k)
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{path / name} is not a readable safetensors file: {e}") from None
    return out


def load_janus_vq(path: str | Path, l2_norm: bool = True) -> JanusVQBackend:
    """A ``JanusVQVAE`` (standalone ``janus_vqgan`` or inside a full ``janus`` checkpoint) from ``path``."""
    from transformers import JanusVQVAE, JanusVQVAEConfig

    path = Path(path)
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}/config.json is missing or invalid: {e}") from None
    model_type = cfg.get("model_type")
    if model_type == "janus_vqgan":
        vq_cfg, prefix = cfg, ""
    elif model_type == "janus":
        if "vq_config" not in cfg:
            raise CheckpointError(f"{path}/config.json: a janus config without vq_config")
        vq_cfg, prefix = cfg["vq_config"], JANUS_PREFIX
    else:
        raise CheckpointError(
            f"{path}: unsupported model_type {model_type!r} (supported: janus_vqgan, janus)"
        )
    vq_cfg = {
        k: v for k, v in vq_cfg.items() if k not in ("model_type", "transformers_version", "architectures")
    }
    try:
        model = JanusVQVAE(JanusVQVAEConfig(**vq_cfg))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}/config.json: invalid Janus VQ config ({e})") from None
    state = _read_safetensors(path, prefix)
    want = model.state_dict()
    missing, unexpected = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the Janus VQ config: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for k, v in want.items():
        if state[k].shape != v.shape:
            raise CheckpointError(
                f"{path}: {k} has shape {tuple(state[k].shape)}, config expects {tuple(v.shape)}"
            )
    model.load_state_dict(state, strict=True)
    return JanusVQBackend(model.float().eval(), l2_norm=l2_norm)


def load_published(path: str | Path) -> nn.Module:
    """Dispatch on ``config.json``'s ``model_type``; returns a backend for ``VQTokenizer``."""
    return load_janus_vq(path)

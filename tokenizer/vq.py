"""VQ image tokenizer: convolutional encoder -> vector quantizer -> decoder, and the numpy-facing wrapper.

Design choices
* Architecture: a VQGAN/LlamaGen-style conv autoencoder (GroupNorm + SiLU residual blocks, strided-conv
  downsampling, nearest-upsample + conv upsampling), without attention: at the sizes this project ships
  (64x64 images, CPU training) attention buys little and costs a lot. ``factor`` = 2**levels; 4x, 8x and
  16x are supported (any power of two >= 2).
* Quantizer: LlamaGen-style low-dimensional (``code_dim``, default 8), l2-normalised codes. Encoder output
  and codebook rows are both normalised, so nearest neighbour = highest cosine similarity. This keeps
  codebook usage high; ``restart_dead_codes`` (used by the trainer) re-seeds codes that go unused.
* Losses are computed in ``tokenizer/vq_losses.py`` from what ``VQModel.forward`` returns (``z_e`` and the
  chosen codes ``e``, both normalised), so each term is defined (and tested) in one place.
* ``VQTokenizer`` is the contract other parts use: uint8 numpy in, int64 codes out, and back; batched,
  ``torch.no_grad``, CPU by default. It wraps any backend offering ``encode_tensor`` / ``decode_tensor``
  (our ``VQModel`` or an imported published tokenizer, see ``vq_import.py``).
* Checkpoint: ``config.json`` (``VQConfig``) + ``model.safetensors``, loaded strictly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xprompt.config_io import load_config, save_config
from xprompt.errors import CheckpointError, ConfigError, ImageInputError


@dataclass
class VQConfig:
    factor: int = 8  # spatial downsampling (power of two)
    codebook_size: int = 1024
    code_dim: int = 8  # low-dimensional codes (LlamaGen)
    l2_norm: bool = True  # l2-normalise codes and encoder outputs (cosine nearest neighbour)
    base_channels: int = 32  # channels at full resolution; doubled per level up to max_channels
    max_channels: int = 128
    num_res_blocks: int = 1  # residual blocks per level (encoder), +1 in the decoder
    mid_blocks: int = 2  # residual blocks at the lowest resolution
    beta: float = 0.25  # commitment weight
    patch: int = 2  # pixel-(un)shuffle at input/output: the convs never run at full resolution (speed)
    image_size: int = 64  # training resolution (informational; any multiple of factor works)

    def __post_init__(self):
        if self.factor < 2 or self.factor & (self.factor - 1):
            raise ConfigError(f"VQConfig.factor must be a power of two >= 2, got {self.factor}")
        if self.codebook_size < 2:
            raise ConfigError(f"VQConfig.codebook_size must be >= 2, got {self.codebook_size}")
        if self.patch not in (1, 2, 4) or self.patch > self.factor:
            raise ConfigError(f"VQConfig.patch must be 1, 2 or 4 and <= factor, got {self.patch}")
        if self.code_dim < 1 or self.base_channels < 8 or self.max_channels < self.base_channels:
            raise ConfigError(
                "VQConfig: need code_dim >= 1, base_channels >= 8, max_channels >= base_channels"
            )
        if self.base_channels % 8 or self.max_channels % 8:
            raise ConfigError("VQConfig: base_channels and max_channels must be multiples of 8 (GroupNorm)")

    @property
    def levels(self) -> int:
        """Number of 2x down/upsampling stages after the pixel-unshuffle patch."""
        return int(math.log2(self.factor // self.patch))

    def channels(self) -> list[int]:
        """Channels per resolution level, full resolution first (levels + 1 entries)."""
        return [min(self.base_channels * 2**i, self.max_channels) for i in range(self.levels + 1)]


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,cin,H,W) -> (B,cout,H,W)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Encoder(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        ch = cfg.channels()
        self.unshuffle = nn.PixelUnshuffle(cfg.patch)  # (B,3,H,W) -> (B,3p^2,H/p,W/p)
        self.conv_in = nn.Conv2d(3 * cfg.patch**2, ch[0], 3, padding=1)
        blocks: list[nn.Module] = []
        for i in range(cfg.levels + 1):
            cin = ch[max(i - 1, 0)]
            for j in range(cfg.num_res_blocks):
                blocks.append(ResBlock(cin if j == 0 else ch[i], ch[i]))
            if cfg.num_res_blocks == 0 and cin != ch[i]:
                blocks.append(nn.Conv2d(cin, ch[i], 1))
            if i < cfg.levels:
                blocks.append(nn.Conv2d(ch[i], ch[i], 4, stride=2, padding=1))  # halve H, W
        for _ in range(cfg.mid_blocks):
            blocks.append(ResBlock(ch[-1], ch[-1]))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = _norm(ch[-1])
        self.conv_out = nn.Conv2d(ch[-1], cfg.code_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,H,W) -> (B,code_dim,H/f,W/f)
        return self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(self.unshuffle(x))))))


class Decoder(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        ch = cfg.channels()
        self.conv_in = nn.Conv2d(cfg.code_dim, ch[-1], 3, padding=1)
        blocks: list[nn.Module] = [ResBlock(ch[-1], ch[-1]) for _ in range(cfg.mid_blocks)]
        for i in reversed(range(cfg.levels + 1)):
            cin = ch[i]  # the upsampling conv above already mapped ch[i+1] -> ch[i]
            for j in range(cfg.num_res_blocks + 1):
                blocks.append(ResBlock(cin if j == 0 else ch[i], ch[i]))
            if i > 0:
                blocks.append(nn.Upsample(scale_factor=2.0, mode="nearest"))
                blocks.append(nn.Conv2d(ch[i], ch[i - 1], 3, padding=1))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = _norm(ch[0])
        self.conv_out = nn.Conv2d(ch[0], 3 * cfg.patch**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(cfg.patch)  # (B,3p^2,H/p,W/p) -> (B,3,H,W)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B,code_dim,h,w) -> (B,3,h*f,w*f)
        return self.shuffle(self.conv_out(F.silu(self.norm_out(self.blocks(self.conv_in(z))))))


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantisation with a straight-through gradient.

    ``forward(z)`` returns ``(z_q, z_e, e, codes)``: ``z_e`` the (normalised) encoder output, ``e`` the
    chosen codebook vectors (with gradient to the codebook), ``z_q = z_e + sg[e - z_e]`` (value of ``e``,
    gradient of ``z_e``: the straight-through estimator) and ``codes`` the indices.
    """

    def __init__(self, codebook_size: int, code_dim: int, l2_norm: bool = True):
        super().__init__()
        self.l2_norm = l2_norm
        self.embedding = nn.Embedding(codebook_size, code_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        if l2_norm:
            nn.init.normal_(self.embedding.weight)

    def codebook(self) -> torch.Tensor:  # (K,D)
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.l2_norm else w

    def nearest(self, z_flat: torch.Tensor) -> torch.Tensor:  # (N,D) normalised -> (N,) long
        cb = self.codebook().detach()
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2 (the ||z||^2 term is constant per row)
        d = (cb * cb).sum(1)[None, :] - 2.0 * z_flat.detach() @ cb.t()  # (N,K)
        return d.argmin(dim=1)

    def forward(self, z: torch.Tensor):  # z: (B,D,h,w)
        b, d, h, w = z.shape
        z_flat = z.permute(0, 2, 3, 1).reshape(-1, d)  # (N,D)
        if self.l2_norm:
            z_flat = F.normalize(z_flat, dim=-1)
        codes = self.nearest(z_flat)  # (N,)
        e = self.codebook()[codes]  # (N,D), gradient flows to the codebook only
        z_q = z_flat + (e - z_flat).detach()  # straight-through: value e, gradient to z_e
        z_q = z_q.view(b, h, w, d).permute(0, 3, 1, 2)  # (B,D,h,w)
        return z_q, z_flat, e, codes.view(b, h, w)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:  # (B,h,w) long -> (B,D,h,w)
        return self.codebook()[codes].permute(0, 3, 1, 2)

    @torch.no_grad()
    def restart_dead_codes(self, z_flat: torch.Tensor, dead: torch.Tensor, noise: float = 0.01) -> int:
        """Re-seed codebook rows flagged in ``dead`` (K,) bool with random encoder outputs ``z_flat`` (N,D)."""
        idx = torch.nonzero(dead, as_tuple=False).flatten()
        if idx.numel() == 0 or z_flat.shape[0] == 0:
            return 0
        pick = torch.randint(0, z_flat.shape[0], (idx.numel(),), device=z_flat.device)
        new = z_flat[pick].detach().to(self.embedding.weight.dtype)
        new = new + noise * torch.randn_like(new)
        if not self.l2_norm:
            self.embedding.weight[idx] = new
        else:  # keep the stored rows at the typical norm of the live ones so Adam's step size fits
            scale = self.embedding.weight[~dead].norm(dim=1).mean() if (~dead).any() else 1.0
            self.embedding.weight[idx] = F.normalize(new, dim=-1) * scale
        return int(idx.numel())


VQ_FORMAT = "xprompt-vq/1"
_VQ_FILES = ("config.json", "model.safetensors")


def verify_vq(path: Path) -> bool:
    """Check a VQ checkpoint's files against its ``integrity.json`` (False: written before checksums)."""
    from xprompt.integrity import read_record, verify

    what, fix = f"VQ checkpoint {path}", "retrain it or copy it again"
    return verify(path, read_record(path, what, fix), what, fix)


class VQModel(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.code_dim, cfg.l2_norm)
        self.decoder = Decoder(cfg)

    @property
    def factor(self) -> int:
        return self.config.factor

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # x: (B,3,H,W) in [-1,1]
        z_q, z_e, e, codes = self.quantizer(self.encoder(x))
        return {"recon": self.decoder(z_q), "z_e": z_e, "e": e, "codes": codes}

    def encode_tensor(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,H,W) in [-1,1] -> (B,h,w) long
        return self.quantizer(self.encoder(x))[3]

    def decode_tensor(self, codes: torch.Tensor) -> torch.Tensor:  # (B,h,w) long -> (B,3,H,W) in ~[-1,1]
        return self.decoder(self.quantizer.lookup(codes))

    # -------------------------------------------------------------- checkpoints
    def save_pretrained(self, out_dir: str | Path) -> None:
        """Write ``config.json`` + ``model.safetensors`` into ``out_dir`` (each file atomically), then their
        sizes and SHA-256 as ``integrity.json`` (removed first, so an interrupted save is never "verified")."""
        from safetensors.torch import save

        from xprompt.integrity import RECORD_FILE, record_files, write_record
        from xprompt.io_utils import atomic_write_bytes

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / RECORD_FILE).unlink(missing_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_write_bytes(out / "model.safetensors", save(state, metadata={"format": "pt"}))
        save_config(self.config, out / "config.json")
        write_record(out, record_files(out, _VQ_FILES), VQ_FORMAT)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> VQModel:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        cfg_path, w_path = path / "config.json", path / "model.safetensors"
        if not path.is_dir() or not cfg_path.is_file() or not w_path.is_file():
            raise CheckpointError(
                f"VQ checkpoint not found or incomplete at {path} (need config.json and model.safetensors; "
                "train one with `xprompt train tokenizer`)"
            )
        verify_vq(path)
        model = cls(load_config(VQConfig, cfg_path))
        try:
            state = load_file(str(w_path))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{w_path} is not a readable safetensors file: {e}") from None
        missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
        if missing or unexpected:
            raise CheckpointError(
                f"{w_path} does not match its config.json: missing {sorted(missing)[:3]}, "
                f"unexpected {sorted(unexpected)[:3]}"
            )
        for k, v in model.state_dict().items():
            if state[k].shape != v.shape:
                raise CheckpointError(
                    f"{w_path}: {k} has shape {tuple(state[k].shape)}, config expects {tuple(v.shape)}"
                )
        model.load_state_dict(state, strict=True)
        return model.eval()


def images_to_array(images: Any) -> np.ndarray:
    """uint8 (B,H,W,3) array, a single HxWx3 array, or a list of PIL images / HxWx3 arrays -> uint8 (B,H,W,3)."""
    if isinstance(images, np.ndarray):
        arr = images[None] if images.ndim == 3 else images
    else:
        if not isinstance(images, Sequence) or len(images) == 0:
            raise ImageInputError("expected a uint8 (B,H,W,3) array or a non-empty list of images")
        items = [np.asarray(im.convert("RGB")) if hasattr(im, "convert") else np.asarray(im) for im in images]
        shapes = {a.shape for a in items}
        if len(shapes) != 1:
            raise ImageInputError(f"all images in a batch must have the same size, got {sorted(shapes)}")
        arr = np.stack(items)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ImageInputError(f"expected images of shape (B,H,W,3), got {arr.shape}")
    if arr.dtype != np.uint8:
        raise ImageInputError(f"expected uint8 images (0..255), got dtype {arr.dtype}")
    return np.ascontiguousarray(arr)  # torch.from_numpy refuses negative strides (flipped views)


class VQTokenizer:
    """The image tokenizer contract: ``encode`` uint8 images -> int64 codes; ``decode`` codes -> uint8 images."""

    def __init__(self, model: Any, batch_size: int = 64, device: str | torch.device = "cpu"):
        self.model = model.eval().to(device)
        self.batch_size = batch_size
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu") -> VQTokenizer:
        """Load our checkpoint, Chameleon's released VQGAN folder (``chameleon_vq_io``), or (if ``config.json``
        names a transformers model type) an imported one."""
        path = Path(path)
        from xprompt.tokenizer.chameleon_vq_io import is_chameleon_tokenizer_dir, load_chameleon_vq

        if is_chameleon_tokenizer_dir(path):  # Chameleon's released tokenizer folder (vqgan.yaml + weights)
            return cls(load_chameleon_vq(path), device=device)
        cfg_path = path / "config.json"
        if cfg_path.is_file():
            try:
                data = json.loads(cfg_path.read_text())
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{cfg_path} is not valid JSON ({e.msg})") from None
            if isinstance(data, dict) and "model_type" in data:
                from xprompt.tokenizer.vq_import import load_published

                return cls(load_published(path), device=device)
        return cls(VQModel.from_pretrained(path), device=device)

    @property
    def factor(self) -> int:
        return int(self.model.factor)

    @property
    def codebook_size(self) -> int:
        return int(self.model.codebook_size)

    @torch.no_grad()
    def encode(self, images: Any) -> np.ndarray:
        arr = images_to_array(images)  # (B,H,W,3) uint8
        b, h, w, _ = arr.shape
        f = self.factor
        if h == 0 or w == 0 or h % f or w % f:
            raise ImageInputError(
                f"image size {h}x{w} is not a positive multiple of the tokenizer factor {f}; "
                "resize it first (xprompt.tokenizer.image_io.fit_image)"
            )
        out = np.empty((b, h // f, w // f), dtype=np.int64)
        for i in range(0, b, self.batch_size):
            # np.array copies the slice: read-only inputs (views of PIL images) would make torch warn
            x = torch.as_tensor(np.array(arr[i : i + self.batch_size]), device=self.device)
            x = x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # (b,3,H,W) in [-1,1]
            out[i : i + len(x)] = self.model.encode_tensor(x).cpu().numpy()
        return out

    @torch.no_grad()
    def decode(self, codes: Any) -> np.ndarray:
        c = np.asarray(codes)
        if c.ndim == 2:
            c = c[None]
        if c.ndim != 3 or not np.issubdtype(c.dtype, np.integer) or 0 in c.shape:
            raise ImageInputError(f"expected integer codes of shape (B,h,w), got {c.dtype} {c.shape}")
        if c.min() < 0 or c.max() >= self.codebook_size:
            raise ImageInputError(
                f"image codes must be in [0, {self.codebook_size}), got range [{c.min()}, {c.max()}]"
            )
        b, h, w = c.shape
        f = self.factor
        out = np.empty((b, h * f, w * f, 3), dtype=np.uint8)
        for i in range(0, b, self.batch_size):
            t = torch.from_numpy(c[i : i + self.batch_size].astype(np.int64)).to(self.device)
            x = self.model.decode_tensor(t)  # (b,3,H,W)
            x = ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
            out[i : i + len(t)] = x.permute(0, 2, 3, 1).cpu().numpy()
        return out

"""Chameleon's VQGAN image tokenizer (the one Lumina-mGPT and X-Prompt use): our own module, the released layout.

Design choices
* Architecture = what the released ``tokenizer/vqgan.yaml`` describes (taming-transformers' VQGAN): a conv
  encoder of ``len(ch_mult)`` levels (``num_res_blocks`` GroupNorm(32)/SiLU residual blocks each, strided-conv
  downsampling with taming's asymmetric (0,1,0,1) padding), a middle of resblock / self-attention / resblock,
  ``quant_conv`` to ``embed_dim``, a plain (not l2-normalised) nearest-neighbour codebook of ``n_embed`` codes,
  ``post_quant_conv`` and a mirrored decoder (``num_res_blocks + 1`` blocks per level, nearest x2 upsampling +
  conv). Released: 8,192 codes of 256 dims, ch 128, ch_mult (1,1,2,2,4) -> 16x down, 512 px.
* Parameter names are the checkpoint's (``encoder.down.0.block.1.norm1.weight``, ``quantize.embedding.weight``,
  ``decoder.up.4.upsample.conv.weight``...), so loading is a strict ``load_state_dict`` with no renaming.
  Reading the files (yaml, Lightning ``.ckpt``, safetensors) lives in ``chameleon_vq_io.py``; this file does no I/O.
* Attention uses ``F.scaled_dot_product_attention`` (one head of ``C`` channels over the ``h*w`` positions,
  taming's formula): memory-efficient on a GPU at 32x32 latents, equal to the explicit softmax.
* ``forward`` returns what a VQGAN training step needs (reconstruction, pre-quantisation latents, chosen codes
  with the codebook gradient, indices); ``encode_tensor``/``decode_tensor``/``factor``/``codebook_size`` make it
  a ``VQTokenizer`` backend. Pixels are in [-1, 1], as Chameleon's image processor feeds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from xprompt.errors import ConfigError


@dataclass
class ChameleonVQConfig:
    """The ``model.params`` of ``vqgan.yaml``: ``embed_dim``, ``n_embed`` and the ``ddconfig`` keys."""

    embed_dim: int = 256  # codebook vector size
    n_embed: int = 8192  # codebook size
    z_channels: int = 256  # encoder output / decoder input channels (around quant_conv / post_quant_conv)
    ch: int = 128  # channels at full resolution
    ch_mult: list[int] = field(default_factory=lambda: [1, 1, 2, 2, 4])  # per level; factor = 2**(len-1)
    num_res_blocks: int = 2
    attn_resolutions: list[int] = field(default_factory=list)  # feature-map sides that get self-attention
    resolution: int = 512  # training resolution (decides where attn_resolutions apply; any multiple works)
    in_channels: int = 3
    out_ch: int = 3
    dropout: float = 0.0
    double_z: bool = False  # a KL-VAE option; a VQGAN never sets it

    def __post_init__(self):
        if self.double_z:
            raise ConfigError("ChameleonVQConfig.double_z=True describes a KL autoencoder, not a VQGAN")
        if not self.ch_mult or self.num_res_blocks < 1 or self.n_embed < 2:
            raise ConfigError(
                "ChameleonVQConfig needs a non-empty ch_mult, num_res_blocks >= 1, n_embed >= 2"
            )
        chans = [self.ch * m for m in self.ch_mult] + [self.ch]
        if any(c % 32 for c in chans):
            raise ConfigError(f"ChameleonVQConfig: channels {chans} must be multiples of 32 (GroupNorm(32))")

    @property
    def factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        if cin != cout:  # the released checkpoint uses 1x1 "nin" shortcuts
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,cin,H,W) -> (B,cout,H,W)
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return skip + h


class AttnBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,C,H,W) -> (B,C,H,W)
        b, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = (
            m(y).reshape(b, 1, c, h * w).transpose(2, 3) for m in (self.q, self.k, self.v)
        )  # (B,1,N,C)
        o = F.scaled_dot_product_attention(q, k, v)  # (B,1,N,C), scale C**-0.5 as taming
        return x + self.proj_out(o.transpose(2, 3).reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,C,H,W) -> (B,C,H/2,W/2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # taming pads right/bottom only


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,C,H,W) -> (B,C,2H,2W)
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: ``block`` (resnets), ``attn`` (after each block where the side is in
    ``attn_resolutions``), and optionally ``downsample``/``upsample`` (the checkpoint's names)."""

    def __init__(self, cin: int, cout: int, n_blocks: int, attn: bool, dropout: float):
        super().__init__()
        self.block = nn.ModuleList(
            ResnetBlock(cin if j == 0 else cout, cout, dropout) for j in range(n_blocks)
        )
        self.attn = nn.ModuleList(AttnBlock(cout) for _ in range(n_blocks if attn else 0))

    def run(self, x: torch.Tensor) -> torch.Tensor:
        for j, blk in enumerate(self.block):
            x = blk(x)
            if len(self.attn):
                x = self.attn[j](x)
        return x


def _mid(c: int, dropout: float) -> nn.Module:
    mid = nn.Module()
    mid.block_1, mid.attn_1, mid.block_2 = (
        ResnetBlock(c, c, dropout),
        AttnBlock(c),
        ResnetBlock(c, c, dropout),
    )
    return mid


def _run_mid(mid: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return mid.block_2(mid.attn_1(mid.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: ChameleonVQConfig):
        super().__init__()
        mults = [1, *cfg.ch_mult]
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        res = cfg.resolution
        for i in range(len(cfg.ch_mult)):
            lvl = _Level(
                cfg.ch * mults[i],
                cfg.ch * mults[i + 1],
                cfg.num_res_blocks,
                res in cfg.attn_resolutions,
                cfg.dropout,
            )
            if i != len(cfg.ch_mult) - 1:
                lvl.downsample = Downsample(cfg.ch * mults[i + 1])
                res //= 2
            self.down.append(lvl)
        c = cfg.ch * cfg.ch_mult[-1]
        self.mid = _mid(c, cfg.dropout)
        self.norm_out, self.conv_out = _norm(c), nn.Conv2d(c, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,H,W) -> (B,z_channels,H/f,W/f)
        h = self.conv_in(x)
        for lvl in self.down:
            h = lvl.run(h)
            if hasattr(lvl, "downsample"):
                h = lvl.downsample(h)
        h = _run_mid(self.mid, h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: ChameleonVQConfig):
        super().__init__()
        n = len(cfg.ch_mult)
        c = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, c, 3, padding=1)
        self.mid = _mid(c, cfg.dropout)
        res = cfg.resolution // cfg.factor
        levels: list[nn.Module] = [None] * n  # type: ignore[list-item]  # up[i] is level i (taming's order)
        for i in reversed(range(n)):
            cout = cfg.ch * cfg.ch_mult[i]
            lvl = _Level(c, cout, cfg.num_res_blocks + 1, res in cfg.attn_resolutions, cfg.dropout)
            if i != 0:
                lvl.upsample = Upsample(cout)
                res *= 2
            levels[i], c = lvl, cout
        self.up = nn.ModuleList(levels)
        self.norm_out, self.conv_out = _norm(c), nn.Conv2d(c, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B,z_channels,h,w) -> (B,3,h*f,w*f)
        h = _run_mid(self.mid, self.conv_in(z))
        for lvl in reversed(self.up):
            h = lvl.run(h)
            if hasattr(lvl, "upsample"):
                h = lvl.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Quantize(nn.Module):
    """Plain Euclidean nearest neighbour over ``embedding`` (K, D), straight-through gradient."""

    def __init__(self, n_embed: int, embed_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)  # taming's init

    def indices(self, z: torch.Tensor) -> torch.Tensor:  # (B,D,h,w) -> (B,h,w) long
        b, d, h, w = z.shape
        zf = z.permute(0, 2, 3, 1).reshape(-1, d)  # (N,D)
        cb = self.embedding.weight  # (K,D)
        dist = (zf * zf).sum(1, keepdim=True) + (cb * cb).sum(1)[None] - 2.0 * zf @ cb.t()  # (N,K)
        return dist.argmin(dim=1).view(b, h, w)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:  # (B,h,w) -> (B,D,h,w)
        return self.embedding(codes).permute(0, 3, 1, 2)


class ChameleonVQ(nn.Module):
    def __init__(self, cfg: ChameleonVQConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.quantize = Quantize(cfg.n_embed, cfg.embed_dim)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)
        self.decoder = Decoder(cfg)

    @property
    def factor(self) -> int:
        return self.config.factor

    @property
    def codebook_size(self) -> int:
        return self.config.n_embed

    def latents(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,H,W) in [-1,1] -> (B,embed_dim,H/f,W/f)
        return self.quant_conv(self.encoder(x))

    def encode_tensor(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,H,W) in [-1,1] -> (B,H/f,W/f) long
        return self.quantize.indices(self.latents(x))

    def decode_tensor(self, codes: torch.Tensor) -> torch.Tensor:  # (B,h,w) long -> (B,3,h*f,w*f) ~[-1,1]
        return self.decoder(self.post_quant_conv(self.quantize.lookup(codes)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """A training step's tensors: ``recon`` (straight-through), ``z`` (B,D,h,w) latents, ``e`` the chosen
        codes (gradient to the codebook), ``codes`` (B,h,w). Loss = recon + ||sg[z]-e||^2 + beta ||z-sg[e]||^2."""
        z = self.latents(x)
        codes = self.quantize.indices(z.detach())
        e = self.quantize.lookup(codes)
        z_q = z + (e - z).detach()
        return {"recon": self.decoder(self.post_quant_conv(z_q)), "z": z, "e": e, "codes": codes}

"""VQ-VAE training losses, named and defined as in the literature (van den Oord et al. 2017, eq. 3).

* reconstruction: mean squared error between the image and its reconstruction (plus an optional L1 term;
  both in [-1, 1] pixel units). MSE is what PSNR measures.
* codebook loss   = || sg[z_e] - e ||^2  -> moves the codebook vectors towards the encoder outputs; it is
  the only term that reaches the codebook.
* commitment loss = beta * || z_e - sg[e] ||^2 -> keeps the encoder committed to its codes; it reaches the
  encoder only. (taming-transformers once put ``beta`` on the codebook term instead; tests pin this down.)
* Perceptual (LPIPS) and adversarial losses are not used: LPIPS needs pretrained VGG weights, which cannot
  be downloaded here, and a GAN term is not worth its cost for 64x64 CPU training where PSNR is the target.

``z_e`` and ``e`` are the (normalised, when ``l2_norm``) encoder outputs and chosen codes returned by
``VQModel.forward``; the straight-through estimator lives in the quantizer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_loss(x: torch.Tensor, recon: torch.Tensor, l1_weight: float = 0.0) -> torch.Tensor:
    """MSE (+ ``l1_weight`` * L1) between images ``x`` and ``recon`` (both (B,3,H,W) in [-1,1])."""
    loss = F.mse_loss(recon, x)
    if l1_weight:
        loss = loss + l1_weight * F.l1_loss(recon, x)
    return loss


def codebook_loss(z_e: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """|| sg[z_e] - e ||^2, mean over elements: the gradient goes to the codebook vectors ``e`` only."""
    return F.mse_loss(e, z_e.detach())


def commitment_loss(z_e: torch.Tensor, e: torch.Tensor, beta: float = 0.25) -> torch.Tensor:
    """beta * || z_e - sg[e] ||^2, mean over elements: the gradient goes to the encoder output ``z_e`` only."""
    return beta * F.mse_loss(z_e, e.detach())


def vq_loss(
    x: torch.Tensor, out: dict[str, torch.Tensor], beta: float = 0.25, l1_weight: float = 0.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its named parts for one ``VQModel.forward`` output ``out``."""
    rec = reconstruction_loss(x, out["recon"], l1_weight)
    cb = codebook_loss(out["z_e"], out["e"])
    cm = commitment_loss(out["z_e"], out["e"], beta)
    total = rec + cb + cm
    parts = {"loss": total, "recon": rec, "codebook": cb, "commit": cm}
    return total, {k: float(v.detach()) for k, v in parts.items()}

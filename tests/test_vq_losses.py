"""VQ losses on their definitions: which parameters each term reaches, beta placement, straight-through."""

from __future__ import annotations

import pytest
import torch

from xprompt.tokenizer.vq import VectorQuantizer, VQConfig, VQModel
from xprompt.tokenizer.vq_losses import codebook_loss, commitment_loss, reconstruction_loss, vq_loss


def _setup(l2_norm: bool):
    torch.manual_seed(0)
    q = VectorQuantizer(16, 4, l2_norm=l2_norm)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)  # stands in for the encoder output
    z_q, z_e, e, codes = q(z)
    return q, z, z_q, z_e, e, codes


@pytest.mark.parametrize("l2_norm", [True, False])
def test_codebook_loss_reaches_codebook_only(l2_norm):
    q, z, _z_q, z_e, e, codes = _setup(l2_norm)
    codebook_loss(z_e, e).backward()
    assert z.grad is None or torch.count_nonzero(z.grad) == 0  # encoder gets nothing
    g = q.embedding.weight.grad
    used = torch.unique(codes)
    assert torch.count_nonzero(g[used]) > 0
    unused = torch.ones(16, dtype=torch.bool)
    unused[used] = False
    assert torch.count_nonzero(g[unused]) == 0


@pytest.mark.parametrize("l2_norm", [True, False])
def test_commitment_loss_reaches_encoder_only(l2_norm):
    q, z, _z_q, z_e, e, _codes = _setup(l2_norm)
    commitment_loss(z_e, e, beta=0.25).backward()
    assert q.embedding.weight.grad is None or torch.count_nonzero(q.embedding.weight.grad) == 0
    assert torch.count_nonzero(z.grad) > 0


def test_beta_scales_commitment_not_codebook():
    z_e = torch.randn(10, 4)
    e = torch.randn(10, 4)
    d = ((z_e - e) ** 2).mean()
    assert torch.allclose(codebook_loss(z_e, e), d)
    assert torch.allclose(commitment_loss(z_e, e, beta=0.25), 0.25 * d)
    assert torch.allclose(commitment_loss(z_e, e, beta=1.0), d)
    x, r = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.5)
    total, parts = vq_loss(x, {"recon": r, "z_e": z_e, "e": e}, beta=0.5)
    assert parts["recon"] == pytest.approx(0.25) and parts["commit"] == pytest.approx(
        0.5 * float(d), rel=1e-5
    )
    assert float(total) == pytest.approx(0.25 + 1.5 * float(d), rel=1e-5)


def test_reconstruction_loss_definition():
    x, r = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), -0.5)
    assert float(reconstruction_loss(x, r)) == pytest.approx(0.25)
    assert float(reconstruction_loss(x, r, l1_weight=2.0)) == pytest.approx(0.25 + 1.0)


def test_straight_through_estimator():
    q, z, z_q, _z_e, e, _codes = _setup(l2_norm=False)
    # forward value is the code vector ...
    assert torch.allclose(z_q.permute(0, 2, 3, 1).reshape(-1, 4), e.detach())
    # ... and the gradient of the quantised output passes unchanged to the encoder output
    g = torch.randn_like(z_q)
    z_q.backward(g)
    assert torch.allclose(z.grad, g)
    assert q.embedding.weight.grad is None or torch.count_nonzero(q.embedding.weight.grad) == 0


def test_nearest_code_is_chosen():
    q = VectorQuantizer(8, 3, l2_norm=True)
    cb = q.codebook().detach()
    z = (cb[[5, 2, 7]] * 3.0).T.reshape(1, 3, 1, 3)  # scaled copies: cosine picks the same rows
    assert q(z)[3].flatten().tolist() == [5, 2, 7]


def test_reconstruction_gradient_reaches_encoder_and_decoder_not_codebook():
    torch.manual_seed(0)
    m = VQModel(VQConfig(factor=4, codebook_size=8, code_dim=4, base_channels=8, max_channels=16, patch=1))
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    out = m(x)
    reconstruction_loss(x, out["recon"]).backward()
    assert m.encoder.conv_in.weight.grad.abs().sum() > 0  # through the straight-through estimator
    assert m.decoder.conv_out.weight.grad.abs().sum() > 0
    assert m.quantizer.embedding.weight.grad is None or m.quantizer.embedding.weight.grad.abs().sum() == 0

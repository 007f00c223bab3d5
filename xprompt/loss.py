"""Next-token loss on flagged targets, in fp32, with optional z-loss and text/image breakdown.

Design choices
* ``loss_mask[t]`` True means token ``t`` is a target, predicted from position ``t - 1`` (the convention of
  ``xprompt.sequence``); position 0 can never be a target.
* Cross-entropy is computed in fp32 whatever the logits dtype (bf16 logits lose too much in log-softmax).
* The mean is over all flagged targets of the batch (token-weighted, not sample-weighted): long image answers
  weigh more than short text answers, as in Lumina-mGPT.
* z-loss (Lumina-mGPT / PaLM): ``z_loss * logsumexp(logits)^2`` averaged over the same targets; it keeps the
  softmax normaliser near 0 and stabilises bf16 training. Lumina-mGPT uses ``1e-5``.
* The text/image breakdown (``image_mask`` marks image-code tokens) is detached, for logging only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def next_token_loss(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    loss_mask: torch.Tensor,
    z_loss: float = 0.0,
    image_mask: torch.Tensor | None = None,
) -> dict:
    """logits (B, T, V), input_ids (B, T), loss_mask (B, T) bool, image_mask (B, T) bool | None.

    Returns ``loss`` (scalar to backprop: ce + z), ``ce``, ``z_loss``, ``n_tokens`` and, when ``image_mask`` is
    given, ``text_loss``/``text_tokens``/``image_loss``/``image_tokens`` (detached; 0 loss when no tokens).
    """
    if logits.shape[:2] != input_ids.shape or loss_mask.shape != input_ids.shape:
        raise ValueError(
            f"shape mismatch: logits {tuple(logits.shape)}, input_ids {tuple(input_ids.shape)}, "
            f"loss_mask {tuple(loss_mask.shape)}"
        )
    pred = logits[:, :-1].float()  # (B, T-1, V) predicts tokens 1..T-1
    tgt = input_ids[:, 1:]  # (B, T-1)
    flag = loss_mask[:, 1:].bool()  # (B, T-1)
    n = flag.sum()
    denom = n.clamp(min=1).float()
    ce_tok = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), tgt.reshape(-1), reduction="none").view_as(tgt)
    ce = (ce_tok * flag).sum() / denom
    out = {"ce": ce, "n_tokens": n}
    total = ce
    if z_loss:
        lse = torch.logsumexp(pred, dim=-1)  # (B, T-1)
        z = z_loss * ((lse.pow(2) * flag).sum() / denom)
        total = total + z
        out["z_loss"] = z
    else:
        out["z_loss"] = torch.zeros((), device=logits.device)
    out["loss"] = total
    if image_mask is not None:
        img = image_mask[:, 1:].bool() & flag
        txt = flag & ~img
        ce_d = ce_tok.detach()
        for name, m in (("text", txt), ("image", img)):
            cnt = m.sum()
            out[f"{name}_tokens"] = cnt
            out[f"{name}_loss"] = (ce_d * m).sum() / cnt.clamp(min=1).float()
    return out

"""next_token_loss: exact values, z-loss, text/image split, and that text-only / image-only samples train."""

import numpy as np
import torch
import torch.nn.functional as F

from xprompt.loss import next_token_loss
from xprompt.model import XPromptModel
from xprompt.model_config import ModelConfig
from xprompt.sequence import build_sample
from xprompt.tokenizer.vocab import Vocabulary


def test_loss_matches_manual_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    ids = torch.randint(0, 11, (2, 5))
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)  # position 0 is never a target
    out = next_token_loss(logits, ids, mask)
    picks = [(0, 2), (0, 3), (1, 3), (1, 4)]
    manual = torch.stack([F.cross_entropy(logits[b, t - 1][None], ids[b, t][None]) for b, t in picks]).mean()
    torch.testing.assert_close(out["loss"], manual)
    assert int(out["n_tokens"]) == 4 and float(out["z_loss"]) == 0.0

    z = next_token_loss(logits, ids, mask, z_loss=1e-2)
    lse = torch.stack([logits[b, t - 1].logsumexp(-1) for b, t in picks])
    torch.testing.assert_close(z["z_loss"], 1e-2 * lse.pow(2).mean())
    torch.testing.assert_close(z["loss"], manual + 1e-2 * lse.pow(2).mean())


def test_text_image_split_and_bf16_logits():
    torch.manual_seed(1)
    logits = torch.randn(1, 6, 9).bfloat16()
    ids = torch.randint(0, 9, (1, 6))
    mask = torch.tensor([[0, 1, 1, 1, 1, 1]], dtype=torch.bool)
    img = torch.tensor([[0, 0, 1, 1, 0, 1]], dtype=torch.bool)
    out = next_token_loss(logits, ids, mask, image_mask=img)
    assert out["loss"].dtype == torch.float32
    assert int(out["text_tokens"]) == 2 and int(out["image_tokens"]) == 3
    total = (out["text_loss"] * 2 + out["image_loss"] * 3) / 5
    torch.testing.assert_close(total, out["ce"].detach())
    empty = next_token_loss(logits, ids, torch.zeros_like(mask), image_mask=img)
    assert float(empty["loss"]) == 0.0 and int(empty["image_tokens"]) == 0


class _Chars:
    """Minimal text tokenizer for tests: one id per character (a-z and space)."""

    def encode(self, s):
        return [" abcdefghijklmnopqrstuvwxyz".index(c) for c in s]

    def decode(self, ids):
        return "".join(" abcdefghijklmnopqrstuvwxyz"[i] for i in ids)


def _train(model, seq, vocab, steps=30):
    ids = torch.from_numpy(seq.ids)[None]
    mask = torch.from_numpy(seq.loss)[None]
    img = vocab.is_image(ids)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        out = next_token_loss(model(ids), ids, mask, z_loss=1e-5, image_mask=img)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["ce"].detach()))
    return losses, out


def test_text_only_and_image_only_samples_train():
    vocab = Vocabulary.build(text_size=27, num_image_codes=16, num_xp=4, max_grid=8)
    tok = _Chars()
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=vocab.size, dim=32, n_layers=2, n_heads=4, n_kv_heads=4, ffn_dim=64)
    text = build_sample(vocab, tok, mode="none", query=np.zeros((2, 2), np.int64), answer="a red square")
    losses, out = _train(XPromptModel(cfg), text, vocab)
    assert losses[-1] < 0.3 * losses[0] and int(out["text_tokens"]) > 0 and int(out["image_tokens"]) == 0
    rng = np.random.default_rng(0)
    image = build_sample(vocab, tok, mode="none", query="make it blue", answer=rng.integers(0, 16, (3, 3)))
    losses, out = _train(XPromptModel(cfg), image, vocab)
    assert losses[-1] < 0.3 * losses[0] and int(out["image_tokens"]) == 9

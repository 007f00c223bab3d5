"""Shared tiny fixtures for the generation tests (a char tokenizer, a small vocabulary and model)."""

import torch
from xprompt.tokenizer.vocab import Vocabulary

from xprompt.config import ModelConfig
from xprompt.model import XPromptModel

CHARS = " abcdefghijklmnopqrstuvwxyz"


class CharTok:
    """One id per character (space, a-z): enough to build text items in tests."""

    def encode(self, s):
        return [CHARS.index(c) for c in s]

    def decode(self, ids):
        return "".join(CHARS[i] for i in ids)


def tiny_vocab():
    return Vocabulary.build(text_size=len(CHARS), num_image_codes=16, num_xp=4, max_grid=8)


def tiny_model(vocab, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=vocab.size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=48, **kw)
    return XPromptModel(cfg).eval()


def codes(rng, h, w, k=16):
    return rng.integers(0, k, (h, w))

"""Shared tiny fixtures for the generation tests (a char tokenizer, a small vocabulary and model)."""

import numpy as np
import torch

from xprompt.model import XPromptModel
from xprompt.model_config import ModelConfig
from xprompt.tokenizer.vocab import Vocabulary

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


def tiny_checkpoint(path, *, image_size=32, seed=0):
    """A random tiny model saved like a trained one: grid:8 image tokenizer (512 codes), the shipped BPE."""
    from xprompt.checkpoint import save_pretrained
    from xprompt.paths import shipped
    from xprompt.tokenizer.text import TextTokenizer

    bpe = shipped("bpe") / "tokenizer.json"
    assert TextTokenizer.load(bpe).vocab_size <= 4096
    # a fixed text range (not the BPE's current size) keeps the vocabulary stable if the BPE is retrained
    vocab = Vocabulary.build(text_size=4096, num_image_codes=512, num_xp=4, max_grid=16)
    model = tiny_model(vocab, seed=seed)
    extra = {"tokenizers": {"vq": "grid:8", "bpe": str(bpe)}, "image_size": image_size}
    return save_pretrained(path, model, vocab, extra=extra)


def write_png(path, h, w, seed=0):
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def scene_image(size=32):
    """A fixed procedural scene (uint8 (size, size, 3)): a medium blue circle top left, a large red square
    (rotated) bottom right, a small yellow circle top right, on flat grey -- for instruction masks."""
    from xprompt.train.scenes import Background, Obj, Scene, render

    objs = (
        Obj("circle", "blue", "medium", (0, 0)),
        Obj("square", "red", "large", (2, 2), angle=0.2),
        Obj("circle", "yellow", "small", (0, 2)),
    )
    return render(Scene(Background("flat", "grey"), objs), size)

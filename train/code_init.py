"""Image-code embeddings initialised from what each code looks like (training's ``embed_init: "vq"``).

Design choices
* A randomly initialised embedding treats the 1,024 image codes as unrelated symbols: the model must learn
  from scratch that two codes are both "dark red", and a colour task (invert, palette map, channel swap) must
  be learned code by code. Starting the image rows from a description of each code lets similar codes share
  statistics from the first step (issue 13's "embeddings from the VQ codebook").
* The description is read off the image tokenizer itself, through ``decode`` only (so it works for any
  tokenizer, including the parameter-free grid tokenizer of the tests): a 3 x 3 grid of one code is decoded
  and the centre cell (away from the decoder's borders) is pooled into 2 x 2 quadrant colours -> 12 numbers
  per code (its colour and coarse gradient), standardised per feature.
* A fixed random projection (seeded) maps them to the model width, scaled to the model's ``init_std``; a small
  random part keeps codes with near-identical looks distinguishable. Input embeddings and the image rows of
  the (untied) LM head both start this way; both stay free parameters after initialisation.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch


def code_features(tokenizer, batch: int = 128) -> np.ndarray:
    """(K, 12) float32: the 2 x 2 quadrant colours (0..1) of every code, decoded on its own."""
    k, f = int(tokenizer.codebook_size), int(tokenizer.factor)
    feats = np.empty((k, 12), np.float32)
    for lo in range(0, k, batch):
        codes = np.arange(lo, min(lo + batch, k))
        grid = np.broadcast_to(codes[:, None, None], (len(codes), 3, 3)).copy()  # (n, 3, 3)
        img = np.asarray(tokenizer.decode(grid), np.float32) / 255.0  # (n, 3f, 3f, 3)
        centre = img[:, f : 2 * f, f : 2 * f]  # (n, f, f, 3)
        h = max(1, f // 2)
        quads = [centre[:, :h, :h], centre[:, :h, h:], centre[:, h:, :h], centre[:, h:, h:]]
        feats[lo : lo + len(codes)] = np.concatenate([q.mean(axis=(1, 2)) for q in quads], axis=1)
    return feats


def projected_rows(
    features: np.ndarray, dim: int, std: float, seed: int = 0, noise: float = 0.25
) -> torch.Tensor:
    """(K, dim) rows: standardised ``features`` through a fixed random projection, scaled to ``std`` per
    entry, plus ``noise`` x ``std`` of independent noise."""
    g = np.random.default_rng(seed)
    x = (features - features.mean(0)) / (features.std(0) + 1e-6)  # (K, F)
    w = g.standard_normal((features.shape[1], dim)) / np.sqrt(features.shape[1])  # (F, dim)
    rows = x @ w  # (K, dim), ~unit variance per entry
    rows = rows / (rows.std() + 1e-8) + noise * g.standard_normal(rows.shape)
    return torch.from_numpy((std * rows / np.sqrt(1 + noise**2)).astype(np.float32))


@torch.no_grad()
def init_image_rows(model, vocab, features: np.ndarray, seed: int = 0) -> None:
    """Set the image-code rows of ``model``'s input embedding and LM head from ``features`` (K, F)."""
    ids = torch.as_tensor(np.asarray(vocab.image_ids), dtype=torch.long)
    if features.shape[0] != len(ids):
        raise ValueError(f"{features.shape[0]} code features for a vocabulary of {len(ids)} image codes")
    std, dim = float(model.cfg.init_std), int(model.cfg.dim)
    emb = model.embed_tokens.weight
    emb[ids] = projected_rows(features, dim, std, seed).to(emb.dtype)
    head = model.lm_head.weight
    head[ids] = projected_rows(features, dim, std, seed + 1).to(head.dtype)


def prepare_model(model, cfg, vocab, meta: dict) -> str:
    """Apply the training config's initialisation to a freshly built model; returns what was done (for run.json).

    ``init_from`` loads an exported model (same architecture and vocabulary, strictly): the next leg of a long
    run starts from the previous leg's weights with a fresh optimizer and a short re-warmup. Otherwise
    ``embed_init="vq"`` sets the image-code rows from the data's image tokenizer."""
    from xprompt.checkpoint import load_pretrained
    from xprompt.errors import XPromptError

    if cfg.init_from:
        src, src_vocab = load_pretrained(cfg.init_from, dtype=torch.float32)
        same = dataclasses.replace(  # the name is a label (an imported Chameleon says "hf-chameleon")
            src.cfg,
            gradient_checkpointing=model.cfg.gradient_checkpointing,
            attn_impl=model.cfg.attn_impl,
            name=model.cfg.name,
        )
        if same != model.cfg:
            raise XPromptError(f"init_from={cfg.init_from}: its model config differs from this run's")
        if src_vocab.fingerprint() != vocab.fingerprint():
            raise XPromptError(f"init_from={cfg.init_from}: its vocabulary differs from the training data's")
        model.load_state_dict(src.state_dict(), strict=True)
        return f"weights of {cfg.init_from}"
    if cfg.embed_init == "vq":
        from xprompt.tokenizer.loading import load_image_tokenizer

        path = ((meta.get("tokenizers.json") or {}).get("image_tokenizer") or {}).get("path")
        if not path:
            raise XPromptError(
                "embed_init='vq' needs the data's image tokenizer, and tokenizers.json names none"
            )
        init_image_rows(model, vocab, code_features(load_image_tokenizer(path)), seed=cfg.seed)
        return f"image-code rows from {path}"
    return "random"

"""The published stack: a Chameleon / Lumina-mGPT HF folder + Chameleon's tokenizer folder -> model, vocabulary,
text tokenizer and image tokenizer ready for ``XPrompt``.

Design choices
* Files, as released: the model folder is HF format (``config.json`` of ``model_type`` chameleon with a
  ``vocabulary_map``, ``model*.safetensors``); the tokenizer folder holds ``text_tokenizer.json``,
  ``vqgan.yaml`` and ``vqgan.ckpt`` (or the ``vqgan.safetensors`` of ``xprompt convert vqgan``). The tokenizer
  folder is the one given, else ``MODEL/tokenizer``, ``MODEL/../tokenizer`` or ``MODEL/../chameleon/tokenizer``
  (Lumina-mGPT's ``ckpts/chameleon/tokenizer``).
* The vocabulary is mapped by *name*: ``text_tokenizer.json``'s vocabulary (name -> id, added tokens included)
  must agree with the config's ``vocabulary_map`` on every name and cover the model's embedding rows; any
  disagreement is refused (a tokenizer of another release would silently scramble every id).
* X-Prompt tokens are ``num_xp`` *new* ids appended after Chameleon's 65,536 (its reserved tokens stay free
  for what Lumina-mGPT already uses them for: ``<reserved08803>`` end of row, ``<reserved08804+n>`` sizes).
  The embedding and head are resized; new embedding rows start at the mean of the text-token rows (a neutral
  point inside the distribution the layers were trained on, so adding them leaves every other logit
  unchanged and gives a stable first fine-tuning step); new head rows start at the mean head row (an XP
  token is never a target; its logit starts at the average logit, far below the top candidates).
* Layout and sampling follow Lumina-mGPT (``xprompt.sequence`` / ``XPrompt``): ``<racm3:break> <h> <w> rows
  with <reserved08803> <eoss>``, 16x codes, image top-k 2000 for text-to-image and 200 for image tasks, text
  top-k 10, temperature 1.0. ``image_size`` defaults to 512 (Lumina-mGPT-7B-512; pass 768 for the 768 models).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from xprompt.errors import CheckpointError

DEFAULT_IMAGE_SIZE = 512
TOKENIZER_CANDIDATES = ("tokenizer", "../tokenizer", "../chameleon/tokenizer")


def find_tokenizer_dir(model_dir, tokenizer=None) -> Path:
    """The Chameleon tokenizer folder of ``model_dir`` (``tokenizer`` if given)."""
    model_dir = Path(model_dir)
    cands = [Path(tokenizer)] if tokenizer is not None else [model_dir / c for c in TOKENIZER_CANDIDATES]
    for c in cands:
        if (c / "text_tokenizer.json").is_file() and (c / "vqgan.yaml").is_file():
            return c
    tried = ", ".join(str(c) for c in cands)
    raise CheckpointError(
        f"no Chameleon tokenizer folder (text_tokenizer.json + vqgan.yaml + vqgan.ckpt) for {model_dir} "
        f"(tried {tried}); pass --tokenizer DIR"
    )


def tokenizer_names(path) -> dict[str, int]:
    """name -> id of a ``text_tokenizer.json`` (model vocabulary and added tokens)."""
    try:
        data = json.loads(Path(path).read_text())
        names = dict(data["model"]["vocab"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is not a readable tokenizers JSON with model.vocab ({e!r})") from None
    for t in data.get("added_tokens") or []:
        names[t["content"]] = int(t["id"])
    return names


def check_names(vmap: dict[str, int], names: dict[str, int], rows: int, where: str) -> None:
    """Refuse a text tokenizer that disagrees with the model's ``vocabulary_map`` or exceeds its rows."""
    wrong = sorted(n for n in set(vmap) & set(names) if int(vmap[n]) != int(names[n]))
    if wrong:
        n = wrong[0]
        raise CheckpointError(
            f"{where}: the text tokenizer maps {len(wrong)} name(s) to other ids than the model's "
            f"vocabulary_map (e.g. {n!r}: {names[n]} vs {vmap[n]}); use the tokenizer released with these weights"
        )
    only = sorted(set(vmap) - set(names))
    if only:
        raise CheckpointError(
            f"{where}: {len(only)} name(s) of the model's vocabulary_map (e.g. {only[0]!r}) "
            "are not in the text tokenizer; use the tokenizer released with these weights"
        )
    top = max(names.values()) + 1
    if top > rows:
        raise CheckpointError(
            f"{where}: the text tokenizer has ids up to {top - 1} but the model has {rows} rows"
        )


@torch.no_grad()
def add_xp_rows(model, vocab) -> None:
    """Resize ``model``'s embedding and head to ``vocab.size`` rows; rows past the old size become the XP
    tokens, initialised as the module docstring says."""
    old = model.embed_tokens.weight.shape[0]
    new = vocab.size
    if new == old:
        return
    text = torch.as_tensor([i for i in range(old) if vocab.is_text(i)], dtype=torch.long)
    emb, head = model.embed_tokens.weight, model.lm_head.weight  # (V, D) each
    emb_rows = emb[text].float().mean(0, keepdim=True).to(emb.dtype).expand(new - old, -1)
    head_rows = head.float().mean(0, keepdim=True).to(head.dtype).expand(new - old, -1)
    model.embed_tokens.weight = torch.nn.Parameter(torch.cat([emb, emb_rows], 0))
    model.lm_head.weight = torch.nn.Parameter(torch.cat([head, head_rows], 0))
    model.embed_tokens.num_embeddings = model.lm_head.out_features = new
    model.cfg = model.cfg.replace(vocab_size=new)


def load_published(
    model_dir, tokenizer=None, *, num_xp: int = 32, dtype=None, device="cpu", max_grid: int = 64
):
    """``(model, vocab, text_tok, image_tok, tokenizer_dir)`` of a published Chameleon / Lumina-mGPT stack."""
    from transformers import AutoConfig

    from xprompt.checkpoint import load_hf_checkpoint
    from xprompt.tokenizer.text import TextTokenizer
    from xprompt.tokenizer.vq import VQTokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only; transformers must never ask the hub
    model_dir = Path(model_dir)
    tok_dir = find_tokenizer_dir(model_dir, tokenizer)
    names = tokenizer_names(tok_dir / "text_tokenizer.json")
    hf_cfg = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    vmap = dict(getattr(hf_cfg, "vocabulary_map", None) or {})
    check_names(vmap or names, names, int(hf_cfg.vocab_size), str(tok_dir / "text_tokenizer.json"))
    model, vocab = load_hf_checkpoint(
        model_dir, num_xp=num_xp, dtype=dtype, vocabulary_map=vmap or names, xp_start=None, max_grid=max_grid
    )
    add_xp_rows(model, vocab)
    image_tok = VQTokenizer.from_pretrained(tok_dir, device=device)
    text_tok = TextTokenizer.load(tok_dir / "text_tokenizer.json")
    return model.to(device), vocab, text_tok, image_tok, tok_dir

"""Compiled task prompts (``.xpt``): the kept KV cache of an in-context example, reusable for many queries.

Design choices
* Compiling runs PREFIX + IE + XP once (stage A of ``xprompt.generation.prefill``) and keeps only the PREFIX
  and XP entries: the example is read once and stored as S + |PREFIX| cache positions per layer. A query then
  continues from it exactly as in-context generation would (same logits; tested).
  A ``full``-layout prompt (no XP tokens) can be compiled too; nothing is dropped then.
* File = safetensors (tensors ``k.i``/``v.i`` per layer, ``key_mask``, ``next_pos``, ``segs``) with one
  metadata entry ``xprompt`` holding a JSON header: format, model fingerprint, vocabulary fingerprint, and
  info (instruction, number of examples, layout), and ``tensors_sha256`` (``xprompt.integrity.tensor_digest``:
  a damaged or altered file is refused as such on load; files from before it skip the check). Written
  atomically. A file that is not safetensors (e.g. a pickle) is refused by the parser without being run.
* The model fingerprint hashes the model config *and* a strided sample of every weight tensor, so two models
  with the same shape but different training runs are told apart; loading a prompt with another model or
  vocabulary raises a one-line ``XPromptError``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from xprompt.config_io import config_to_dict
from xprompt.errors import IntegrityError, XPromptError
from xprompt.integrity import tensor_digest
from xprompt.io_utils import atomic_write_bytes
from xprompt.kv_cache import KVCache
from xprompt.masks import kept_entries
from xprompt.sequence import Seg, TokenSequence

FORMAT = "xprompt-task/1"
_SAMPLE = 4096  # weight elements hashed per tensor


def model_fingerprint(model) -> str:
    """Hash of the config and a strided sample of every parameter (cheap even for 7B models)."""
    h = hashlib.sha256(json.dumps(config_to_dict(model.cfg), sort_keys=True).encode())
    with torch.no_grad():
        for name, p in sorted(model.state_dict().items()):
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // _SAMPLE)
            h.update(name.encode())
            h.update(flat[::step][:_SAMPLE].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class CompiledPrompt:
    cache: KVCache  # batch 1, kept entries only
    segs: torch.Tensor  # (1, S) segment of every kept entry
    model_fingerprint: str
    vocab_fingerprint: str
    info: dict = field(default_factory=dict)

    @property
    def length(self) -> int:
        return self.cache.length

    def check(self, model, vocab, where: str = "the task prompt") -> None:
        if vocab.fingerprint() != self.vocab_fingerprint:
            raise XPromptError(
                f"{where} was compiled for another vocabulary ({self.vocab_fingerprint}, this model "
                f"uses {vocab.fingerprint()}); recompile it with this model"
            )
        fp = model_fingerprint(model)
        if fp != self.model_fingerprint:
            raise XPromptError(
                f"{where} was compiled with another model (fingerprint {self.model_fingerprint}, "
                f"this one is {fp}); recompile it with `xprompt compile-prompt`"
            )

    def save(self, path) -> Path:
        from safetensors.torch import save

        path = Path(path)
        header = {
            "format": FORMAT,
            "model_fingerprint": self.model_fingerprint,
            "vocab_fingerprint": self.vocab_fingerprint,
            "n_layers": self.cache.n_layers,
            "info": self.info,
        }
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.cache.state_dict().items()}
        tensors["segs"] = self.segs.detach().cpu().to(torch.int8).contiguous()
        header["tensors_sha256"] = tensor_digest(tensors)
        atomic_write_bytes(path, save(tensors, metadata={"xprompt": json.dumps(header, sort_keys=True)}))
        return path

    @classmethod
    def load(cls, path, model=None, vocab=None, device="cpu") -> CompiledPrompt:
        """Read a ``.xpt`` file; with ``model`` and ``vocab`` it is checked against them (one-line errors)."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise XPromptError(f"task prompt file not found: {path}")
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except (SafetensorError, OSError, ValueError) as e:
            raise XPromptError(f"{path} is not a readable task prompt ({str(e).splitlines()[0]})") from None
        try:
            header = json.loads(meta["xprompt"])
        except (KeyError, json.JSONDecodeError):
            raise XPromptError(f"{path} is not an xprompt task prompt (no xprompt header)") from None
        if header.get("format") != FORMAT:
            raise XPromptError(
                f"{path}: unsupported task prompt format {header.get('format')!r} (expected {FORMAT})"
            )
        want = header.get("tensors_sha256")
        if want is not None and tensor_digest(tensors) != want:
            raise IntegrityError(
                f"{path}: the task prompt's tensors were modified or corrupted (SHA-256 differs from the one "
                "recorded when it was compiled); recompile it with `xprompt compile-prompt`"
            )
        try:
            cache = KVCache.from_state_dict(tensors, int(header["n_layers"]))
        except KeyError as e:
            raise XPromptError(f"{path}: damaged task prompt (missing tensor {e})") from None
        except ValueError as e:
            raise XPromptError(f"{path}: damaged task prompt ({e})") from None
        cp = cls(
            cache,
            tensors["segs"].long(),
            header["model_fingerprint"],
            header["vocab_fingerprint"],
            header.get("info", {}),
        )
        if model is not None and vocab is not None:
            cp.check(model, vocab, where=str(path))
        return cp


@torch.no_grad()
def compile_prompt(model, vocab, context: TokenSequence, info: dict | None = None) -> CompiledPrompt:
    """Compile a context (PREFIX + IE [+ XP], no TD) into a ``CompiledPrompt``."""
    from xprompt.generation import append_block

    if len(context) == 0 or (context.segs == int(Seg.TD)).any():
        raise XPromptError("a task prompt holds the instruction and examples only (no query)")
    if vocab.size != model.cfg.vocab_size:
        raise XPromptError("the vocabulary does not belong to this model")
    cache = model.new_cache()
    append_block(model, cache, [context.ids], vocab.pad_id, logits=False)
    segs = torch.as_tensor(context.segs.astype(np.int64), device=cache.key_mask.device)[None]  # (1, S)
    keep = kept_entries(context.segs)
    if len(keep) < len(context):  # an XP layout: its IE entries are dropped
        keep = torch.as_tensor(keep, device=segs.device)
        cache.keep(keep)
        segs = segs[:, keep]
    layout = "xp" if (context.segs == int(Seg.XP)).any() else "full"
    return CompiledPrompt(
        cache,
        segs,
        model_fingerprint(model),
        vocab.fingerprint(),
        dict(info or {}, layout=layout, context_tokens=len(context)),
    )

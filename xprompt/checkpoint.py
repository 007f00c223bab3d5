"""Model checkpoints: save/load (strict), and import of transformers/Chameleon HF-format weights.

Layout of a checkpoint directory (written atomically with ``xprompt.io_utils.atomic_dir``)::

    config.json        ModelConfig (strict: unknown keys are an error)
    model.safetensors  weights (fp32, or bf16 when asked); parameter names are ours
    vocab.json         the Vocabulary the ids refer to
    meta.json          {"format": "xprompt-model/1", "vocab_fingerprint", "dtype", "extra": {...}}
                       ``extra`` records e.g. the tokenizer dirs the model was trained with, training info.

Loading checks, each with a one-line ``CheckpointError``: files present; config valid; vocabulary size equals
``config.vocab_size`` and the fingerprint in meta.json; the tensors match the model exactly (no missing,
unexpected or mis-shaped weight). No pickles anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from xprompt.config import ModelConfig
from xprompt.configs import config_from_dict, config_to_dict
from xprompt.errors import CheckpointError, XPromptError
from xprompt.io_utils import atomic_dir

FORMAT = "xprompt-model/1"
_FILES = ("config.json", "model.safetensors", "vocab.json", "meta.json")


def save_pretrained(path, model, vocab, *, extra: dict | None = None, dtype: torch.dtype | None = None,
                    overwrite: bool = True) -> Path:
    """Write ``model`` (an ``XPromptModel``) and ``vocab`` to directory ``path`` atomically.

    ``dtype=torch.bfloat16`` halves the file; floating tensors are cast, the config is unchanged. An existing
    directory is replaced only if it is an xprompt checkpoint (has meta.json) and ``overwrite`` is true.
    """
    from safetensors.torch import save_file

    if vocab.size != model.cfg.vocab_size:
        raise CheckpointError(f"vocabulary has {vocab.size} ids but the model was built for {model.cfg.vocab_size}")
    path = Path(path)
    sd = {}
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        sd[k] = v.contiguous()
    meta = {"format": FORMAT, "vocab_fingerprint": vocab.fingerprint(),
            "dtype": str(dtype or next(iter(sd.values())).dtype).replace("torch.", ""), "extra": extra or {}}
    with atomic_dir(path, overwrite=overwrite, marker="meta.json") as tmp:
        (tmp / "config.json").write_text(json.dumps(config_to_dict(model.cfg), indent=2, sort_keys=True) + "\n")
        save_file(sd, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
        vocab.save(tmp / "vocab.json")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def read_meta(path) -> dict:
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is not an xprompt model checkpoint (no meta.json)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path / 'meta.json'} is not valid JSON ({e.msg})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {meta.get('format')!r} (expected {FORMAT})")
    return meta


def load_config_and_vocab(path):
    """(ModelConfig, Vocabulary, meta) of a checkpoint directory, cross-checked, without reading weights."""
    from xprompt.tokenizer.vocab import Vocabulary

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"model checkpoint directory not found: {path}")
    missing = [f for f in _FILES if not (path / f).is_file()]
    if missing:
        raise CheckpointError(f"{path} is not a complete xprompt checkpoint: missing {', '.join(missing)}")
    meta = read_meta(path)
    try:
        cfg = config_from_dict(ModelConfig, json.loads((path / "config.json").read_text()),
                               where=str(path / "config.json"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path / 'config.json'} is not valid JSON ({e.msg})") from None
    except XPromptError as e:
        raise CheckpointError(str(e)) from None
    try:
        vocab = Vocabulary.load(path / "vocab.json")
    except XPromptError as e:
        raise CheckpointError(f"{path / 'vocab.json'}: {e}") from None
    if vocab.size != cfg.vocab_size:
        raise CheckpointError(f"{path}: vocab.json has {vocab.size} ids but config.json says vocab_size="
                              f"{cfg.vocab_size}; the vocabulary does not belong to these weights")
    if meta.get("vocab_fingerprint") != vocab.fingerprint():
        raise CheckpointError(f"{path}: vocab.json (fingerprint {vocab.fingerprint()}) is not the vocabulary the "
                              f"weights were saved with ({meta.get('vocab_fingerprint')})")
    return cfg, vocab, meta


def load_state_strict(model, sd: dict, where: str) -> None:
    """``load_state_dict`` that reports missing/unexpected/mis-shaped tensors as one ``CheckpointError`` line."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in sd
              and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {unexpected[0]})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es) (e.g. {shapes[0]})")
        raise CheckpointError(f"{where}: weights do not match the model config: {'; '.join(parts)}")
    if any(p.is_meta for p in model.parameters()):
        model.load_state_dict(sd, strict=True, assign=True)
        model.rotary.reset(device=next(iter(sd.values())).device)  # non-persistent buffer, rebuilt
    else:
        model.load_state_dict(sd, strict=True)


def load_pretrained(path, dtype: torch.dtype | None = None, *, device: str | torch.device = "cpu",
                    attn_impl: str | None = None):
    """Load ``(XPromptModel in eval mode, Vocabulary)`` from a checkpoint directory, strictly.

    ``dtype`` casts the weights (default: as stored, bf16 files stay bf16); ``attn_impl`` overrides the saved
    attention implementation (e.g. load a GPU-trained 'flex' model on the CPU with 'sdpa').
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from xprompt.model import XPromptModel

    path = Path(path)
    cfg, vocab, _ = load_config_and_vocab(path)
    if attn_impl is not None:
        cfg = cfg.replace(attn_impl=attn_impl)
    elif cfg.attn_impl != "sdpa" and not torch.cuda.is_available():
        cfg = cfg.replace(attn_impl="sdpa")  # a GPU fast path saved in the config must not block CPU use
    try:
        sd = load_file(str(path / "model.safetensors"), device=str(device))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path / 'model.safetensors'} is unreadable ({str(e).splitlines()[0]})") from None
    with torch.device("meta"):
        model = XPromptModel(cfg)
    load_state_strict(model, sd, str(path))
    if dtype is not None:
        model = model.to(dtype)
    return model.eval(), vocab

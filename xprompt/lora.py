"""Parameter-efficient fine-tuning with ``peft`` LoRA, and merging adapters back into plain weights.

Design choices
* What trains (``LoraSpec``): LoRA adapters (rank ``r``, scale ``alpha / r``) on the attention projections
  (``q_proj k_proj v_proj o_proj``) and the SwiGLU projections (``gate_proj up_proj down_proj``) of every
  layer; the new X-Prompt token embedding rows through peft's ``trainable_token_indices`` (a delta on those
  rows only, the other 65k rows stay frozen); and the LM head through ``modules_to_save`` (the head decides
  image codes, which X-Prompt's tasks retarget). Everything else is frozen. On the 7B shape at r=16 this is
  ~309 M trainable parameters, 4.4 % (``xprompt.train.scale``).
* The wrapped model is a ``peft.PeftModel`` over our ``XPromptModel``; its forward is the model's, so the
  trainer, losses and masks are unchanged. peft is imported lazily (only LoRA runs need it).
* Adapters are saved with peft's own ``save_pretrained`` (``adapter_config.json`` + ``adapter_model.safetensors``:
  no pickles) plus ``lora.json`` (our spec, the base checkpoint and the vocabulary fingerprint, which loading
  checks). ``merge`` folds every adapter into the base weights (``merge_and_unload``) and returns a plain
  ``XPromptModel``: ``xprompt export --lora`` writes it as an ordinary checkpoint that needs no peft.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from xprompt.config_io import config_from_dict
from xprompt.errors import CheckpointError, ConfigError

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SPEC_FILE = "lora.json"


@dataclass
class LoraSpec:
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    train_xp_rows: bool = True  # the X-Prompt token embedding rows
    train_head: bool = True  # the LM head (image and text logits)

    def __post_init__(self):
        if self.r < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1:
            raise ConfigError(
                f"LoRA needs r >= 1, alpha > 0, 0 <= dropout < 1 (got {self.r}, {self.alpha}, {self.dropout})"
            )
        bad = sorted(set(self.targets) - set(TARGETS))
        if bad or not self.targets:
            raise ConfigError(f"LoRA targets {bad or '[]'} unknown; choose from {TARGETS}")


def spec_from_dict(d: dict) -> LoraSpec:
    return config_from_dict(LoraSpec, d, where="lora")


def apply_lora(model, vocab, spec: LoraSpec):
    """Wrap ``model`` (an ``XPromptModel``) with LoRA as ``spec`` says; returns the ``peft.PeftModel``."""
    import peft

    kw = {}
    if spec.train_xp_rows and vocab.num_xp:
        kw["trainable_token_indices"] = {"embed_tokens": [int(i) for i in vocab.xp_ids]}
    if spec.train_head:
        kw["modules_to_save"] = ["lm_head"]
    cfg = peft.LoraConfig(
        r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=list(spec.targets), **kw
    )
    return peft.get_peft_model(model, cfg)


def merge(peft_model):
    """Fold the adapters into the base weights -> a plain ``XPromptModel`` (the wrapper is consumed)."""
    return peft_model.merge_and_unload()


def save_adapter(path, peft_model, spec: LoraSpec, vocab, *, base: str = "") -> Path:
    """Write the adapter folder atomically: peft's files + ``lora.json``."""
    from xprompt.io_utils import atomic_dir

    path = Path(path)
    record = {
        "format": "xprompt-lora/1",
        "spec": asdict(spec),
        "base": base,
        "vocab_fingerprint": vocab.fingerprint(),
    }
    with atomic_dir(path, overwrite=True, marker=SPEC_FILE) as tmp:
        peft_model.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / SPEC_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return path


def load_adapter(model, vocab, path):
    """``model`` wrapped with the adapter saved at ``path`` (refused when it was trained on another vocabulary)."""
    import peft

    path = Path(path)
    try:
        record = json.loads((path / SPEC_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        raise CheckpointError(
            f"{path} is not an xprompt LoRA adapter folder (no readable {SPEC_FILE})"
        ) from None
    if record.get("vocab_fingerprint") != vocab.fingerprint():
        raise CheckpointError(
            f"{path}: the adapter was trained on another vocabulary ({record.get('vocab_fingerprint')} vs "
            f"{vocab.fingerprint()}); merge it onto the base it was trained from ({record.get('base') or 'unrecorded'})"
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder; never ask the hub
    return peft.PeftModel.from_pretrained(model, str(path), is_trainable=False), record

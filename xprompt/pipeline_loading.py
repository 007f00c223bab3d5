"""What a checkpoint records about how it was trained, read when ``XPrompt.from_pretrained`` loads it.

Design choices
* Split from ``pipeline.py``: the metadata rules in one place, shared with ``xprompt export``
  (``cli_export.py``). A checkpoint's ``meta.json`` ``extra`` names its tokenizers (``tokenizers.vq``/``bpe``,
  or the training data's ``tokenizers.json`` as the trainer stores it) and the context modes it was trained in.
* Tokenizers are looked up most specific first, each relative path against the checkpoint folder first (how
  ``xprompt export`` records them), then the shipped default; one whose file fingerprint differs from the
  training data's is refused (the same codebook size with other codes would silently produce garbage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xprompt.errors import XPromptError
from xprompt.tokenizer.loading import tokenizer_fingerprint


def dig(d: Any, *keys):
    """``d[k1][k2]...``, or None where a key is missing (nested checkpoint metadata)."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _tokenizer_candidates(extra: dict, kind: str) -> list[str]:
    """Recorded tokenizer locations in a checkpoint's ``extra`` (kind: "vq" or "bpe"), most specific first."""
    data_meta = dig(extra, "training", "data", "meta", "tokenizers.json") or {}
    recorded = [
        dig(extra, "tokenizers", kind),
        dig(extra, "tokenizers", "image_tokenizer" if kind == "vq" else "text"),
        dig(data_meta, "image_tokenizer" if kind == "vq" else "bpe", "path"),
    ]
    return [r if isinstance(r, str) else r.get("path") for r in recorded if isinstance(r, (str, dict)) and r]


def check_trained_with(path, extra: dict, kind: str, spec) -> None:
    """Refuse a tokenizer whose files differ from the ones the training data was tokenized with (the same
    codebook size with other codes would silently produce garbage)."""
    ref = dig(
        extra, "training", "data", "meta", "tokenizers.json", "image_tokenizer" if kind == "vq" else "bpe"
    )
    want = ref.get("fingerprint") if isinstance(ref, dict) else None
    if not want or not isinstance(spec, (str, Path)) or str(spec).startswith("grid:"):
        return
    got = tokenizer_fingerprint(kind, spec)
    if got != want:
        what = "image (VQ)" if kind == "vq" else "text (BPE)"
        raise XPromptError(
            f"{path} was trained with the {what} tokenizer of fingerprint {want}, but {spec} has "
            f"fingerprint {got}; pass the tokenizer it was trained with (--{kind})"
        )


def _exists(spec: str) -> bool:
    return spec.startswith("grid:") or Path(spec).exists()


def pick_tokenizer(path: Path, extra: dict, given, kind: str, default):
    """The tokenizer spec to load (kind: "vq" or "bpe"): ``given`` if any, else the first recorded location
    that exists, else ``default``; a one-line error listing what was tried."""
    if given is not None:
        return given
    tried = []
    for c in _tokenizer_candidates(extra, kind) + [str(default)]:
        # a relative path is first read against the checkpoint folder (how `xprompt export` records it)
        for cand in (str(path / c), c) if not Path(c).is_absolute() else (c,):
            tried.append(cand)
            if _exists(cand):
                return cand
    raise XPromptError(
        f"no {'image' if kind == 'vq' else 'text'} tokenizer found for {path} (tried "
        f"{', '.join(dict.fromkeys(tried))}); pass --{kind} explicitly"
    )


def trained_mode(extra: dict) -> tuple[str, ...] | None:
    """The context modes a checkpoint's model saw examples in (its training config's ``mode``/``mode_mix``, or
    an export's ``trained_mode``), most used first; None when not recorded."""
    rec = dig(extra, "trained_mode")
    if isinstance(rec, list) and rec:
        return tuple(str(m) for m in rec)
    tc = dig(extra, "training", "train_config")
    if not isinstance(tc, dict) or "mode" not in tc:
        return None
    mix = tc.get("mode_mix") or {}
    if isinstance(mix, dict) and any(float(w) > 0 for w in mix.values()):
        return tuple(m for m, w in sorted(mix.items(), key=lambda kv: -float(kv[1])) if float(w) > 0)
    return (str(tc["mode"]),)

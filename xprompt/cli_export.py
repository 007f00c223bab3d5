"""``xprompt export``: turn a trained run's model into a release folder (the shipped ``checkpoints/xprompt-tiny``).

Design choices
* The weights are loaded strictly and re-saved with ``save_pretrained`` (atomic; bf16 by default to halve the
  file; the config and vocabulary are unchanged). ``meta.json`` keeps the run's records (step, tokens seen,
  training data and its tokenizer fingerprints).
* Tokenizers are referenced, not copied: ``extra.tokenizers`` records the VQ and BPE locations *relative to
  the release folder* (so a folder inside the repository points at the shipped ``checkpoints/vq-64`` and
  ``checkpoints/bpe``). They default to the ones the training data was built with, and any tokenizer given
  must have the files of that one (``XPrompt.from_pretrained`` checks the same fingerprints when loading).
* ``--lora ADAPTER`` merges a LoRA adapter (``xprompt.lora``) into the base weights first, so the release holds
  plain weights; the base may be an xprompt checkpoint or a Chameleon / Lumina-mGPT HF folder (its tokenizer
  folder is then recorded as the release's tokenizers).
* ``extra.trained_mode`` records the context mode(s) the model saw examples in (from the run's train config),
  so ``XPrompt`` can warn when asked for another layout. ``model.safetensors`` gets the usual 0644 mode.
"""

from __future__ import annotations

import os
from pathlib import Path

from xprompt.errors import XPromptError


def register(root, groups) -> None:
    p = root.add_parser(
        "export", help="export a trained model as a release folder (bf16, tokenizer references)"
    )
    p.add_argument("--checkpoint", required=True, help="a run's exported model dir (runs/NAME/model)")
    p.add_argument(
        "--out", required=True, help="release folder to write (replaced only if it is a checkpoint)"
    )
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="weight dtype (default bf16)")
    p.add_argument("--vq", help="image tokenizer dir (default: the one the training data was built with)")
    p.add_argument("--bpe", help="BPE tokenizer.json (default: the one the training data was built with)")
    p.add_argument(
        "--lora",
        help="a LoRA adapter folder (xprompt.lora) to merge into --checkpoint's weights: the release holds plain "
        "weights (no peft needed to load it); --checkpoint may then be a Chameleon / Lumina-mGPT HF folder",
    )
    p.add_argument("--tokenizer", help="with --lora on an HF folder: its Chameleon tokenizer folder")
    p.set_defaults(func=run)


def _relative(spec, src: Path, out: Path) -> str:
    """A tokenizer location recorded relative to ``src`` (or absolute) -> relative to the release ``out``."""
    p = Path(spec)
    p = p if p.is_absolute() else (src / p if (src / p).exists() else p)
    return os.path.relpath(p.resolve(), out.resolve().parent / out.name)


def export_lora(src, adapter, out, *, dtype: str = "bf16", tokenizer=None) -> Path:
    """Merge the adapter at ``adapter`` into ``src``'s weights and write a plain release folder ``out``."""
    import torch

    from xprompt.checkpoint import is_hf_checkpoint, load_pretrained, read_meta, save_pretrained
    from xprompt.lora import load_adapter, merge

    src, out = Path(src), Path(out)
    if out.resolve() in (src.resolve(), Path(adapter).resolve()):
        raise XPromptError("--out must differ from --checkpoint and --lora")
    if is_hf_checkpoint(src):
        from xprompt.published import DEFAULT_IMAGE_SIZE, load_published

        model, vocab, _, _, tok = load_published(src, tokenizer, dtype=torch.float32)
        extra = {
            "image_size": DEFAULT_IMAGE_SIZE,
            "tokenizers": {"vq": str(tok), "bpe": str(tok / "text_tokenizer.json")},
        }
    else:
        model, vocab = load_pretrained(src, dtype=torch.float32)
        extra = dict(read_meta(src).get("extra", {}))
    refs = extra.get("tokenizers") or {}
    extra["tokenizers"] = {k: _relative(v, src, out) for k, v in refs.items() if isinstance(v, str)}
    wrapped, record = load_adapter(model, vocab, adapter)
    extra["lora"] = dict(record, adapter=str(Path(adapter).resolve()), base=str(src.resolve()))
    merged = merge(wrapped)
    return save_pretrained(
        out, merged, vocab, extra=extra, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32
    )


def export(src, out, *, dtype: str = "bf16", vq=None, bpe=None) -> Path:
    import torch

    from xprompt.checkpoint import is_hf_checkpoint, load_pretrained, read_meta, save_pretrained
    from xprompt.pipeline_loading import check_trained_with, dig, trained_mode

    src, out = Path(src), Path(out)
    if not (src / "meta.json").is_file() or is_hf_checkpoint(src):
        raise XPromptError(
            f"{src} is not an xprompt model checkpoint (expected config.json, meta.json, "
            "model.safetensors; use runs/NAME/model)"
        )
    if out.resolve() == src.resolve():
        raise XPromptError("--out must differ from --checkpoint")
    extra = dict(read_meta(src).get("extra", {}))
    data_tok = dig(extra, "training", "data", "meta", "tokenizers.json") or {}
    refs = {}
    for kind, given, key in (("vq", vq, "image_tokenizer"), ("bpe", bpe, "bpe")):
        spec = given or dig(data_tok, key, "path")
        if not spec or not Path(spec).exists():
            raise XPromptError(f"no {kind} tokenizer found for {src} (recorded: {spec}); pass --{kind}")
        check_trained_with(src, extra, kind, spec)
        refs[kind] = os.path.relpath(Path(spec).resolve(), out.resolve().parent / out.name)
    extra["tokenizers"] = refs
    modes = trained_mode(extra)
    if modes:  # the layout(s) the model read examples in, for the pipeline's mode-mismatch warning
        extra["trained_mode"] = list(modes)
    model, vocab = load_pretrained(src)
    return save_pretrained(
        out, model, vocab, extra=extra, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32
    )


def run(args) -> int:
    if args.lora:
        out = export_lora(args.checkpoint, args.lora, args.out, dtype=args.dtype, tokenizer=args.tokenizer)
        print(out)
        return 0
    out = export(args.checkpoint, args.out, dtype=args.dtype, vq=args.vq, bpe=args.bpe)
    print(out)
    return 0

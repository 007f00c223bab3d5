"""``xprompt convert vqgan``: the separate, labelled step that turns Chameleon's Lightning ``vqgan.ckpt`` into
``vqgan.safetensors`` (``xprompt.tokenizer.chameleon_vq_io.convert_vqgan``: weights-only load with inert stubs for
the pickled Lightning objects; files naming blocked code are refused)."""

from __future__ import annotations


def register(root, groups) -> None:
    c = root.add_parser("convert", help="convert released weights to safetensors (no pickles at load time)")
    sub = c.add_subparsers(dest="convert_command", metavar="SUBCOMMAND")
    c.set_defaults(func=lambda args, c=c: (c.print_help(), 2)[1])
    p = sub.add_parser(
        "vqgan",
        help="Chameleon's tokenizer/vqgan.ckpt -> a tokenizer folder with vqgan.safetensors",
        description="Extract the state dict of Chameleon's Lightning vqgan.ckpt into DIR/vqgan.safetensors "
        "(with vqgan.yaml, text_tokenizer.json and conversion.json). The pickle is read with "
        "torch.load(weights_only=True); the Lightning objects it names become inert stubs and are dropped.",
    )
    p.add_argument("--in", dest="src", required=True, help="the released vqgan.ckpt")
    p.add_argument("--out", required=True, help="output tokenizer folder")
    p.add_argument("--yaml", help="vqgan.yaml (default: the one beside --in)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier conversion in --out")
    p.set_defaults(func=run_vqgan)
    q = sub.add_parser(
        "published",
        help="a Chameleon / Lumina-mGPT HF folder + its tokenizer folder -> an xprompt checkpoint with XP tokens",
        description="Assemble the published stack (vocabulary mapped by name, --num-xp X-Prompt tokens appended, "
        "embeddings resized) and write it as an xprompt checkpoint: the init_from of a fine-tune, whose "
        "vocab.json `xprompt data build --vocab` tokenizes into.",
    )
    q.add_argument("--checkpoint", required=True, help="the HF model folder (config.json + safetensors)")
    q.add_argument("--tokenizer", help="its tokenizer folder (default: found beside it)")
    q.add_argument("--out", required=True, help="output checkpoint folder")
    q.add_argument(
        "--num-xp", type=int, default=32, help="X-Prompt tokens to add (default 32, the paper's S)"
    )
    q.add_argument(
        "--image-size", type=int, default=512, help="pixels per side it generates at (default 512)"
    )
    q.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    q.set_defaults(func=run_published)


def run_vqgan(args) -> int:
    import json
    from pathlib import Path

    from xprompt.tokenizer.chameleon_vq_io import convert_vqgan

    out = convert_vqgan(args.src, args.out, yaml_path=args.yaml, overwrite=args.overwrite)
    rec = json.loads((Path(out) / "conversion.json").read_text())
    stubbed = ", ".join(rec["stubbed_globals"]) or "none"
    print(
        f"{out}: {rec['tensors']} tensors -> vqgan.safetensors; dropped {rec['dropped_training_tensors']} "
        f"training-only loss.* tensors; stubbed (never run) pickled objects: {stubbed}"
    )
    return 0


def convert_published(
    src, out, *, tokenizer=None, num_xp: int = 32, image_size: int = 512, dtype: str = "bf16"
):
    """Write the published stack at ``src`` as an xprompt checkpoint ``out`` (tokenizers recorded relative to it)."""
    import os
    from pathlib import Path

    import torch

    from xprompt.checkpoint import save_pretrained
    from xprompt.published import load_published

    model, vocab, _, _, tok = load_published(src, tokenizer, num_xp=num_xp, dtype=torch.float32)
    out = Path(out)
    rel = lambda p: os.path.relpath(Path(p).resolve(), out.resolve())
    extra = {
        "source": str(Path(src).resolve()),
        "image_size": image_size,
        "tokenizers": {"vq": rel(tok), "bpe": rel(tok / "text_tokenizer.json")},
    }
    return save_pretrained(
        out, model, vocab, extra=extra, dtype=torch.bfloat16 if dtype == "bf16" else torch.float32
    )


def run_published(args) -> int:
    out = convert_published(
        args.checkpoint, args.out, tokenizer=args.tokenizer, num_xp=args.num_xp, image_size=args.image_size,
        dtype=args.dtype,
    )  # fmt: skip
    print(out)
    return 0

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

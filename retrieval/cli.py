"""RAIE commands: ``xprompt index build``, ``xprompt index search``, ``xprompt index train-encoder`` and
``xprompt edit``.

The pair sources of ``index build --pairs`` are ``xprompt.retrieval.sources``; the default store (built on first
use) is ``xprompt.retrieval.default_store``; ``xprompt edit`` is a thin front of ``XPrompt.edit`` (``--mask``/``--box``: mask-guided editing).
"""

from __future__ import annotations

import sys
from pathlib import Path

from xprompt.cli import add_mask_args, mask_kwargs
from xprompt.cli_options import (
    add_guidance_args,
    add_image_size_option,
    add_json_option,
    add_pipeline_options,
    add_run_options,
    emit,
    pipeline_from_args,
    progress_on,
)
from xprompt.errors import XPromptError
from xprompt.retrieval.default_store import open_store
from xprompt.retrieval.sources import DEFAULT_SIZE, load_pairs


# ---------------------------------------------------------------------------------------------- commands
def cmd_index_build(args) -> int:
    import time

    from xprompt.retrieval.store import InstructionStore, StoreConfig, store_config_from_args
    from xprompt.retrieval.store_format import MANIFEST

    out = Path(args.out)
    # Checked before the (slow) encoding; save() itself is atomic and re-checks.
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not args.overwrite:
            raise XPromptError(f"{out} exists; pass --overwrite to replace it or choose another --out")
        if not (out / MANIFEST).is_file():
            raise XPromptError(
                f"{out} exists but is not an xprompt store (no {MANIFEST}); refusing to overwrite"
            )
    cfg: StoreConfig = store_config_from_args(
        args.factory, nprobe=args.nprobe, image_vectors=True if args.image_embeddings else None
    )
    t0 = time.time()
    table = load_pairs(
        args.pairs,
        size=args.size,
        seed=args.seed,
        split=args.split,
        instruction_column=args.instruction_column,
        source_column=args.source_column,
        target_column=args.target_column,
        limit=args.limit,
        columns=args.columns or "",
        progress=progress_on(args),
    )
    store = InstructionStore(args.encoder, cfg)
    store.add_table(table, progress=None if progress_on(args) else False)
    store.save(out, overwrite=args.overwrite)
    if args.json:
        emit(args, {"output": str(out), "examples": len(store), "encoder": store.encoder.name,
                    "dim": store.encoder.dim, "factory": cfg.factory, "seconds": round(time.time() - t0, 2)})  # fmt: skip
        return 0
    print(
        f"wrote {out}: {len(store)} examples, encoder {store.encoder.name} (dim {store.encoder.dim}), "
        f"index {cfg.factory}, {time.time() - t0:.1f} s"
    )
    return 0


def cmd_index_search(args) -> int:
    store = open_store(args.store, args.encoder)
    results = store.search([args.instruction], k=args.k)[0]
    if args.json:
        hits = [
            {
                "rank": r + 1,
                "score": round(s, 6),
                "id": rec.id,
                "task": rec.task,
                "instruction": rec.instruction,
                **(
                    {"turn_index": rec.turn_index, "has_mask": rec.mask is not None}
                    if store.has_extra
                    else {}
                ),
            }
            for r, (s, rec) in enumerate(results)
        ]
        emit(args, {"instruction": args.instruction, "store": str(args.store or "default"), "results": hits})
        return 0
    print(f"{'rank':>4}  {'score':>6}  {'task':<20}  instruction")
    for r, (s, rec) in enumerate(results):
        print(f"{r + 1:>4}  {s:6.3f}  {rec.task[:20]:<20}  {rec.instruction}")
    return 0


def cmd_edit(args) -> int:
    from xprompt.images import write_png
    from xprompt.paths import shipped
    from xprompt.retrieval.encoders import check_instructions
    from xprompt.tokenizer.image_io import load_image

    instruction = check_instructions([args.instruction])[0]
    if args.k < 1:
        raise XPromptError(f"-k must be >= 1, got {args.k}")
    out = Path(args.output)
    if out.suffix.lower() != ".png":
        raise XPromptError(f"-o {out}: the edited image is written as PNG; use a .png path")
    image = load_image(args.image)
    ckpt = Path(args.checkpoint) if args.checkpoint else shipped("xprompt-tiny")
    model = pipeline_from_args(args, ckpt)  # before retrieval: a bad checkpoint fails fast
    res = model.edit(
        image,
        instruction,
        store=args.store,
        k=0 if args.no_retrieval else args.k,
        encoder=args.encoder,
        image_weight=args.image_weight,
        seed=args.seed,
        greedy=args.greedy,
        cfg_scale=args.cfg,
        cfg_ref=args.cfg_ref,
        progress=progress_on(args) and sys.stderr.isatty(),
        keep_model_size=args.keep_model_size,
        **mask_kwargs(args),
    )
    if args.show_retrieved and not args.json:
        for r, hit in enumerate(res.retrieved):
            print(
                f"retrieved {r + 1}: score {hit.score:.3f}  [{hit.task}]  {hit.instruction}", file=sys.stderr
            )
    write_png(out, res.image)
    side = _write_retrieved(out, model, image, res) if args.show_retrieved and res.retrieved else None
    h, w = res.image.shape[:2]
    if args.json:
        retrieved = [{"instruction": r.instruction, "task": r.task, "score": round(r.score, 6)}
                     for r in res.retrieved]  # fmt: skip
        emit(args, {"output": str(out), "width": w, "height": h, "mode": res.mode, "retrieved": retrieved,
                    "retrieved_grid": str(side) if side else None})  # fmt: skip
        return 0
    print(f"wrote {out} ({w}x{h}; mode {res.mode}, {len(res.retrieved)} retrieved example(s))")
    if side is not None:
        print(f"wrote {side} (labelled rows: retrieved source -> target, then your image -> output)")
    return 0


def _write_retrieved(out: Path, pipe, image, res) -> Path:
    """OUT.retrieved.png: one labelled row per retrieved pair, then the query and the output (shown as the
    model sees them, padded to its square, so a non-square photo is not squashed into the grid's cells)."""
    from xprompt.images import image_grid, write_png

    side = out.with_name(out.stem + ".retrieved.png")
    rows = [list(p) for p in res.pairs] + [[pipe.fit(image), pipe.fit(res.image)]]
    caps = [f"retrieved {i + 1} (score {r.score:.2f}): {r.instruction}" for i, r in enumerate(res.retrieved)]
    caps.append(f"your image -> output: {res.instruction}")
    cell = rows[0][0].shape[:2]  # every cell at the first pair's size
    cell = (max(cell[0], 96), max(cell[1], 96))  # big enough to read the labels beside tiny images
    write_png(
        side, image_grid(rows, cell, pad=4, header=["input", "output"], captions=caps, strip=26)
    )  # 2 lines
    return side


def _json_texts(path: str) -> list[str]:
    """Every string inside a JSON file (a list of texts, of [a, b] pairs, or objects holding them)."""
    import json

    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise XPromptError(f"--exclude {path}: file not found") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise XPromptError(f"--exclude {path}: not JSON ({e})") from None
    out: list[str] = []

    def walk(x):
        if isinstance(x, str):
            out.append(x)
        elif isinstance(x, list):
            for y in x:
                walk(y)
        elif isinstance(x, dict):
            for y in x.values():
                walk(y)

    walk(data)
    if not out:
        raise XPromptError(f"--exclude {path}: holds no texts")
    return out


def cmd_train_encoder(args) -> int:
    import torch

    from xprompt.retrieval.train_encoder import EditEncoderConfig, train_edit_encoder

    exclude = [t for f in args.exclude or [] for t in _json_texts(f)]
    cfg = EditEncoderConfig(
        train_layers=args.layers,
        corpus_size=args.corpus_size,
        corpus_seed=args.corpus_seed,
        batch_size=args.batch_size,
        epochs=args.epochs,
        lr=args.lr,
        threads=args.threads or torch.get_num_threads(),  # --threads 0: torch's default
        order_weight=args.order_weight,
    )
    train_edit_encoder(cfg, args.out, exclude=exclude, overwrite=args.overwrite, max_steps=args.max_steps)
    return 0


def register(root, groups) -> None:
    _register_build(groups["index"])
    _register_search(groups["index"])
    _register_train_encoder(groups["index"])
    _register_edit(root)


def _register_build(index) -> None:
    b = index.add_parser(
        "build",
        help="build a FAISS instruction store",
        description="Build a RAIE instruction store from edit pairs.",
    )
    b.add_argument(
        "--pairs",
        required=True,
        help="suite:FAMILIES[:N] (e.g. suite:edit:500), magicbrush=PATH / instructpix2pix=PATH / edits=PATH "
        "(a real edit set; masks and turn indices kept), or a local datasets directory with source_img, "
        "target_img, instruction columns",
    )
    b.add_argument("--out", required=True, help="store directory to write")
    b.add_argument(
        "--encoder",
        default=None,
        help="text encoder: minilm, minilm-edit (learned, direction-aware), "
        "minilm+op (rule features) or openclip:ARCH:WEIGHTS; default: the project default "
        "(docs/retrieval.md)",
    )
    b.add_argument(
        "--factory", default="Flat", help="faiss index_factory string (Flat, IVF1024,PQ64, HNSW32...)"
    )
    b.add_argument("--nprobe", type=int, default=None, help="IVF lists probed per query (default 32)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing store at --out")
    b.add_argument(
        "--image-embeddings",
        action="store_true",
        help="also embed the source images (openclip encoders) for image-aware retrieval",
    )
    add_image_size_option(
        b,
        default=DEFAULT_SIZE,
        aliases=("--size",),
        dest="size",
        help=f"image size of suite pairs in px ({DEFAULT_SIZE})",
    )
    b.add_argument("--seed", type=int, default=0, help="seed of suite pairs")
    b.add_argument("--split", default=None, help="split of a DatasetDict source (default train)")
    b.add_argument("--limit", type=int, default=None, help="use at most this many rows of a datasets source")
    b.add_argument("--instruction-column", default="instruction")
    b.add_argument("--source-column", default="source_img")
    b.add_argument("--target-column", default="target_img")
    b.add_argument("--columns", default=None, help="--pairs edits=PATH: ROLE=COLUMN,... (docs/datasets.md)")
    add_run_options(b, device=False)
    add_json_option(b)
    b.set_defaults(func=cmd_index_build)


def _register_search(index) -> None:
    s = index.add_parser(
        "search",
        help="search a store by instruction",
        description="Print the stored instructions most similar to TEXT.",
    )
    s.add_argument("--store", default=None, help="store directory (default: the default suite store)")
    s.add_argument("--instruction", required=True)
    s.add_argument("-k", type=int, default=5)
    s.add_argument(
        "--encoder", default=None, help="query encoder (default: the one the store was built with)"
    )
    add_run_options(s, device=False)
    add_json_option(s)
    s.set_defaults(func=cmd_index_search)


def _register_train_encoder(index) -> None:
    from xprompt.retrieval.train_encoder import EditEncoderConfig

    t = index.add_parser(
        "train-encoder",
        help="train the minilm-edit text encoder (docs/retrieval.md)",
        description="Fine-tune the top layers of the packaged MiniLM on a generated corpus of edit-instruction "
        "paraphrases with hard negatives (inverse operations); writes model.safetensors + config.json.",
    )
    t.add_argument(
        "--out", required=True, help="output directory (the shipped one is checkpoints/minilm-edit)"
    )
    d = EditEncoderConfig()  # the shipped recipe
    t.add_argument(
        "--corpus-size", type=int, default=d.corpus_size, help=f"training triples ({d.corpus_size})"
    )
    t.add_argument("--corpus-seed", type=int, default=d.corpus_seed)
    t.add_argument("--layers", type=int, default=d.train_layers, help="train the last N transformer layers")
    t.add_argument("--batch-size", type=int, default=d.batch_size)
    t.add_argument("--epochs", type=int, default=d.epochs)
    t.add_argument("--lr", type=float, default=d.lr)
    t.add_argument(
        "--order-weight",
        type=float,
        default=d.order_weight,
        help="weight of the same-operation-over-same-object margin loss (0 = off)",
    )
    add_run_options(t, device=False)
    t.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (quick runs)")
    t.add_argument(
        "--exclude",
        action="append",
        metavar="JSON",
        help="JSON file of texts (or pairs) the corpus must not contain, e.g. test paraphrases",
    )
    t.add_argument("--overwrite", action="store_true")
    t.set_defaults(func=cmd_train_encoder)


def _register_edit(root) -> None:
    e = root.add_parser(
        "edit",
        help="retrieval-augmented image editing",
        description="Edit IMAGE by INSTRUCTION, with the most similar stored edit pair(s) as the "
        "in-context example (RAIE); --no-retrieval edits from the text alone.",
    )
    e.add_argument("--image", required=True)
    e.add_argument("--instruction", required=True)
    e.add_argument("-o", "--output", required=True, help="output PNG")
    e.add_argument("--store", default=None, help="store directory (default: the default suite store)")
    e.add_argument("-k", type=int, default=1, help="number of retrieved examples")
    e.add_argument("--no-retrieval", action="store_true", help="text-only editing (the paper's baseline)")
    e.add_argument(
        "--show-retrieved",
        action="store_true",
        help="print the retrieved instructions and write OUT.retrieved.png",
    )
    e.add_argument("--checkpoint", default=None, help="model directory (default: checkpoints/xprompt-tiny)")
    add_pipeline_options(e, image_out=True)
    e.add_argument(
        "--encoder",
        default=None,
        help="query encoder (default: the store's; a new default store is built with minilm-edit)",
    )
    e.add_argument(
        "--image-weight",
        type=float,
        default=0.0,
        help="weight of query-image similarity in retrieval (stores built with --image-embeddings)",
    )
    e.add_argument("--seed", type=int, default=0, help="sampling seed")
    e.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    add_guidance_args(e, scale=True)
    add_mask_args(e, instruction=True)
    e.set_defaults(func=cmd_edit)

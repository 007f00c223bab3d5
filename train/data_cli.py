"""``xprompt data build`` and ``xprompt data show``.

``build`` writes a pre-tokenized dataset (see ``xprompt.train.build``); ``show`` decodes the first (or random)
samples of a built dataset back to images and text and writes one PNG grid, one sample per row:
example input(s) | example output | query input(s) | answer, with the task and instruction written above.
Heavy imports stay inside the functions so that ``xprompt --help`` is fast.
"""

from __future__ import annotations

import json
from pathlib import Path

from xprompt.cli_options import add_image_size_option, add_run_options, add_tokenizer_options, progress_on
from xprompt.errors import XPromptError


def register(root, groups) -> None:
    from xprompt.paths import REPO_ROOT, shipped

    g = groups["data"]
    b = g.add_parser("build", help="build a pre-tokenized task-suite dataset",
                     description="Build a pre-tokenized task-suite dataset (datasets.save_to_disk, xp layout).")  # fmt: skip
    b.add_argument("--split", default="train", help="train | full | eval | no_<task> (see docs/tasks.md)")
    b.add_argument("--n", type=int, required=True, help="number of samples")
    add_image_size_option(b, default=64, aliases=("--size",), dest="size",
                          help="image side in pixels (a multiple of the tokenizer factor; default 64)")  # fmt: skip
    b.add_argument("--out", required=True, help="output directory")
    b.add_argument("--seed", type=int, default=0)
    add_tokenizer_options(b, vq_default=str(shipped("vq-64")), bpe_default=str(shipped("bpe")),
                          vq_aliases=("--tokenizer",), vq_dest="tokenizer")  # fmt: skip
    b.add_argument("--num-xp", type=int, default=16, help="number of X-Prompt tokens S in the vocabulary")
    b.add_argument("--vocab", default="", help="tokenize into this vocab.json (a model's, e.g. from `xprompt "
                   "convert published`) instead of building one from the tokenizers")  # fmt: skip
    b.add_argument("--shard-size", type=int, default=5000, help="samples per shard")
    b.add_argument("--group-size", type=int, default=None,
                   help="samples per task instance sharing their pairs in rotated roles "
                        "(default 2; 1 for --split eval, whose rows should be independent)")  # fmt: skip
    b.add_argument(
        "--workers", type=int, default=1, help="processes (1 = no pool; generation runs in workers)"
    )
    b.add_argument("--mix", default=str(REPO_ROOT / "configs" / "data_mix.json"), help="DataMix JSON")
    b.add_argument("--tasks", default="", help="comma-separated task names to restrict to")
    b.add_argument("--keep-heldout-reverses", action="store_true",
                   help="keep the reverses of held-out tasks in training (default: removed too)")  # fmt: skip
    b.add_argument("--include-unseen", action="store_true", help="also train on inpainting / colorization")
    b.add_argument(
        "--raie-pairing", action="store_true", help="pair edit samples by nearest instruction (RAIE)"
    )
    b.add_argument("--source", action="append", default=None, metavar="NAME=PATH",
                   help="mix a real dataset's training pairs in (repeatable): lol, rain100h, rain100l, nyuv2, "
                        "ade20k, magicbrush, instructpix2pix, edits; forward, reversed and difference samples "
                        "(docs/datasets.md); --n 0 builds real pairs only")  # fmt: skip
    b.add_argument("--holdout", default="", help="dataset names never to train on (comma-separated)")
    b.add_argument("--source-limit", type=int, default=0, help="training pairs read per --source (0 = all)")
    b.add_argument(
        "--columns", default="", help="edit sets: ROLE=COLUMN,... (source, target, instruction, ...)"
    )
    b.add_argument("--depth-scale", type=float, default=1000.0, help="nyuv2 16-bit PNGs: units per metre")
    b.add_argument("--overwrite", action="store_true", help="replace an existing dataset directory")
    add_run_options(b, device=False)
    b.set_defaults(func=cmd_build)

    s = g.add_parser("show", help="write a PNG grid of decoded samples",
                     description="Decode samples of a built dataset into a PNG grid a person can look at.")  # fmt: skip
    s.add_argument("dir", help="dataset directory")
    s.add_argument("--n", type=int, default=8)
    s.add_argument("-o", "--out", default="grid.png", help="output PNG")
    s.add_argument(
        "--tokenizer", default=None, help="VQ checkpoint (default: the one the dataset was built with)"
    )
    s.add_argument("--bpe", default=None, help="BPE tokenizer (default: the one the dataset was built with)")
    s.add_argument("--random", type=int, default=None, metavar="SEED", help="pick random rows with this seed")
    s.add_argument("--scale", type=int, default=2, help="pixel upscaling of the grid")
    s.set_defaults(func=cmd_show)

    p = g.add_parser("photos", help="check the training photograph pools (make photos installs the Debian one)",
                     description="Report each training photograph pool (files, fingerprint) and whether the Debian "
                                 "pool's files are installed and match their manifest; --scan re-derives the "
                                 "manifest from the installed packages.")  # fmt: skip
    p.add_argument(
        "--scan", action="store_true", help="rewrite the Debian manifest from the installed packages"
    )
    p.set_defaults(func=cmd_photos)


def cmd_build(args) -> int:
    from xprompt.train.build import BuildConfig, build_dataset, load_mix

    mix_path = Path(args.mix)
    # the shipped mixture may be absent in an installed copy: then the DataMix defaults apply
    mix = (
        {}
        if args.split == "eval" or (args.mix == _default_mix() and not mix_path.exists())
        else load_mix(mix_path)
    )
    if args.group_size is None:
        args.group_size = 1 if args.split == "eval" else 2
    if (
        args.shard_size < 1
        or args.workers < 1
        or args.group_size < 1
        or args.num_xp < 0
        or args.source_limit < 0
    ):
        raise XPromptError(
            "--shard-size, --workers and --group-size must be >= 1, --num-xp and --source-limit >= 0"
        )
    if not progress_on(args):
        import datasets

        datasets.disable_progress_bars()
    cfg = BuildConfig(
        split=args.split, n=args.n, size=args.size, seed=args.seed, num_xp=args.num_xp, shard_size=args.shard_size,
        workers=args.workers, group_size=args.group_size, keep_heldout_reverses=args.keep_heldout_reverses, include_unseen=args.include_unseen,
        raie_pairing=args.raie_pairing, tasks=[t for t in args.tasks.split(",") if t.strip()], mix=mix,
        sources=list(args.source or []), holdout=[h.strip().lower() for h in args.holdout.split(",") if h.strip()],
        source_limit=args.source_limit, columns=args.columns, depth_scale=args.depth_scale, vocab=args.vocab,
    )  # fmt: skip
    card = build_dataset(cfg, args.out, tokenizer=args.tokenizer, bpe=args.bpe, overwrite=args.overwrite,
                         progress=progress_on(args))  # fmt: skip
    summary = {
        k: card[k]
        for k in ("split", "n", "n_total", "size", "num_shards", "tokens", "build_seconds")
        if k in card
    }
    print(json.dumps({"out": str(args.out), **summary}))
    return 0


def cmd_photos(args) -> int:
    from xprompt.io_utils import atomic_write_text
    from xprompt.train import photo_pool, sources

    if args.scan:
        evals = {photo_pool.sha256_file(p) for p in sources.photo_names("eval")}
        entries = photo_pool.scan(exclude_sha256=evals)
        text = json.dumps({"packages": list(photo_pool.PACKAGES), "files": entries}, indent=1) + "\n"
        atomic_write_text(photo_pool.MANIFEST, text)
        print(f"wrote {photo_pool.MANIFEST} ({len(entries)} files)")
    status = 0
    for name in photo_pool.POOLS:
        try:
            print(json.dumps(sources.pool_card(name)))
        except XPromptError as e:
            print(json.dumps({"pool": name, "error": str(e)}))
            status = 1
    return status


def _default_mix() -> str:
    from xprompt.paths import REPO_ROOT

    return str(REPO_ROOT / "configs" / "data_mix.json")


def render_grid(rows: list[dict], vocab, bpe, vq, scale: int = 2):
    """uint8 image: one row per dataset row: a header text strip, then every decoded item as a tile."""
    import numpy as np

    from xprompt.images import image_grid
    from xprompt.sequence import split_items

    cells, headers, tile = [], [], None
    for row in rows:
        items = split_items(vocab, bpe, row["input_ids"])
        if row["instruction"] and items and items[0] == row["instruction"]:
            items = items[1:]  # the instruction goes into the header
        imgs = [it if isinstance(it, str) else vq.decode(np.asarray(it)[None])[0] for it in items]
        cells.append(imgs)
        headers.append(
            f"{row['task']} (example: {row['example_task']}) | {row['instruction'] or '<no instruction>'}"
        )
        tile = next((x.shape[0] * scale for x in imgs if not isinstance(x, str)), tile)
    tile = tile or 128
    return image_grid(cells, (tile, tile), pad=4, bg=230, captions=headers, strip=24)  # 24 px: two lines


def cmd_show(args) -> int:
    import numpy as np

    from xprompt.images import write_png
    from xprompt.tokenizer.loading import load_image_tokenizer, load_text_tokenizer, tokenizer_ref
    from xprompt.train.build import BPE_HINT, VQ_HINT, load_built

    ds, vocab, card = load_built(args.dir)
    refs = card["tokenizers"]
    vq_spec, bpe_spec = args.tokenizer or refs["image_tokenizer"]["path"], args.bpe or refs["bpe"]["path"]
    vq, vq_ref = load_image_tokenizer(str(vq_spec), VQ_HINT), tokenizer_ref("vq", vq_spec)
    bpe, bpe_ref = load_text_tokenizer(str(bpe_spec), BPE_HINT), tokenizer_ref("bpe", bpe_spec)
    for what, ref, flag in (("image tokenizer", vq_ref, "--tokenizer"), ("BPE", bpe_ref, "--bpe")):
        built = refs["image_tokenizer" if flag == "--tokenizer" else "bpe"]["fingerprint"]
        if ref["fingerprint"] != built:
            raise XPromptError(
                f"the {what} at {ref['path']} (fingerprint {ref['fingerprint']}) is not the one this dataset was "
                f"built with ({built}); pass {flag} with the original"
            )
    if vq.codebook_size != vocab.num_image_codes:
        raise XPromptError(
            f"tokenizer has {vq.codebook_size} codes but the dataset vocabulary {vocab.num_image_codes}"
        )
    if args.n < 1:
        raise XPromptError(f"--n must be >= 1, got {args.n}")
    n = min(args.n, len(ds))
    idx = (np.random.default_rng(args.random).choice(len(ds), n, replace=False) if args.random is not None
           else np.arange(n))  # fmt: skip
    rows = [ds[int(i)] for i in idx]
    write_png(args.out, render_grid(rows, vocab, bpe, vq, scale=max(1, args.scale)))
    print(json.dumps({"out": str(args.out), "samples": n}))
    return 0


def main(argv=None) -> int:  # pragma: no cover - `python -m xprompt.train.data_cli`
    from xprompt.cli import main as cli_main

    return cli_main(["data", *(argv or [])])

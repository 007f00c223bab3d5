"""CLI commands of the tokenizer area: ``xprompt train tokenizer`` (VQ) and ``xprompt train bpe`` (text BPE).

Heavy imports (torch, tokenizers, the task suite) stay inside the command functions so ``xprompt --help``
stays fast. Bad input raises ``XPromptError`` (one line, exit 2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xprompt.cli_options import add_threads_option, progress_on
from xprompt.errors import XPromptError


def register(root, groups) -> None:
    train = groups["train"]
    p = train.add_parser(
        "tokenizer",
        help="train the VQ image tokenizer",
        description="Train the VQ image tokenizer on procedural scenes and packaged photo crops.",
    )
    p.add_argument("--out", required=True, help="checkpoint directory (config.json + model.safetensors)")
    p.add_argument("--size", type=int, default=64, help="training image size (default 64)")
    p.add_argument("--factor", type=int, default=8, help="downsampling factor: 4, 8 or 16 (default 8)")
    p.add_argument("--codebook-size", type=int, default=1024)
    p.add_argument("--code-dim", type=int, default=8)
    p.add_argument("--base-channels", type=int, default=48)
    p.add_argument("--max-channels", type=int, default=128)
    p.add_argument(
        "--res-blocks", type=int, default=1, help="residual blocks per level (decoder gets one more)"
    )
    p.add_argument("--patch", type=int, default=2, help="pixel-unshuffle patch at input/output (1, 2 or 4)")
    p.add_argument("--no-l2-norm", action="store_true", help="plain (not l2-normalised) codes")
    p.add_argument("--beta", type=float, default=0.25, help="commitment weight")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--l1-weight", type=float, default=0.0)
    p.add_argument("--photo-frac", type=float, default=0.5, help="share of real photo crops per batch")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-images", type=int, default=64, help="held-out images per source for the monitor")
    p.add_argument("--seed", type=int, default=0)
    add_threads_option(p)
    p.add_argument("--max-minutes", type=float, default=0.0, help="stop and save after this wall time")
    p.add_argument("--init", help="continue from this checkpoint (same architecture)")
    p.add_argument(
        "--check-image",
        action="append",
        default=[],
        metavar="PATH",
        help="validate an image file with the tokenizer's loader and exit (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars (stderr)")
    p.add_argument("--quiet", action="store_true", help="no progress bars; still prints where results went")
    p.set_defaults(func=_train_tokenizer)

    b = train.add_parser(
        "bpe",
        help="train the byte-level BPE text tokenizer",
        description="Train the byte-level BPE text tokenizer on the task-suite corpus plus text files.",
    )
    b.add_argument("--out", required=True, help="output tokenizer.json path (or a directory)")
    b.add_argument("--vocab-size", type=int, default=2048)
    b.add_argument("--min-frequency", type=int, default=2)
    b.add_argument("--text", action="append", default=[], metavar="FILE", help="extra UTF-8 text file(s)")
    b.add_argument("--no-corpus", action="store_true", help="train only on --text files")
    b.set_defaults(func=_train_bpe)


def _train_tokenizer(args: argparse.Namespace) -> int:
    if args.check_image:
        from xprompt.tokenizer.image_io import load_image

        for path in args.check_image:
            img = load_image(path)
            print(f"{path}: ok {img.shape[1]}x{img.shape[0]}")
        return 0

    from xprompt.tokenizer.vq import VQConfig
    from xprompt.tokenizer.vq_train import VQTrainConfig, train_vq

    if args.size % args.factor:
        raise XPromptError(f"--size {args.size} must be a multiple of --factor {args.factor}")
    if not 0.0 <= args.photo_frac <= 1.0:
        raise XPromptError(f"--photo-frac must be in [0, 1], got {args.photo_frac}")
    vq = VQConfig(
        factor=args.factor,
        codebook_size=args.codebook_size,
        code_dim=args.code_dim,
        l2_norm=not args.no_l2_norm,
        base_channels=args.base_channels,
        max_channels=args.max_channels,
        num_res_blocks=args.res_blocks,
        beta=args.beta,
        patch=min(args.patch, args.factor),
        image_size=args.size,
    )
    cfg = VQTrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=min(100, max(1, args.steps // 10)),
        l1_weight=args.l1_weight,
        photo_frac=args.photo_frac,
        seed=args.seed,
        eval_every=args.eval_every,
        eval_images=args.eval_images,
        threads=args.threads,
        max_minutes=args.max_minutes,
        vq=vq,
    )
    if args.init and not Path(args.init, "config.json").is_file():
        raise XPromptError(f"--init {args.init}: no VQ checkpoint there (config.json missing)")
    result = train_vq(cfg, args.out, init=args.init, progress=progress_on(args))
    print(json.dumps({"out": str(args.out), **result}))
    return 0


def _corpus_texts():
    try:
        from xprompt.train.corpus import iter_texts
    except ModuleNotFoundError as e:
        if e.name and "xprompt.train.corpus".startswith(e.name):
            raise XPromptError(
                "the task-suite text corpus (xprompt.train.corpus) is not available in this version; "
                "pass --no-corpus with --text FILE to train on your own text"
            ) from None
        raise
    return iter_texts()


def _read_text_file(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise XPromptError(f"--text {path}: file not found")
    try:
        return [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise XPromptError(f"--text {path}: not a UTF-8 text file") from None


def _train_bpe(args: argparse.Namespace) -> int:
    import itertools

    from xprompt.tokenizer.text import TextTokenizer

    extra = [line for path in args.text for line in _read_text_file(path)]
    if args.no_corpus and not extra:
        raise XPromptError("--no-corpus needs at least one non-empty --text FILE")
    texts = extra if args.no_corpus else itertools.chain(_corpus_texts(), extra)
    out = Path(args.out)
    if out.is_dir() or args.out.endswith(("/", "\\")):
        out = out / "tokenizer.json"
    counter = {"n": 0}

    def counted():
        for t in texts:
            if not isinstance(t, str):
                raise XPromptError(f"text corpus yielded a {type(t).__name__}, expected str")
            counter["n"] += 1
            yield t

    tok = TextTokenizer.train(counted(), vocab_size=args.vocab_size, min_frequency=args.min_frequency)
    if counter["n"] == 0:
        raise XPromptError("no training text: the corpus and --text files are empty")
    tok.save(out)
    if tok.vocab_size < args.vocab_size:
        from xprompt.errors import xprompt_warn

        xprompt_warn(
            f"the BPE has {tok.vocab_size:,} entries, fewer than the {args.vocab_size:,} asked for: the text "
            f"has no more pairs seen at least --min-frequency {args.min_frequency} times (add --text files "
            "or lower --min-frequency)",
            stacklevel=2,
        )
    print(json.dumps({"out": str(out), "vocab_size": tok.vocab_size, "texts": counter["n"]}))
    return 0

"""Benchmark: task-suite dataset build speed and size, against the tiny model's training consumption.

Builds ``--n`` samples end to end (generation, VQ encoding, sequence layout, writing the sharded dataset) into
a temp dir and reports:
- build samples/s (end to end), and separately raw generation samples/s and image-encoding images/s;
- dataset size on disk per 10k samples (EXTRAPOLATED linearly from the measured ``--n`` build);
- the tiny model's consumption, ``tokens_per_s / mean tokens per sample`` (docs/design.md: ~4k tokens/s bf16 on
  this machine's 2 cores), and the ratio build / consumption, which must be >= 5;
- the build's CPU seconds, and the throughput they project for two free cores (the machine is shared, so
  the wall-clock rate varies with other jobs; both figures are written).
Prints the figures and writes JSON (default ``bench/results/data.json``).

    .venv/bin/python bench/data.py --n 1000 [--tokenizer checkpoints/vq-64] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (build workers)."""
    import resource

    me, ch = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + ch.ru_utime + ch.ru_stime


def dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def parse_args(argv=None) -> argparse.Namespace:
    from xprompt.paths import REPO_ROOT, shipped

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_tok = str(shipped("vq-64")) if shipped("vq-64").is_dir() else "grid:8"
    ap.add_argument("--tokenizer", default=default_tok, help="VQ checkpoint dir, or grid:8 (no VQ)")
    ap.add_argument("--bpe", default=str(shipped("bpe")))
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--split", default="train")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--group-size", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for VQ encoding")
    ap.add_argument(
        "--train-tokens-per-s", type=float, default=4000.0, help="tiny model consumption (docs/design.md)"
    )
    ap.add_argument("--out", default=str(REPO_ROOT / "bench" / "results" / "data.json"))
    return ap.parse_args(argv)


def time_parts(cfg, tokenizer: str, n: int) -> dict:
    """Raw generation alone (one process, up to 200 samples) and VQ encoding of their images alone."""
    from xprompt.tokenizer.loading import load_image_tokenizer
    from xprompt.train.build import draw_groups

    vq = load_image_tokenizer(tokenizer)
    n_groups = max(1, min(200, n) // cfg.group_size)
    draw_groups(cfg, 0, 2)  # warm caches (photo decoding)
    t = time.perf_counter()
    raw = draw_groups(cfg, 0, n_groups)
    gen_s = time.perf_counter() - t
    imgs = np.stack(
        [im for s in raw for im in (s.query.inputs + [s.query.output]) if not isinstance(im, str)]
    )
    vq.encode(imgs[:4])
    t = time.perf_counter()
    vq.encode(imgs)
    enc_s = time.perf_counter() - t
    return {
        "generation_samples_per_s": round(len(raw) / gen_s, 2),
        "encode_images_per_s": round(len(imgs) / enc_s, 2),
    }


def time_build(cfg, args) -> tuple[dict, float, float, int]:
    """A whole ``build_dataset`` into a temp dir: (card, wall seconds, CPU seconds incl. workers, data bytes)."""
    from xprompt.train.build import build_dataset

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ds"
        t = time.perf_counter()
        cpu0 = _cpu_seconds()
        card = build_dataset(cfg, out, tokenizer=args.tokenizer, bpe=args.bpe, progress=False)
        build_s = time.perf_counter() - t
        cpu_s = _cpu_seconds() - cpu0
        return card, build_s, cpu_s, dir_size(out / "data")


def main(argv=None) -> int:
    args = parse_args(argv)
    import os

    import torch

    from xprompt.io_utils import atomic_write_text
    from xprompt.train.build import BuildConfig

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    cfg = BuildConfig(split=args.split, n=args.n, size=args.size, seed=0, workers=args.workers,
                      group_size=args.group_size)  # fmt: skip
    parts = time_parts(cfg, args.tokenizer, args.n)
    card, build_s, cpu_s, size = time_build(cfg, args)
    mean_tok = card["tokens"]["mean"]
    build_sps = args.n / build_s
    consume_sps = args.train_tokens_per_s / mean_tok
    res = {
        "tokenizer": args.tokenizer, "size": args.size, "n": args.n, "split": args.split, "workers": args.workers,
        "group_size": args.group_size, "torch_threads": args.threads,
        "build_samples_per_s": round(build_sps, 2), "build_seconds": round(build_s, 2),
        **parts,
        "images_encoded_per_sample": round(card["images_encoded"] / args.n, 3),
        "mean_tokens_per_sample": round(mean_tok, 1),
        "disk_bytes": size, "disk_mb_per_10k_samples": round(size / args.n * 10_000 / 2**20, 1),
        "disk_per_10k_note": f"extrapolated linearly from a measured {args.n}-sample build",
        "train_tokens_per_s": args.train_tokens_per_s, "train_samples_per_s": round(consume_sps, 2),
        "build_over_train": round(build_sps / consume_sps, 2), "required_ratio": 5.0,
        "pass": bool(build_sps / consume_sps >= 5.0),
        "build_cpu_seconds": round(cpu_s, 2),
        "samples_per_cpu_second": round(args.n / cpu_s, 2),
        "projected_free_2core_samples_per_s": round(2 * args.n / cpu_s, 2),
        "projected_free_2core_over_train": round(2 * args.n / cpu_s / consume_sps, 2),
        "projection_note": "CPU time of the build (parent + workers) -> throughput if both cores were free "
        "(the 4k tokens/s training figure is also a free-machine figure); the measured wall-clock rate "
        "above depends on what else runs",
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],  # other jobs share the 2 cores
    }  # fmt: skip
    if args.tokenizer.startswith("grid:"):
        res["note"] = "grid:F is the parameter-free test tokenizer, not the VQ: encoding cost is understated"
    print(json.dumps(res, indent=2))
    atomic_write_text(args.out, json.dumps(res, indent=2) + "\n")
    return 0 if res["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())

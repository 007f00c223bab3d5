"""Benchmark the VQ image tokenizer: reconstruction PSNR/SSIM, codebook usage, throughput.

Held-out data: procedural scenes from a seed no training run uses (``--seed``, default 777_001; training
draws from its own ``seed`` and monitors ``seed + 1_000_003``) and crops of the reserved evaluation photos
(``photo_crop(split="eval")``: photographs never cropped for training). PSNR and SSIM come from
``skimage.metrics`` (data_range 255, SSIM over RGB with ``channel_axis``), averaged over images. Codebook
usage = distinct codes used / codebook size, on each set and on both together; perplexity = exp(entropy of
the code histogram). Throughput = images/s of encode + decode at batch 64 (torch threads as given).

    .venv/bin/python bench/tokenizer.py [--ckpt checkpoints/vq-64] [--n 256] [--out bench/results/tokenizer.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def _metrics(imgs: np.ndarray, recon: np.ndarray, codes: np.ndarray, k: int) -> dict:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnr = [peak_signal_noise_ratio(a, b, data_range=255) for a, b in zip(imgs, recon, strict=True)]
    ssim = [
        structural_similarity(a, b, data_range=255, channel_axis=-1) for a, b in zip(imgs, recon, strict=True)
    ]
    hist = np.bincount(codes.ravel(), minlength=k) / codes.size
    nz = hist[hist > 0]
    psnr_arr = np.minimum(np.array(psnr, dtype=np.float64), 100.0)  # identical images -> inf; cap
    return {
        "images": len(imgs),
        "psnr": round(float(psnr_arr.mean()), 3),
        "psnr_median": round(float(np.median(psnr_arr)), 3),
        "ssim": round(float(np.mean(ssim)), 4),
        "codebook_usage_pct": round(100.0 * len(nz) / k, 2),
        "perplexity": round(float(np.exp(-(nz * np.log(nz)).sum())), 1),
    }


def run(ckpt: str | Path, n: int = 256, size: int = 64, seed: int = 777_001, threads: int = 1) -> dict:
    import torch

    from xprompt.tokenizer.vq import VQTokenizer
    from xprompt.train.sources import photo_crop, scene_image

    torch.set_num_threads(threads)
    tok = VQTokenizer.from_pretrained(ckpt)
    rng_s, rng_p = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    sets = {
        "scenes": np.stack([scene_image(rng_s, size) for _ in range(n)]),
        "photos": np.stack([photo_crop(rng_p, size, split="eval") for _ in range(n)]),
    }
    result: dict = {
        "checkpoint": str(ckpt),
        "factor": tok.factor,
        "codebook_size": tok.codebook_size,
        "image_size": size,
        "tokens_per_image": (size // tok.factor) ** 2,
        "seed": seed,
    }
    all_codes = []
    for name, imgs in sets.items():
        codes = tok.encode(imgs)
        all_codes.append(codes)
        result[name] = _metrics(imgs, tok.decode(codes), codes, tok.codebook_size)
    both = np.concatenate(all_codes)
    result["codebook_usage_pct_all"] = round(100.0 * len(np.unique(both)) / tok.codebook_size, 2)

    batch = np.concatenate([sets["scenes"][:32], sets["photos"][:32]])  # (64,H,W,3)
    tok.decode(tok.encode(batch[:4]))  # warm-up
    reps, t0 = 3, time.perf_counter()
    for _ in range(reps):
        tok.decode(tok.encode(batch))
    dt = time.perf_counter() - t0
    result["throughput"] = {
        "images_per_s": round(reps * len(batch) / dt, 1),
        "batch": len(batch),
        "torch_threads": threads,
        "cpu": platform.processor() or platform.machine(),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from xprompt.paths import shipped

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=str(shipped("vq-64")))
    ap.add_argument("--n", type=int, default=256, help="images per held-out set")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=777_001)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "tokenizer.json"))
    args = ap.parse_args(argv)

    from xprompt.errors import XPromptError
    from xprompt.io_utils import atomic_write_text

    try:
        res = run(args.ckpt, args.n, args.size, args.seed, args.threads)
    except XPromptError as e:
        print(f"bench/tokenizer.py: error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(res, indent=2)
    print(text)
    atomic_write_text(args.out, text + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

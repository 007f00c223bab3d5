"""Training loop for the VQ image tokenizer on the project's images.

Design choices
* Data: an on-the-fly stream from ``xprompt.train.sources`` — procedural scenes (``scene_image``) and crops
  of packaged real photographs (``photo_crop(split="train")``), mixed ``photo_frac`` : 1-``photo_frac``.
  Crops are cheap (~3 ms at 64 px), so there is no dataset on disk and never a repeated batch.
* Held-out monitor: a fixed batch of scenes from a separate seed (``seed + 1_000_003``) and crops of the
  reserved evaluation photographs (``photo_crop(split="eval")``); recon PSNR of each half and the share of
  the codebook it uses are logged every ``eval_every`` steps.
* Optimiser: AdamW, linear warm-up then cosine decay to ``min_lr_frac`` of the peak learning rate. With
  ``max_minutes`` the schedule runs on whichever comes first, steps or wall time, so a run on a shared,
  contended CPU still ends with a fully decayed learning rate instead of being cut off mid-schedule.
* Codebook health: codes unused for ``restart_every`` steps are re-seeded from random encoder outputs of the
  current batch (a standard dead-code restart), stopped for the last ``restart_stop_frac`` of training so the
  final codebook settles.
* The checkpoint (config.json + model.safetensors + train_log.json) is written atomically as a directory at
  every evaluation and at the end, so an interrupted run leaves the last complete checkpoint.
* ``init`` continues from an existing checkpoint (same config) — used to extend a run.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from xprompt.errors import XPromptError
from xprompt.tokenizer.vq import VQConfig, VQModel
from xprompt.tokenizer.vq_losses import vq_loss


@dataclass
class VQTrainConfig:
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-3
    warmup: int = 100
    min_lr_frac: float = 0.1
    weight_decay: float = 0.0
    l1_weight: float = 0.0
    photo_frac: float = 0.5  # share of real photo crops in each batch (rest: procedural scenes)
    seed: int = 0
    eval_every: int = 250
    eval_images: int = 64  # per held-out source
    restart_every: int = 50
    restart_stop_frac: float = 0.2
    threads: int = 1
    max_minutes: float = 0.0  # 0 = no wall-clock limit; otherwise stop (and save) after this many minutes
    vq: VQConfig = field(default_factory=VQConfig)


def sample_batch(
    rng: np.random.Generator, n: int, size: int, photo_frac: float, split: str = "train"
) -> np.ndarray:
    """uint8 (n,size,size,3): a shuffled mix of photo crops and procedural scenes."""
    from xprompt.train.sources import photo_crop, scene_image

    n_photo = int(rng.binomial(n, photo_frac))
    imgs = [photo_crop(rng, size, split=split) for _ in range(n_photo)]
    imgs += [scene_image(rng, size) for _ in range(n - n_photo)]
    arr = np.stack(imgs)
    return arr[rng.permutation(n)]


def heldout_batches(seed: int, n: int, size: int) -> dict[str, np.ndarray]:
    """The fixed held-out monitor: scenes from a separate seed and crops of the reserved eval photographs."""
    from xprompt.train.sources import photo_crop, scene_image

    rng_s, rng_p = np.random.default_rng(seed + 1_000_003), np.random.default_rng(seed + 2_000_003)
    return {
        "scenes": np.stack([scene_image(rng_s, size) for _ in range(n)]),
        "photos": np.stack([photo_crop(rng_p, size, split="eval") for _ in range(n)]),
    }


def to_tensor(arr: np.ndarray) -> torch.Tensor:  # uint8 (B,H,W,3) -> float (B,3,H,W) in [-1,1]
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def psnr_uint8(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over images of per-image PSNR (dB) between uint8 arrays (B,H,W,3); identical images count 100 dB."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return float(np.mean(10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))))


@torch.no_grad()
def evaluate(model: VQModel, batches: dict[str, np.ndarray]) -> dict[str, float]:
    from xprompt.tokenizer.vq import VQTokenizer

    was_training = model.training
    tok = VQTokenizer(model)
    out: dict[str, float] = {}
    all_codes = []
    for name, imgs in batches.items():
        codes = tok.encode(imgs)
        out[f"psnr_{name}"] = round(psnr_uint8(imgs, tok.decode(codes)), 3)
        out[f"usage_{name}"] = round(len(np.unique(codes)) / model.codebook_size, 4)
        all_codes.append(codes.ravel())
    out["usage_all"] = round(len(np.unique(np.concatenate(all_codes))) / model.codebook_size, 4)
    model.train(was_training)
    return out


def progress_at(step: int, elapsed_min: float, cfg: VQTrainConfig) -> float:
    """Training progress in [0, 1]: by steps, or by wall time when ``max_minutes`` is set and comes first."""
    p = step / max(1, cfg.steps)
    if cfg.max_minutes:
        p = max(p, elapsed_min / cfg.max_minutes)
    return min(p, 1.0)


def lr_at(step: int, cfg: VQTrainConfig, progress: float | None = None) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay (over ``progress``) to ``min_lr_frac``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = step / max(1, cfg.steps) if progress is None else progress
    p0 = cfg.warmup / max(1, cfg.steps)
    t = (p - p0) / max(1e-9, 1 - p0)
    return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


def save_checkpoint(model: VQModel, out: Path, cfg: VQTrainConfig, log: list[dict]) -> None:
    from xprompt.io_utils import atomic_dir, atomic_write_text

    with atomic_dir(out, overwrite=True, marker="config.json") as tmp:
        model.save_pretrained(tmp)
        atomic_write_text(tmp / "train_config.json", json.dumps(asdict(cfg), indent=2) + "\n")
        atomic_write_text(tmp / "train_log.json", json.dumps(log, indent=1) + "\n")
        for extra in ("MODEL_CARD.md",):  # keep hand-written files that live beside the weights
            if (out / extra).is_file():
                (tmp / extra).write_bytes((out / extra).read_bytes())


def train_vq(
    cfg: VQTrainConfig, out: str | Path, init: str | Path | None = None, progress: bool = True
) -> dict:
    """Train a VQ tokenizer per ``cfg``; writes the checkpoint to ``out``; returns the final held-out metrics."""
    from tqdm import tqdm

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise XPromptError(f"{out} exists and is not a VQ checkpoint directory; choose another --out")
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise XPromptError("--steps and --batch-size must be positive")
    torch.manual_seed(cfg.seed)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    if init is not None:
        model = VQModel.from_pretrained(init)
        if model.config != cfg.vq:
            raise XPromptError(f"--init {init} has a different VQ config than requested: {model.config}")
    else:
        model = VQModel(cfg.vq)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    size = cfg.vq.image_size
    heldout = heldout_batches(cfg.seed, cfg.eval_images, size)
    usage = torch.zeros(cfg.vq.codebook_size, dtype=torch.long)  # code counts since the last restart check
    restart_until = 1 - cfg.restart_stop_frac  # progress after which dead codes are no longer restarted
    log: list[dict] = []
    t0 = time.time()
    bar = tqdm(range(cfg.steps), desc="train vq", disable=not progress, dynamic_ncols=True)
    metrics: dict[str, float] = {}
    for step in bar:
        prog = progress_at(step, (time.time() - t0) / 60, cfg)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg, prog)
        x = to_tensor(sample_batch(rng, cfg.batch_size, size, cfg.photo_frac))  # (B,3,H,W)
        res = model(x)
        loss, parts = vq_loss(x, res, beta=cfg.vq.beta, l1_weight=cfg.l1_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        usage += torch.bincount(res["codes"].flatten(), minlength=cfg.vq.codebook_size)
        restarted = 0
        if cfg.restart_every and (step + 1) % cfg.restart_every == 0:
            if prog < restart_until:
                restarted = model.quantizer.restart_dead_codes(res["z_e"].detach(), usage == 0)
            usage.zero_()
        elapsed = (time.time() - t0) / 60
        last = step == cfg.steps - 1 or bool(cfg.max_minutes and elapsed >= cfg.max_minutes)
        if (step + 1) % cfg.eval_every == 0 or last:
            metrics = evaluate(model, heldout)
            entry = {
                "step": step + 1,
                "minutes": round(elapsed, 2),
                **{k: round(v, 5) for k, v in parts.items()},
            }
            entry.update(metrics)
            log.append(entry)
            save_checkpoint(model, out, cfg, log)
            bar.write(json.dumps(entry))
        if progress:
            bar.set_postfix(loss=f"{parts['loss']:.4f}", rec=f"{parts['recon']:.4f}", restart=restarted)
        if last:
            break
    bar.close()
    return {"steps": log[-1]["step"], "minutes": log[-1]["minutes"], **metrics}

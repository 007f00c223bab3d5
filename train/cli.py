"""``xprompt train model``: the command-line front of ``xprompt.train.trainer.train``.

The same arguments work under the launchers (``deepspeed --num_gpus N -m xprompt.train ...``,
``torchrun --nproc_per_node N -m xprompt.train ...``), see ``xprompt/train/__main__.py``. ``--set key=value``
overrides a training-config field (value parsed as JSON, else taken as a string), so a sweep needs no file
edits. Heavy imports stay inside ``run`` so ``xprompt --help`` is fast.
"""

from __future__ import annotations

import argparse
import json

from xprompt.cli_options import add_run_options, progress_on
from xprompt.errors import ConfigError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", required=True, help="training config JSON (TrainConfig), e.g. configs/tiny.json"
    )
    p.add_argument("--data", required=True, help="dataset dir written by `xprompt data build`")
    p.add_argument("--out", required=True, help="run directory (checkpoints, logs, exported model)")
    p.add_argument(
        "--deepspeed",
        metavar="DS_CONFIG",
        default=None,
        help="DeepSpeed engine config (default: ds_config.json of the repository)",
    )
    p.add_argument(
        "--zero-stage",
        type=int,
        default=None,
        choices=(0, 1, 2, 3),
        help="override the ZeRO stage of the ds config (0 is fastest for a single CPU process)",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its latest checkpoint"
    )
    p.add_argument("--val-data", default=None, help="held-out dataset dir for validation loss")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a training-config field (repeatable), e.g. --set steps=200",
    )
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="N",
        help="stop this session after N optimizer steps (checkpointed; continue with --resume)",
    )
    add_run_options(p, threads_default=0, device_default="auto")  # training: torch's threads per process
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, val = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(val)
        except json.JSONDecodeError:
            out[key.strip()] = val
    return out


def run(args) -> int:
    from xprompt.train.train_config import load_train_config
    from xprompt.train.trainer import train

    overrides = parse_overrides(args.overrides)
    if args.threads > 0:  # --threads N is --set num_threads=N
        overrides.setdefault("num_threads", args.threads)
    cfg = load_train_config(args.config, overrides)
    _use_device(args.device)
    if args.stop_after is not None and args.stop_after < 1:
        raise ConfigError("--stop-after must be >= 1")
    summary = train(
        cfg,
        args.data,
        args.out,
        ds_config=args.deepspeed,
        resume=args.resume,
        val_data=args.val_data,
        stop_after=args.stop_after,
        local_rank=args.local_rank,
        progress=progress_on(args),
        zero_stage_override=args.zero_stage,
    )
    if summary.get("is_main", True):
        print(
            f"trained to step {summary['steps']}/{summary['target_steps']} "
            f"({summary['tokens_seen']:,} tokens); model: {summary['model']}"
        )
    return 0


def _use_device(device: str) -> None:
    """``--device cpu`` hides any GPU (and DeepSpeed uses its CPU accelerator); ``cuda`` requires one."""
    import os

    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda for training, got {device!r}")
    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
        os.environ["DS_ACCELERATOR"] = "cpu"
        return
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible here; use --device cpu (or auto)")


def register(root, groups) -> None:
    p = groups["train"].add_parser(
        "model",
        help="train the X-Prompt model (DeepSpeed)",
        description="Train the X-Prompt model with DeepSpeed ZeRO on packed sequences.",
    )
    add_arguments(p)
    p.set_defaults(func=run)

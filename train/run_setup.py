"""A training run's setup: validate the inputs, resolve the configs and the loaders, write the run files.

Design choices
* Split from ``trainer.py``: ``setup`` checks everything (out dir, data, model and DeepSpeed configs, resume
  compatibility) on every process *before* anything is written, and returns a ``Run`` holding what it
  resolved; the trainer only runs it. Errors are one-line ``XPromptError``s.
* Resume refuses a changed model config and the settings that would change the data order (mode, max_len,
  batch, packing, seed); other changed training fields are returned for a warning.
* Only process 0 writes: ``train_config.json`` and the resolved ``ds_config.json`` every session, ``run.json``
  (the marker of a run directory) when the run starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from xprompt.config_io import config_to_dict
from xprompt.errors import XPromptError
from xprompt.io_utils import atomic_write_text
from xprompt.model_config import ModelConfig, get_preset
from xprompt.paths import REPO_ROOT
from xprompt.train import dist
from xprompt.train.packing import Loader, SequencePlan, TrainingData, load_training_data
from xprompt.train.train_config import (
    DEFAULT_DS_CONFIG,
    TrainConfig,
    load_ds_config,
    resolve_ds_config,
    resolve_precision,
    zero_stage,
)

RUN_MARKER = "run.json"


def latest_tag(run_dir: Path) -> str | None:
    f = Path(run_dir) / "checkpoints" / "latest"
    if not f.is_file():
        return None
    tag = f.read_text().strip()
    return tag if (Path(run_dir) / "checkpoints" / tag).is_dir() else None


def _check_out_dir(out: Path, resume: bool) -> None:
    if resume:
        if not (out / RUN_MARKER).is_file():
            raise XPromptError(f"--resume: {out} is not a training run directory (no {RUN_MARKER})")
        if latest_tag(out) is None:
            raise XPromptError(f"--resume: {out} has no complete checkpoint to resume from")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise XPromptError(
            f"{out} already exists and is not empty; pass --resume to continue that run or choose "
            "another --out"
        )


def _check_resume_compatible(out: Path, model_cfg: dict, cfg: TrainConfig) -> list[str]:
    """Raise when the model config differs from the run's; return the changed training fields (warnings)."""
    run = json.loads((out / RUN_MARKER).read_text())
    old = run.get("model_config", {})
    if old != model_cfg:
        diff = sorted(k for k in set(old) | set(model_cfg) if old.get(k) != model_cfg.get(k))
        raise XPromptError(
            f"--resume: the model config differs from the run's in {', '.join(diff)}; resume with "
            "the run's own train_config.json or start a new --out"
        )
    old_tc = json.loads((out / "train_config.json").read_text())
    new_tc = config_to_dict(cfg)
    hard = ("mode", "mode_mix", "max_len", "global_batch", "pack", "seed")
    changed = sorted(k for k in new_tc if old_tc.get(k) != new_tc[k])
    bad = [k for k in changed if k in hard]
    if bad:
        raise XPromptError(
            f"--resume: {', '.join(bad)} changed since the run started; the data order would not "
            "continue (use the run's train_config.json)"
        )
    return changed


@dataclass
class Run:
    """Everything ``setup`` validated before the first write: configs, data and loaders of one run."""

    cfg: TrainConfig
    out: Path
    info: dist.DistInfo
    resume: bool
    data: TrainingData
    mcfg: ModelConfig
    model_cfg: dict  # mcfg as a dict (compared on resume, recorded in run.json)
    changed: list[str]  # training fields changed since the run started (resume only; a warning)
    ds: dict  # the resolved DeepSpeed config
    precision: str
    plan: SequencePlan
    loader: Loader
    val_loader: Loader | None

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    @property
    def accum(self) -> int:
        return self.ds["gradient_accumulation_steps"]

    def export_extra(self) -> dict:
        """What every exported model's meta.json records about the training."""
        return {
            "training": {
                "run_dir": str(self.out),
                "data": self.data.describe(),
                "train_config": config_to_dict(self.cfg),
                "precision": self.precision,
                "world_size": self.info.world_size,
            }
        }


def _raw_ds_config(ds_config: str | Path | dict | None, zero_stage_override: int | None) -> tuple[dict, str]:
    """The DeepSpeed config as given (dict, file, the repo's ds_config.json or the default) and where it came from."""
    if isinstance(ds_config, dict):
        ds_raw, ds_where = ds_config, "ds_config"
    elif ds_config is not None:
        ds_raw, ds_where = load_ds_config(ds_config), str(ds_config)
    elif (REPO_ROOT / "ds_config.json").is_file():
        ds_raw, ds_where = load_ds_config(REPO_ROOT / "ds_config.json"), str(REPO_ROOT / "ds_config.json")
    else:
        ds_raw, ds_where = DEFAULT_DS_CONFIG, "default ds config"
    if zero_stage_override is not None:
        if zero_stage_override not in (0, 1, 2, 3):
            raise XPromptError(f"--zero-stage must be 0, 1, 2 or 3, got {zero_stage_override}")
        ds_raw = dict(
            ds_raw, zero_optimization=dict(ds_raw.get("zero_optimization") or {}, stage=zero_stage_override)
        )
    return ds_raw, ds_where


def _loaders(
    cfg: TrainConfig, td: TrainingData, info: dist.DistInfo
) -> tuple[SequencePlan, Loader, Loader | None]:
    plan = SequencePlan(td.train.lengths, cfg.max_len, cfg.seed, pack=cfg.pack)
    if len(plan.fits) == 0:
        raise XPromptError(
            f"no training sample fits in max_len={cfg.max_len} tokens (longest: "
            f"{int(td.train.lengths.max())}); raise max_len"
        )
    pad_to = cfg.max_len if cfg.pad_to_max_len else None
    common = {
        "micro": cfg.micro_batch,
        "world": info.world_size,
        "global_batch": cfg.global_batch,
        "pad_to": pad_to,
        "doc_attention": cfg.doc_attention,
    }
    loader = Loader(td.train, plan, td.vocab, **common)
    val_loader = None
    if td.val is not None and len(td.val):
        vplan = SequencePlan(td.val.lengths, cfg.max_len, cfg.seed, pack=cfg.pack, shuffle=False)
        if len(vplan.fits):
            val_loader = Loader(td.val, vplan, td.vocab, **common)
    return plan, loader, val_loader


def setup(
    cfg: TrainConfig,
    data: str | Path,
    out: Path,
    info: dist.DistInfo,
    *,
    ds_config: str | Path | dict | None,
    resume: bool,
    val_data: str | Path | None,
    zero_stage_override: int | None,
) -> Run:
    """Validate everything (out dir, data, configs, resume compatibility) on every process; writes nothing."""
    _check_out_dir(out, resume)
    td = load_training_data(
        data,
        val_data=val_data,
        mode=cfg.mode,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        loss_on_examples=cfg.loss_on_examples,
        mode_mix=cfg.mode_mix,
    )
    mcfg = get_preset(cfg.preset, td.vocab.size, **cfg.model)
    if cfg.grad_checkpointing:
        mcfg = mcfg.replace(gradient_checkpointing=True)
    if mcfg.max_seq_len < cfg.max_len:
        raise XPromptError(f"max_len={cfg.max_len} exceeds the model's max_seq_len={mcfg.max_seq_len}")
    model_cfg = config_to_dict(mcfg)
    changed = _check_resume_compatible(out, model_cfg, cfg) if resume else []
    ds_raw, ds_where = _raw_ds_config(ds_config, zero_stage_override)
    precision = resolve_precision(cfg.precision, dist.device_type())
    ds = resolve_ds_config(ds_raw, cfg, info.world_size, precision, where=ds_where)
    plan, loader, val_loader = _loaders(cfg, td, info)
    return Run(cfg, out, info, resume, td, mcfg, model_cfg, changed, ds, precision, plan, loader, val_loader)


def write_run_files(run: Run, threads: int) -> None:
    """train_config.json and the resolved ds_config.json every session; run.json when the run starts."""
    import deepspeed
    import torch

    if not run.info.is_main:
        return
    out = run.out
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out / "train_config.json", json.dumps(config_to_dict(run.cfg), indent=2, sort_keys=True) + "\n"
    )
    atomic_write_text(out / "ds_config.json", json.dumps(run.ds, indent=2, sort_keys=True) + "\n")
    if run.resume:
        return
    record = {
        "format": "xprompt-run/1",
        "model_config": run.model_cfg,
        "data": run.data.describe(),
        "world_size": run.info.world_size,
        "precision": run.precision,
        "zero_stage": zero_stage(run.ds),
        "gradient_accumulation_steps": run.accum,
        "threads_per_process": threads,
        "skipped_too_long": run.plan.skipped,
        "epoch_sequences": run.plan.epoch_size(0),
        "torch": torch.__version__,
        "deepspeed": deepspeed.__version__,
    }
    atomic_write_text(out / RUN_MARKER, json.dumps(record, indent=2, sort_keys=True) + "\n")

"""Training checkpoints: the trainer state, saving (atomic, checksummed, pruned), verifying and resuming.

Design choices
* Split from ``trainer.py``: everything that writes or reads ``checkpoints/`` is here (the run layout is in
  ``trainer.py``'s docstring). A checkpoint is written under a temporary tag, hashed (``integrity.json``) and
  renamed when complete; ``latest`` is then replaced atomically and only the newest ``keep_last`` step dirs
  are kept, so an interrupted save never damages the previous checkpoint.
* DeepSpeed's files are unpickled by ``load_checkpoint``, so a step dir is verified against its record first.
  The DeepSpeed client state is ``TrainState`` + the RNG states; the data position is the step itself.
* Every checkpoint exports the model (``model/``; LoRA: merged, plus the adapter), gathered under ZeRO-3, and
  the run's top-level ``model/`` is replaced by a copy of the newest one.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xprompt.errors import CheckpointError
from xprompt.integrity import read_record, record_tree, verify, write_record
from xprompt.io_utils import atomic_write_text
from xprompt.train import dist
from xprompt.train.logging_utils import MetricsLog
from xprompt.train.run_setup import Run, latest_tag
from xprompt.train.train_config import zero_stage

TAG_PREFIX = "step_"
CKPT_FORMAT = "xprompt-train-checkpoint/1"


def _rng_state() -> dict:
    import torch

    np_state = np.random.get_state()
    st = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    import torch

    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    n = st["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


@dataclass
class TrainState:
    """The trainer's progress. With the RNG states it is the DeepSpeed checkpoint's client state."""

    step: int = 0
    tokens_seen: int = 0
    samples_seen: int = 0

    def client_state(self) -> dict:
        return {"step": self.step, "tokens_seen": self.tokens_seen, "samples_seen": self.samples_seen}


def start_or_resume(run: Run, engine, log: MetricsLog, n_params: int) -> TrainState:
    """A fresh state (a "start" event), or the latest checkpoint's engine, state and RNGs (a "resume" event)."""
    info = run.info
    if not run.resume:
        log.write(
            {
                "kind": "event",
                "step": 0,
                "event": "start",
                "params": n_params,
                "world_size": info.world_size,
                "precision": run.precision,
                "zero_stage": zero_stage(run.ds),
            }
        )
        return TrainState()
    tag = latest_tag(run.out)
    verify_training_checkpoint(run.ckpt_dir / tag)  # DeepSpeed unpickles these files: check them first
    try:
        _, client = engine.load_checkpoint(
            str(run.ckpt_dir), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
        )
    except Exception as e:  # noqa: BLE001 (DeepSpeed raises assorted errors for bad checkpoints)
        raise CheckpointError(
            f"--resume: cannot load {run.ckpt_dir / tag}: {type(e).__name__}: {e}"
        ) from None
    if client is None or "step" not in client:
        raise CheckpointError(f"--resume: {run.ckpt_dir / tag} has no trainer state")
    state = TrainState(client["step"], client["tokens_seen"], client["samples_seen"])
    _set_rng_state(client["rng"])
    log.truncate_after(state.step)
    log.write(
        {
            "kind": "event",
            "step": state.step,
            "event": "resume",
            "tag": tag,
            "changed": run.changed,
            "world_size": info.world_size,
        }
    )
    return state


def save(run: Run, engine, state: TrainState, step: int) -> None:
    """A checkpoint at ``step`` and the run's exported model (see ``_save_checkpoint``)."""
    _save_checkpoint(
        engine,
        run.ckpt_dir,
        step,
        state,
        run.data.vocab,
        run.cfg.keep_last,
        run.info,
        run.export_extra(),
        run.out,
    )


def _export_model(path: Path, model, vocab, meta: dict) -> None:
    """The exported model: plain weights; for a LoRA run the adapters merged into a copy (the training model
    keeps its adapters) and the adapter alone under ``model/lora`` (``xprompt export --lora`` merges it onto
    the original base)."""
    from xprompt.checkpoint import save_pretrained

    if not hasattr(model, "merge_and_unload"):
        save_pretrained(path, model, vocab, extra=meta)
        return
    import copy

    from xprompt.lora import merge, save_adapter, spec_from_dict

    tcfg = meta["training"]["train_config"]
    merged = merge(copy.deepcopy(model))
    save_pretrained(path, merged, vocab, extra=dict(meta, lora={"merged": True, "adapter": "lora"}))
    save_adapter(path / "lora", model, spec_from_dict(tcfg["lora"]), vocab, base=tcfg.get("init_from", ""))


def verify_training_checkpoint(path: Path) -> bool:
    """Check a step directory against its ``integrity.json`` before DeepSpeed reads it (DeepSpeed loads its
    files with torch.load and weights_only=False, i.e. unpickles them: a replaced file must never get there).
    False: a checkpoint written before checksums (resumed unchecked)."""
    what, fix = f"training checkpoint {path}", "resume from an earlier checkpoint or start a new run"
    return verify(path, read_record(path, what, fix), what, fix)


def _save_checkpoint(
    engine, ckpt_dir: Path, step: int, state: TrainState, vocab, keep_last: int, info, extra: dict, out: Path
) -> None:
    """DeepSpeed checkpoint + exported model under a temporary tag, renamed when complete (see module doc)."""
    tag = f"{TAG_PREFIX}{step:07d}"
    tmp_tag = f".tmp-{tag}"
    if info.is_main:
        shutil.rmtree(ckpt_dir / tmp_tag, ignore_errors=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    client = dict(state.client_state(), rng=_rng_state())
    engine.save_checkpoint(str(ckpt_dir), tag=tmp_tag, client_state=client, save_latest=False)
    model = engine.module
    meta = dict(extra, step=step, tokens_seen=state.tokens_seen)
    if engine.zero_optimization_stage() == 3:  # parameters are partitioned: gather them for the export
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            if info.is_main:
                _export_model(ckpt_dir / tmp_tag / "model", model, vocab, meta)
    elif info.is_main:
        _export_model(ckpt_dir / tmp_tag / "model", model, vocab, meta)
    dist.barrier()
    if info.is_main:
        write_record(ckpt_dir / tmp_tag, record_tree(ckpt_dir / tmp_tag), CKPT_FORMAT)  # complete: hash it
        final = ckpt_dir / tag
        if final.exists():
            shutil.rmtree(final)
        os.replace(ckpt_dir / tmp_tag, final)
        atomic_write_text(ckpt_dir / "latest", tag + "\n")
        # the run's top-level export: a copy of the newest checkpoint's model
        tmp_model = out / f".model.tmp-{os.getpid()}"
        shutil.rmtree(tmp_model, ignore_errors=True)
        shutil.copytree(final / "model", tmp_model)
        from xprompt.io_utils import replace_path

        replace_path(tmp_model, out / "model")
        tags = sorted(p.name for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith(TAG_PREFIX))
        for old in tags[:-keep_last]:
            if old != tag:
                shutil.rmtree(ckpt_dir / old, ignore_errors=True)
    dist.barrier()

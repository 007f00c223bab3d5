"""The DeepSpeed ZeRO trainer: engine setup, the packed training loop, validation, checkpoints and resume.

Design choices
* One entry point, ``train(...)``, used by the CLI (``xprompt train model``), by ``python -m xprompt.train``
  under the ``deepspeed`` / ``torchrun`` launchers, and by the tests. It reads as the steps it runs:
  ``setup`` (validates every input -- data dir, configs, resume compatibility -- on every process *before*
  anything is written; errors are one-line ``XPromptError``s) -> ``build_engine`` -> ``start_or_resume`` ->
  a loop of ``train_step`` (one optimizer step, advancing the ``TrainState``) with ``evaluate`` and ``save``
  on their schedules -> the final save and summary. ``Run`` holds what setup resolved; ``TrainState`` is what
  a checkpoint restores.
* Engine: ``deepspeed.initialize`` with a client ``torch.optim.AdamW`` (no decay on norms) and a client
  ``LambdaLR`` (warmup + cosine, ``TrainConfig.lr_factor``); ZeRO stage and comm settings from the resolved
  ds config (see ``train_config.resolve_ds_config``). bf16 = DeepSpeed's ``torch_autocast`` (fp32 master
  weights); the loss is computed in fp32 by ``xprompt.loss.next_token_loss``.
* Run directory::

      train_config.json  ds_config.json (resolved)  run.json (model config, data, world size, precision)
      metrics.jsonl  loss_curve.png  summary.json
      checkpoints/step_0000200/{DeepSpeed files, model/}   checkpoints/latest
      model/             the last exported model (config.json, model.safetensors, vocab.json, meta.json)

  A checkpoint is written under a temporary tag and renamed when complete; ``latest`` is then replaced
  atomically, and only the newest ``keep_last`` step dirs are kept. So an interrupted save never damages the
  previous checkpoint. Each step dir gets an ``integrity.json`` (size + SHA-256 of every file) before its
  rename; ``--resume`` checks it before DeepSpeed unpickles anything. The DeepSpeed part holds model, optimizer, scheduler and (as client state) the step,
  tokens seen and the RNG states; the data position is the step itself (``packing.SequencePlan``).
* Resume: the model config must equal the run's; DeepSpeed restores the engine, the loop continues at the
  saved step with the same data order; metrics after that step are dropped. In fp32 on one process the
  losses equal an uninterrupted run's (tested).
* Ctrl-C: inside a ``with _StopSignals()`` block the loop catches ``KeyboardInterrupt``, saves a checkpoint
  at the last completed step, exports the model and the loss curve, then re-raises (the CLI exits 130).
* Layout: this module is the engine and the loop (``build_engine``, ``train_step``, validation and the
  in-context probe on their schedule, the final summary); ``setup`` and ``Run`` are ``run_setup.py``;
  ``TrainState``, saving, verifying and resuming checkpoints are ``checkpointing.py``; the metrics log and
  progress bar ``logging_utils.py``.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from xprompt.errors import CheckpointError, XPromptError
from xprompt.io_utils import atomic_write_text
from xprompt.train import dist
from xprompt.train.checkpointing import TAG_PREFIX, TrainState, save, start_or_resume
from xprompt.train.logging_utils import MetricsLog, Progress, plot_loss_curve, read_metrics
from xprompt.train.run_setup import Run, latest_tag, setup, write_run_files
from xprompt.train.train_config import TrainConfig, zero_stage


def _param_groups(model, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: not on norms (incl. the 2-D per-head q/k norm affines) or biases."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 and "norm" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [
        g for g in groups if g["params"]
    ]  # LoRA trains no norm: DeepSpeed drops empty groups, LambdaLR must too


class _StopSignals:
    """SIGINT and SIGTERM -> one ``KeyboardInterrupt``; later signals are ignored so the save can finish.

    The deepspeed launcher answers Ctrl-C with SIGTERM to every rank and SIGKILL 30 s later; treating the
    first signal as a stop request and shielding the save from the second gives the ranks time to checkpoint.
    """

    def __init__(self):
        self.stopping = False
        self._old: dict = {}

    def _handler(self, signum, frame):
        if not self.stopping:
            self.stopping = True
            raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


# ---------------------------------------------------------------------- the engine


def build_engine(run: Run) -> tuple[object, int]:
    """The model (seeded), AdamW with no decay on norms, the warmup+cosine LambdaLR, in a DeepSpeed engine.

    Returns the engine and the parameter count (counted before ZeRO-3 partitions the parameters)."""
    import deepspeed
    import torch

    from xprompt.model import XPromptModel

    cfg = run.cfg
    torch.manual_seed(cfg.seed)
    model = XPromptModel(run.mcfg)
    if not run.resume:  # a resumed run loads its own weights; init_from / embed_init set the first ones
        from xprompt.train.code_init import prepare_model

        prepare_model(model, cfg, run.data.vocab, run.data.meta)
    model.set_gradient_checkpointing(cfg.grad_checkpointing)
    if cfg.compile:
        model.compile_regions()
    n_params = model.num_params()
    if cfg.lora:  # frozen base + adapters (xprompt.lora); the optimizer only sees trainable parameters
        from xprompt.lora import apply_lora, spec_from_dict

        model = apply_lora(model, run.data.vocab, spec_from_dict(cfg.lora))
    opt = torch.optim.AdamW(
        _param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cfg.lr_factor)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=opt, lr_scheduler=sched, config=run.ds, dist_init_required=False
    )
    return engine, n_params


# ---------------------------------------------------------------------- steps
def train_step(run: Run, engine, state: TrainState, step: int, device) -> dict:
    """One optimizer step (``accum`` micro-batches on every process); advances ``state``, returns the record."""
    import torch

    from xprompt.loss import next_token_loss

    cfg, stage0, gn0 = run.cfg, zero_stage(run.ds) == 0, None
    t0 = time.perf_counter()
    acc = np.zeros(8)  # ce*n, n, text*nt, nt, image*ni, ni, real tokens, samples
    for a in range(run.accum):
        batch, epoch = run.loader.micro_batch(step, a, run.info.rank)
        batch = batch.to(device)
        logits = engine(batch.input_ids, batch.position_ids, batch.attn_mask)  # (B, T, V)
        o = next_token_loss(
            logits, batch.input_ids, batch.loss_mask, z_loss=cfg.z_loss, image_mask=batch.image_mask
        )
        engine.backward(o["loss"])
        if stage0 and engine.is_gradient_accumulation_boundary():
            # DeepSpeed clips without recording the norm at stage 0; grads are already all-reduced here
            grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
            gn0 = float(torch.nn.utils.get_total_norm(grads))
        engine.step()
        n, nt, ni = int(o["n_tokens"]), int(o["text_tokens"]), int(o["image_tokens"])
        acc += [
            float(o["ce"].detach()) * n,
            n,
            float(o["text_loss"]) * nt,
            nt,
            float(o["image_loss"]) * ni,
            ni,
            batch.n_real,
            batch.n_samples,
        ]
    # resident memory summed over processes: long runs showed throughput falling as it grew (docs/training.md)
    acc = np.asarray(dist.all_reduce_sum(acc.tolist() + [_rss_bytes()]))
    dt = time.perf_counter() - t0
    state.step = step + 1
    state.tokens_seen += int(acc[6])
    state.samples_seen += int(acc[7])
    gn = engine.get_global_grad_norm() if not stage0 else gn0
    return {
        "kind": "train",
        "step": step + 1,
        "loss": acc[0] / max(acc[1], 1),
        "text_loss": acc[2] / acc[3] if acc[3] else None,
        "image_loss": acc[4] / acc[5] if acc[5] else None,
        "lr": cfg.lr * cfg.lr_factor(step),
        "grad_norm": float(gn) if gn is not None else None,
        "tokens_per_s": acc[6] / dt,
        "targets": int(acc[1]),
        "tokens": int(acc[6]),
        "tokens_seen": state.tokens_seen,
        "epoch": epoch,
        "step_time": dt,
        "rss_gb": round(acc[8] / 2**30, 3),
    }


def _rss_bytes() -> float:
    import psutil  # a DeepSpeed dependency

    return float(psutil.Process().memory_info().rss)


def evaluate(run: Run, engine, device) -> float | None:
    """Mean validation cross-entropy over ``val_batches`` batches (all processes), or None without val data."""
    import torch

    from xprompt.loss import next_token_loss

    if run.val_loader is None or run.cfg.val_batches == 0:
        return None
    engine.eval()
    tot = [0.0, 0.0]
    with torch.no_grad():
        for i in range(run.cfg.val_batches):
            b = run.val_loader.eval_batch(i, run.info.rank).to(device)
            o = next_token_loss(engine(b.input_ids, b.position_ids, b.attn_mask), b.input_ids, b.loss_mask)
            tot[0] += float(o["ce"]) * int(o["n_tokens"])
            tot[1] += int(o["n_tokens"])
    engine.train()
    s, n = dist.all_reduce_sum(tot)
    return s / max(n, 1)


def probe_val(run: Run, engine) -> dict:
    """The in-context probe (``xprompt.train.probe``) on the first ``probe_samples`` validation samples; every
    process computes the same numbers (so ZeRO-3's gathered forward works), rank 0 logs them."""
    from xprompt.train.probe import probe_data

    src = run.data.val
    rows = src.raw.select(src.indices[: run.cfg.probe_samples].tolist())
    return probe_data(
        engine.module, rows, run.data.vocab, n=run.cfg.probe_samples, mode=run.cfg.mode
    ).summary()


def _out_of_time(cfg: TrainConfig, t_start: float) -> bool:
    """True on every process once any process has run ``max_minutes`` (they must stop at the same step)."""
    if not cfg.max_minutes:
        return False
    late = float(time.time() - t_start > 60 * cfg.max_minutes)
    return dist.all_reduce_sum([late])[0] > 0


def _validate(run: Run, engine, step: int, log: MetricsLog, bar: Progress, device) -> None:
    """Validation loss and (``probe_samples``) the in-context probe, logged at ``step``."""
    vl = evaluate(run, engine, device)
    if vl is not None:
        log.write({"kind": "val", "step": step, "loss": vl})
        bar.write(f"step {step}: val loss {vl:.4f}")
    if run.cfg.probe_samples:
        pr = probe_val(run, engine)
        log.write({"kind": "probe", "step": step, **pr})
        bar.write(f"step {step}: reads example {pr['reads_example']:+.4f} nats on changed tokens")


def _after_step(
    run: Run, engine, state: TrainState, rec: dict, end: int, log: MetricsLog, bar: Progress, device
) -> None:
    """Log the step, stop on a non-finite loss, validate and save on their schedules."""
    cfg, step = run.cfg, rec["step"]
    bar.update(rec["loss"], rec["tokens_per_s"], rec["lr"])
    if step % cfg.log_every == 0 or step == end:
        log.write(rec)
    if not math.isfinite(rec["loss"]):
        raise XPromptError(f"loss became {rec['loss']} at step {step}; lower lr or enable z_loss")
    if run.val_loader is not None and (step % cfg.val_every == 0 or step == cfg.steps):
        _validate(run, engine, step, log, bar, device)
    if step % cfg.save_every == 0 and step != end:
        save(run, engine, state, step)


def _finish(
    run: Run,
    engine,
    state: TrainState,
    log: MetricsLog,
    *,
    n_params: int,
    t_start: float,
    last_loss: float,
    interrupted: bool,
) -> dict:
    """The final checkpoint (unless it exists), the stop event, summary.json and the loss curve."""
    out = run.out
    # the optimizer's own count is the truth: an interrupt between the last micro-batch's update and the
    # bookkeeping in train_step must not make a resume repeat that update
    state.step = final = int(engine.global_steps)
    if latest_tag(out) != f"{TAG_PREFIX}{final:07d}":
        save(run, engine, state, final)
    log.write(
        {
            "kind": "event",
            "step": final,
            "event": "interrupted" if interrupted else "stop",
            "wall_time": time.time() - t_start,
        }
    )
    log.close()
    summary = {
        "steps": final,
        "target_steps": run.cfg.steps,
        "tokens_seen": state.tokens_seen,
        "samples_seen": state.samples_seen,
        "last_train_loss": last_loss,
        "wall_time_this_session": time.time() - t_start,
        "interrupted": interrupted,
        "checkpoint": str(run.ckpt_dir / (latest_tag(out) or "")),
        "model": str(out / "model"),
        "params": n_params,
        "is_main": run.info.is_main,
    }
    if run.info.is_main:
        vals = read_metrics(out / "metrics.jsonl", "val")
        summary["last_val_loss"] = vals[-1]["loss"] if vals else None
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, sort_keys=True) + "\n")
        plot_loss_curve(
            out / "metrics.jsonl", out / "loss_curve.png", title=f"{run.mcfg.name} ({run.cfg.mode})"
        )
    dist.barrier()
    return summary


# ---------------------------------------------------------------------- the trainer
def train(
    cfg: TrainConfig,
    data: str | Path,
    out: str | Path,
    *,
    ds_config: str | Path | dict | None = None,
    resume: bool = False,
    val_data: str | Path | None = None,
    stop_after: int | None = None,
    on_step: Callable[[int, dict], None] | None = None,
    local_rank: int | None = None,
    progress: bool = True,
    zero_stage_override: int | None = None,
) -> dict:
    """Train (or resume) a model; returns the run summary (also written to ``summary.json``).

    ``stop_after`` ends this invocation after that many optimizer steps (a checkpoint is saved), e.g. to split
    a long run into sessions; ``on_step(step, record)`` is called after every step (tests use it to interrupt);
    ``zero_stage_override`` replaces the ds config's ZeRO stage.
    """
    info = dist.setup_env(local_rank)
    run = setup(
        cfg,
        data,
        Path(out),
        info,
        ds_config=ds_config,
        resume=resume,
        val_data=val_data,
        zero_stage_override=zero_stage_override,
    )
    if run.changed and info.is_main:
        from xprompt.errors import xprompt_warn

        changes = ", ".join(f"{k}" for k in run.changed)
        xprompt_warn(f"--resume: continuing with changed setting(s) {changes} (the run started with others; "
                     "see train_config.json)", stacklevel=2)  # fmt: skip
    if info.is_main and progress:
        dist.note_extension_build()
    device = dist.init_process_group(info)
    write_run_files(run, dist.set_threads(info, cfg.num_threads))
    dist.barrier()
    engine, n_params = build_engine(run)
    log = MetricsLog(run.out / "metrics.jsonl", enabled=info.is_main)
    state = start_or_resume(run, engine, log, n_params)
    if engine.global_steps != state.step:
        raise CheckpointError(
            f"--resume: the DeepSpeed checkpoint is at step {engine.global_steps}, the trainer "
            f"state at {state.step}; the checkpoint is inconsistent"
        )
    end = cfg.steps if stop_after is None else min(cfg.steps, state.step + stop_after)
    t_start, last_loss, interrupted = time.time(), float("nan"), False
    engine.train()
    with _StopSignals() as stop:
        bar = Progress(cfg.steps, state.step, enabled=info.is_main and progress)
        try:
            for step in range(state.step, end):
                rec = train_step(run, engine, state, step, device)
                last_loss = rec["loss"]
                _after_step(run, engine, state, rec, end, log, bar, device)
                if on_step is not None:
                    on_step(step + 1, rec)
                if _out_of_time(cfg, t_start):
                    if run.val_loader is not None and (step + 1) % cfg.val_every:  # a leg ends measured
                        _validate(run, engine, step + 1, log, bar, device)
                    log.write({"kind": "event", "step": step + 1, "event": "time budget reached"})
                    break
        except KeyboardInterrupt:
            interrupted = True
            stop.stopping = True  # from here on further signals are ignored: let the save finish
        finally:
            bar.close()
        summary = _finish(
            run,
            engine,
            state,
            log,
            n_params=n_params,
            t_start=t_start,
            last_loss=last_loss,
            interrupted=interrupted,
        )
    if interrupted:
        raise KeyboardInterrupt
    return summary

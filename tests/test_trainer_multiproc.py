"""Two processes through the real launchers (gloo on CPU): the same losses as one process, for ZeRO-2 (default
run) and ZeRO-3 / torchrun (slow). The data order and the gradient (mean over the same micro-batches) do not
depend on the number of processes, so the losses must agree to float tolerance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_packing import make_dataset

from xprompt.paths import REPO_ROOT
from xprompt.train.dist import free_port
from xprompt.train.train_config import DEFAULT_DS_CONFIG

BIN = Path(sys.executable).parent
CFG = {
    "preset": "tiny",
    "model": {"dim": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 2, "ffn_dim": 64},
    "max_len": 96,
    "micro_batch": 2,
    "global_batch": 4,
    "steps": 2,
    "lr": 3e-3,
    "warmup_steps": 1,
    "log_every": 1,
    "save_every": 100,
    "val_every": 2,
    "val_batches": 1,
    "val_fraction": 0.1,
    "precision": "fp32",
    "num_threads": 1,
}


def _losses(run: Path) -> list[float]:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in recs if r["kind"] == "train"]


def _launch(launcher: str, tmp_path: Path, stage: int, data: Path) -> Path:
    cfg, ds = tmp_path / "cfg.json", tmp_path / "ds.json"
    cfg.write_text(json.dumps(CFG))
    ds.write_text(json.dumps(dict(DEFAULT_DS_CONFIG, zero_optimization={"stage": stage})))
    out = tmp_path / f"run-{launcher}-{stage}"
    args = [
        "--config",
        str(cfg),
        "--data",
        str(data),
        "--out",
        str(out),
        "--deepspeed",
        str(ds),
        "--no-progress",
    ]
    port = str(free_port())
    if launcher == "deepspeed":
        cmd = [
            str(BIN / "deepspeed"),
            "--num_gpus",
            "2",
            "--master_port",
            port,
            "--module",
            "xprompt.train",
            *args,
        ]
    else:
        cmd = [
            str(BIN / "torchrun"),
            "--nproc_per_node",
            "2",
            "--master_port",
            port,
            "-m",
            "xprompt.train",
            *args,
        ]
    env = dict(
        os.environ,
        TORCH_EXTENSIONS_DIR=os.environ.get(
            "TORCH_EXTENSIONS_DIR", str(REPO_ROOT / ".cache" / "torch_extensions")
        ),
    )
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def _single(tmp_path: Path, stage: int, data: Path) -> list[float]:
    """The same config in this process (one process); the environment is restored afterwards."""
    from xprompt.config_io import load_config
    from xprompt.train.train_config import TrainConfig, load_ds_config
    from xprompt.train.trainer import train

    saved = dict(os.environ)
    try:
        for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(k, None)
        out = tmp_path / f"single-{stage}"
        train(
            load_config(TrainConfig, tmp_path / "cfg.json"),
            data,
            out,
            ds_config=load_ds_config(tmp_path / "ds.json"),
            progress=False,
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return _losses(out)


def _check(tmp_path: Path, launcher: str, stage: int):
    data = make_dataset(tmp_path / "d", n=60)
    out = _launch(launcher, tmp_path, stage, data)
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2 and run["zero_stage"] == stage and run["gradient_accumulation_steps"] == 1
    two = _losses(out)
    assert len(two) == 2
    one = _single(tmp_path, stage, data)
    assert one == pytest.approx(two, rel=1e-5)
    from xprompt.checkpoint import load_pretrained

    model, _ = load_pretrained(out / "model")  # the export gathers the (partitioned) weights
    assert model.cfg.dim == 32


def test_two_processes_zero2_deepspeed_launcher(tmp_path):
    _check(tmp_path, "deepspeed", 2)


@pytest.mark.slow
def test_two_processes_zero3_deepspeed_launcher(tmp_path):
    _check(tmp_path, "deepspeed", 3)


@pytest.mark.slow
def test_two_processes_zero2_torchrun(tmp_path):
    _check(tmp_path, "torchrun", 2)

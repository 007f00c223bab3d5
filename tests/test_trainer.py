"""Trainer: a few single-process steps on a tiny model, exact resume after Ctrl-C, the DeepSpeed config
resolution, bad input (one line, exit 2, nothing overwritten), and (in test_trainer_multiproc.py) 2 processes.

Single-process runs happen in this process (DeepSpeed's gloo group of one stays initialised for the module);
the environment variables the trainer sets are restored after each test.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_packing import make_dataset

from xprompt.cli import main as cli_main
from xprompt.config_io import config_from_dict
from xprompt.errors import ConfigError
from xprompt.paths import REPO_ROOT
from xprompt.train.train_config import DEFAULT_DS_CONFIG, TrainConfig, load_ds_config, resolve_ds_config

TINY = {
    "preset": "tiny",
    "model": {"dim": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 2, "ffn_dim": 64},
    "max_len": 96,
    "micro_batch": 2,
    "global_batch": 4,
    "steps": 6,
    "lr": 3e-3,
    "warmup_steps": 2,
    "log_every": 1,
    "save_every": 100,
    "val_every": 3,
    "val_batches": 1,
    "val_fraction": 0.1,
    "precision": "fp32",
    "num_threads": 1,
}


@pytest.fixture
def env():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "d", n=80)


def cfg(**kw) -> TrainConfig:
    return config_from_dict(TrainConfig, dict(TINY, **kw))


def losses(run: Path, key: str = "loss") -> dict[int, float]:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in recs if r["kind"] == "train"}


# ---------------------------------------------------------------------- config resolution (no training)
def test_shipped_ds_config_equals_default():
    assert load_ds_config(REPO_ROOT / "ds_config.json") == DEFAULT_DS_CONFIG


def test_ds_config_auto_filled_and_checked():
    c = cfg(micro_batch=2, global_batch=8, grad_clip=0.5)
    ds = resolve_ds_config(DEFAULT_DS_CONFIG, c, world_size=2, precision="bf16")
    assert (
        ds["train_micro_batch_size_per_gpu"],
        ds["gradient_accumulation_steps"],
        ds["train_batch_size"],
    ) == (2, 2, 8)
    assert ds["gradient_clipping"] == 0.5
    assert ds["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"} and ds["bf16"] == {"enabled": False}
    ds32 = resolve_ds_config(DEFAULT_DS_CONFIG, c, world_size=1, precision="fp32")
    assert ds32["torch_autocast"]["enabled"] is False and ds32["gradient_accumulation_steps"] == 4
    with pytest.raises(ConfigError, match="train_batch_size"):
        resolve_ds_config(dict(DEFAULT_DS_CONFIG, train_batch_size=6), c, 1, "fp32")
    with pytest.raises(ConfigError, match="not divisible"):
        resolve_ds_config(DEFAULT_DS_CONFIG, c, 3, "fp32")
    with pytest.raises(ConfigError, match="optimizer"):
        resolve_ds_config(dict(DEFAULT_DS_CONFIG, optimizer={"type": "Adam"}), c, 1, "fp32")
    with pytest.raises(ConfigError, match="fp16"):
        resolve_ds_config(dict(DEFAULT_DS_CONFIG, fp16={"enabled": True}), c, 1, "bf16")
    with pytest.raises(ConfigError, match="auto"):
        resolve_ds_config(
            dict(DEFAULT_DS_CONFIG, zero_optimization={"stage": 2, "reduce_bucket_size": "auto"}),
            c,
            1,
            "fp32",
        )


def test_train_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="unknown config key"):
        config_from_dict(TrainConfig, {"learning_rate": 1e-3})
    with pytest.raises(ConfigError, match="mode"):
        cfg(mode="half")
    with pytest.raises(ConfigError, match="multiple"):
        cfg(micro_batch=3, global_batch=8)
    with pytest.raises(ConfigError, match="compile with lora"):
        cfg(compile=True, lora={"r": 4})


def test_lr_schedule_warmup_then_cosine():
    c = cfg(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    f = [c.lr_factor(s) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(f[10:]))
    assert f[-1] == pytest.approx(0.1, abs=1e-3)


# ---------------------------------------------------------------------- training
def test_train_resume_after_ctrl_c_equals_uninterrupted(tmp_path, data, env):
    from xprompt.checkpoint import load_pretrained
    from xprompt.train.trainer import train

    full = train(cfg(), data, tmp_path / "full", progress=False)
    assert full["steps"] == 6 and full["tokens_seen"] > 0
    ref = losses(tmp_path / "full")
    assert len(ref) == 6 and ref[6] < ref[1]  # it learns
    model, vocab = load_pretrained(tmp_path / "full" / "model")
    assert model.cfg.dim == 32 and vocab.size == model.cfg.vocab_size
    assert (tmp_path / "full" / "loss_curve.png").stat().st_size > 1000
    meta = json.loads((tmp_path / "full" / "model" / "meta.json").read_text())
    assert meta["extra"]["training"]["data"]["meta"]["tokenizers.json"]["bpe"]["path"] == "checkpoints/bpe"
    vals = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in vals if r["kind"] == "val"] == [3, 6]

    def interrupt(step, rec):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg(), data, tmp_path / "cut", progress=False, on_step=interrupt)
    assert (tmp_path / "cut" / "checkpoints" / "latest").read_text().strip() == "step_0000003"
    load_pretrained(tmp_path / "cut" / "model")  # a usable export at the interruption
    resumed = train(cfg(), data, tmp_path / "cut", resume=True, progress=False)
    assert resumed["steps"] == 6 and resumed["tokens_seen"] == full["tokens_seen"]
    got = losses(tmp_path / "cut")
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    for s in range(1, 7):
        assert got[s] == pytest.approx(ref[s], rel=1e-6, abs=1e-7), (s, got[s], ref[s])
    gn_ref, gn = losses(tmp_path / "full", "grad_norm"), losses(tmp_path / "cut", "grad_norm")
    assert gn[6] == pytest.approx(gn_ref[6], rel=1e-5)


@pytest.mark.slow  # two cold torch.compile runs
def test_compiled_training_resumes_exactly_and_matches_eager(tmp_path, data, env):
    """``compile: true`` (campaign legs): Ctrl-C + resume equals the uninterrupted compiled run, and the
    compiled losses follow the eager ones (same data, same init)."""
    from xprompt.train.trainer import train

    train(cfg(compile=True), data, tmp_path / "full", progress=False)

    def interrupt(step, rec):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg(compile=True), data, tmp_path / "cut", progress=False, on_step=interrupt)
    train(cfg(compile=True), data, tmp_path / "cut", resume=True, progress=False)
    train(cfg(), data, tmp_path / "eager", progress=False)
    ref, got, eager = (losses(tmp_path / n) for n in ("full", "cut", "eager"))
    assert sorted(got) == sorted(ref) == list(range(1, 7))
    for s in ref:
        assert got[s] == pytest.approx(ref[s], rel=1e-6, abs=1e-7), (s, got[s], ref[s])
        assert ref[s] == pytest.approx(eager[s], rel=1e-3), (s, ref[s], eager[s])


def test_keep_last_and_modes(tmp_path, data, env):
    from xprompt.train.trainer import train

    out = train(
        cfg(mode="none", steps=4, save_every=1, keep_last=2, val_fraction=0.0, precision="auto"),
        data,
        tmp_path / "r",
        progress=False,
        zero_stage_override=0,
    )
    assert out["steps"] == 4
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["zero_stage"] == 0
    from xprompt.train.train_config import cpu_has_bf16

    assert run["precision"] == ("bf16" if cpu_has_bf16() else "fp32")
    tags = sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert tags == ["step_0000003", "step_0000004"]
    recs = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    norms = [r["grad_norm"] for r in recs if r.get("kind") == "train"]
    assert norms and all(isinstance(g, float) and g > 0 for g in norms)  # recorded at ZeRO stage 0 too
    # resident memory of this process: a real reading, not a placeholder (above the ~0.1 GB of a bare interpreter)
    assert all(0.2 < r["rss_gb"] < 64 for r in recs if r.get("kind") == "train")


# ---------------------------------------------------------------------- bad input through the CLI
def _cli(args, capsys):
    code = cli_main(["train", "model", *map(str, args)])
    return code, capsys.readouterr().err.strip()


def test_bad_input_one_line_exit_2(tmp_path, data, capsys, env):
    c = tmp_path / "c.json"
    c.write_text(json.dumps(TINY))
    code, err = _cli(["--config", c, "--data", tmp_path / "nope", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "data directory not found" in err and len(err.splitlines()) == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dict(TINY, lr_max=1.0)))
    code, err = _cli(["--config", bad, "--data", data, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "unknown config key" in err
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps(dict(DEFAULT_DS_CONFIG, train_micro_batch_size_per_gpu=3)))
    code, err = _cli(["--config", c, "--data", data, "--out", tmp_path / "o", "--deepspeed", ds], capsys)
    assert code == 2 and "contradicts" in err
    code, err = _cli(
        ["--config", c, "--data", data, "--out", tmp_path / "o", "--set", 'precision="fp16"'], capsys
    )
    assert code == 2 and "fp16" in err
    assert not (tmp_path / "o").exists()  # nothing written by any failed start
    code, err = _cli(["--config", c, "--data", data, "--out", tmp_path / "o", "--resume"], capsys)
    assert code == 2 and "not a training run" in err


def test_resume_with_other_model_config_refused(tmp_path, data, capsys, env):
    from xprompt.train.trainer import train

    train(cfg(steps=1), data, tmp_path / "r", progress=False)
    before = {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    c = tmp_path / "c.json"
    c.write_text(json.dumps(dict(TINY, steps=1, model=dict(TINY["model"], dim=64))))
    code, err = _cli(["--config", c, "--data", data, "--out", tmp_path / "r", "--resume"], capsys)
    assert code == 2 and "model config differs" in err and "dim" in err
    code, err = _cli(["--config", c, "--data", data, "--out", tmp_path / "r"], capsys)
    assert code == 2 and "--resume" in err
    after = {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    assert before == after


@pytest.mark.slow  # the task-suite build alone takes ~10 s
def test_trains_on_a_real_data_build(tmp_path, env):
    """The output of `xprompt data build` (grid test tokenizer, shipped BPE) trains in every context mode."""
    if not (REPO_ROOT / "checkpoints" / "bpe").is_dir():
        pytest.skip("no shipped BPE tokenizer")
    from xprompt.train.build import BuildConfig, build_dataset
    from xprompt.train.trainer import train

    build_dataset(
        config_from_dict(BuildConfig, {"n": 16, "size": 32, "seed": 0}),
        tmp_path / "d",
        tokenizer="grid:8",
        bpe=str(REPO_ROOT / "checkpoints" / "bpe"),
        progress=False,
    )
    for mode in ("xp", "full"):
        out = train(
            cfg(mode=mode, steps=1, max_len=512, val_fraction=0.2),
            tmp_path / "d",
            tmp_path / mode,
            progress=False,
        )
        assert out["steps"] == 1 and out["tokens_seen"] > 0
    run = json.loads((tmp_path / "xp" / "run.json").read_text())
    assert (
        "image_tokenizer" in run["data"]["meta"]["tokenizers.json"]
    )  # the tokenizers the data was built with


@pytest.mark.slow
def test_real_sigint_saves_a_usable_checkpoint(tmp_path, data):
    """A real Ctrl-C (SIGINT) to `xprompt train model`: exit 130, a checkpoint at the last step, resumable."""
    import signal
    import subprocess
    import time

    c = tmp_path / "c.json"
    c.write_text(json.dumps(dict(TINY, steps=500, val_fraction=0.0)))
    out = tmp_path / "r"
    cmd = [
        sys.executable,
        "-m",
        "xprompt",
        "train",
        "model",
        "--config",
        str(c),
        "--data",
        str(data),
        "--out",
        str(out),
        "--no-progress",
    ]
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")
    }
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        m = out / "metrics.jsonl"
        if m.exists() and sum('"train"' in x for x in m.read_text().splitlines()) >= 2:
            break
        time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 130, err[-2000:]
    tag = (out / "checkpoints" / "latest").read_text().strip()
    step = int(tag.split("_")[1])
    assert step >= 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["steps"] == step
    from xprompt.train.trainer import train

    saved = dict(os.environ)
    try:
        res = train(
            config_from_dict(TrainConfig, dict(TINY, steps=500, val_fraction=0.0)),
            data,
            out,
            resume=True,
            stop_after=1,
            progress=False,
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert res["steps"] == step + 1


def test_resume_with_changed_settings_warns_once_listing_them(tmp_path, data, capsys, env):
    c = tmp_path / "c.json"
    c.write_text(json.dumps(dict(TINY, steps=1)))
    base = ["--config", c, "--data", data, "--out", tmp_path / "r", "--no-progress"]
    code, err = _cli(base, capsys)
    assert code == 0 and "xprompt: warning" not in err
    assert "No CUDA runtime is found" not in err  # expected on a CPU machine: not shown
    code, err = _cli([*base, "--resume", "--set", "steps=2", "--set", "lr=0.001"], capsys)
    assert code == 0 and err.count("xprompt: warning:") == 1 and "changed setting(s) lr, steps" in err
    code, err = _cli([*base, "--resume", "--set", "steps=2", "--set", "lr=0.001"], capsys)
    assert (
        code == 0 and "xprompt: warning" not in err
    )  # the same settings as the last session: nothing to say


def test_first_run_says_what_deepspeed_builds(tmp_path, capsys, monkeypatch):
    from xprompt.train import dist

    monkeypatch.setattr(dist, "device_type", lambda: "cpu")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    dist.note_extension_build()
    err = capsys.readouterr().err
    assert "DeepSpeed compiles its CPU communication op into" in err and str(tmp_path / "ext") in err
    (tmp_path / "ext" / "deepspeed_shm_comm").mkdir(parents=True)
    (tmp_path / "ext" / "deepspeed_shm_comm" / "deepspeed_shm_comm.so").write_bytes(b"")
    dist.note_extension_build()
    assert capsys.readouterr().err == ""  # built already: nothing to say

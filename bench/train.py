"""Training benchmark: tokens/s of the tiny preset (fp32, bf16), MFU against a peak measured in the same run,
packed vs padded useful tokens/s, and ZeRO stage 0 / 2 / 3 step time with 2 processes.

Every number comes from the real trainer (``xprompt train model`` / ``deepspeed --module xprompt.train``) on a
task-suite dataset built here (64 px images, the 8x grid test tokenizer unless ``--tokenizer`` names a VQ
checkpoint; the token count per image is what matters for speed). Throughput is the median over the steps
after ``--warmup`` of the trainer's own ``tokens_per_s`` (non-padding tokens / step wall time).

* Peak: a large square matmul in fp32 and in bf16 with all cores' threads, timed for a few seconds, in this
  run: once at the start and again right before every trainer run (the machine is shared and its load
  drifts; each run's MFU uses the peak measured just before it; load averages are recorded too).
* MFU = 6 * N * tokens/s / peak, N = parameters that take part in matmuls (all but the input embedding
  table; the LM head counts). Attention score FLOPs are left out of the numerator, as in the usual 6N rule.
* Packing: the same model and precision with ``pack`` on (bins of max_len), with one sample per row padded to
  the longest row of the micro-batch ("padded, dynamic"), and padded to max_len ("padded, fixed"). Padded
  runs take k times more rows per step (k = samples per packed row) so that all see about the same tokens.
  The best any packing can do against "padded, dynamic" is bounded by the data's length spread: the script
  reports that bound (mean useful fraction of randomly drawn padded micro-batches of this data).
* Per-document attention: the packed bf16 run is repeated with ``doc_attention: false`` (one dense masked
  attention over each 1024-token row) to measure what attending per document buys, side by side.
* ``torch.compile``: the packed fp32 and bf16 runs, and the campaign's layout (2 processes, micro-batch 2,
  global 4, the precision ``"auto"`` picks here), each with and without ``compile``
  (``XPromptModel.compile_regions``); the compiled runs' first steps hold the compilation, so time them with
  enough ``--warmup`` steps (``--steps 14 --warmup 4``).

``--runs a,b`` times only the named runs (the figures that compare runs are given when both are present).

Usage: ``python bench/train.py [--steps 8] [--data DIR] [--out bench/results/train.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure_peak(dtype_name: str, n: int = 2048, seconds: float = 3.0, threads: int | None = None) -> float:
    """FLOP/s of an (n x n) @ (n x n) matmul in ``dtype_name``, best of repeated timed batches."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(3):
            a @ b
        best = max(best, 3 * 2 * n**3 / (time.perf_counter() - t0))
    return best


def build_data(out: Path, n: int, tokenizer: str) -> Path:
    from xprompt.config_io import config_from_dict
    from xprompt.train.build import BuildConfig, build_dataset

    cfg = config_from_dict(BuildConfig, {"n": n, "size": 64, "seed": 0, "split": "train"})
    build_dataset(cfg, out, tokenizer=tokenizer, bpe=str(ROOT / "checkpoints" / "bpe"), progress=False)
    return out


def run_trainer(tmp: Path, name: str, data: Path, overrides: dict, ds: dict, procs: int = 1) -> dict:
    """Run the trainer; returns its train records and the run's start event."""
    cfg = {
        "preset": "tiny",
        "max_len": 1024,
        "micro_batch": 4,
        "global_batch": 8,
        "steps": 8,
        "lr": 2e-3,
        "warmup_steps": 2,
        "log_every": 1,
        "save_every": 100000,
        "val_every": 100000,
        "val_batches": 0,
        "val_fraction": 0.0,
        "precision": "bf16",
        "keep_last": 1,
    }
    cfg.update(overrides)
    cfg_path, ds_path, out = tmp / f"{name}.json", tmp / f"{name}.ds.json", tmp / f"run-{name}"
    cfg_path.write_text(json.dumps(cfg))
    ds_path.write_text(json.dumps(ds))
    args = [
        "--config",
        str(cfg_path),
        "--data",
        str(data),
        "--out",
        str(out),
        "--deepspeed",
        str(ds_path),
        "--no-progress",
    ]
    bindir = Path(sys.executable).parent
    if procs == 1:
        cmd = [sys.executable, "-m", "xprompt", "train", "model", *args]
    else:
        from xprompt.train.dist import free_port

        cmd = [
            str(bindir / "deepspeed"),
            "--num_gpus",
            str(procs),
            "--master_port",
            str(free_port()),
            "--module",
            "xprompt.train",
            *args,
        ]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    t0 = time.time()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, cwd=tmp)
    if r.returncode != 0:
        raise RuntimeError(f"trainer run {name} failed:\n{r.stderr[-4000:]}")
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    start = next(x for x in recs if x.get("event") == "start")
    run = json.loads((out / "run.json").read_text())
    print(f"  {name}: {time.time() - t0:.0f} s wall", flush=True)
    return {"train": [x for x in recs if x["kind"] == "train"], "start": start, "run": run}


def summarize(res: dict, warmup: int) -> dict:
    recs = [r for r in res["train"] if r["step"] > warmup] or res["train"]
    return {
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in recs),
        "step_time_s": statistics.median(r["step_time"] for r in recs),
        "tokens_per_step": statistics.median(r["tokens"] for r in recs),
        "steps_timed": len(recs),
    }


def padding_bound(data: Path, rows: int, draws: int = 2000, seed: int = 0) -> dict:
    """Useful-token fraction of one-sample-per-row micro-batches of ``rows`` random samples padded to their
    longest row: 1 / that fraction is the most packing can gain over dynamic padding on this data."""
    import numpy as np

    from xprompt.train.packing import mode_lengths, open_dataset

    ds = open_dataset(data)[0]
    lens = mode_lengths(ds, "xp").astype(np.float64)
    rng = np.random.default_rng(seed)
    batches = lens[rng.integers(0, len(lens), (draws, rows))]  # (draws, rows)
    frac = float(batches.sum() / (batches.max(1) * rows).sum())
    return {
        "useful_fraction_padded_dynamic": frac,
        "max_packing_speedup_vs_dynamic": 1.0 / frac,
        "rows": rows,
    }


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="dataset dir (default: build 300 samples here)")
    ap.add_argument(
        "--tokenizer", default="grid:8", help="image tokenizer for the built data (grid:8 or a VQ dir)"
    )
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the timing")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train.json"))
    ap.add_argument("--skip-zero", action="store_true", help="skip the 2-process ZeRO comparison")
    ap.add_argument("--runs", default="", help="comma-separated run names to time (default: all)")
    return ap.parse_args(argv)


def run_plan(lens: dict | None, skip_zero: bool) -> tuple[dict, dict]:
    """The trainer runs to time: name -> (train-config overrides, ds config, processes); and the padded batch."""
    from xprompt.train.train_config import DEFAULT_DS_CONFIG, cpu_has_bf16

    stage0 = dict(DEFAULT_DS_CONFIG, zero_optimization={"stage": 0})
    # padded runs get as many rows as a packed row holds samples, so every step sees about the same tokens
    # (the optimizer step and other per-step costs are then shared by the same number of tokens)
    k = max(1, round(1024 / float(lens["mean"]))) if lens else 3
    pad_batch = {"micro_batch": 4 * k, "global_batch": 8 * k}
    runs = {
        "fp32_packed": ({"precision": "fp32"}, stage0, 1),
        "bf16_packed": ({"precision": "bf16"}, stage0, 1),
        "bf16_packed_dense_attention": ({"precision": "bf16", "doc_attention": False}, stage0, 1),
        "bf16_padded_dynamic": ({"precision": "bf16", "pack": False, **pad_batch}, stage0, 1),
        "bf16_padded_fixed": (
            {"precision": "bf16", "pack": False, "pad_to_max_len": True, **pad_batch},
            stage0,
            1,
        ),
        "bf16_packed_zero2_1proc": ({"precision": "bf16"}, DEFAULT_DS_CONFIG, 1),
        "fp32_packed_compiled": ({"precision": "fp32", "compile": True}, stage0, 1),
        "bf16_packed_compiled": ({"precision": "bf16", "compile": True}, stage0, 1),
    }
    # configs/campaign.json's geometry, in the precision "auto" picks on this machine
    campaign = {"precision": "bf16" if cpu_has_bf16() else "fp32", "micro_batch": 2, "global_batch": 4}
    runs["campaign_2proc"] = (campaign, stage0, 2)
    runs["campaign_2proc_compiled"] = (dict(campaign, compile=True), stage0, 2)
    if not skip_zero:
        for st in (0, 2, 3):
            runs[f"zero{st}_2proc"] = (
                {"precision": "bf16", "micro_batch": 4, "global_batch": 8},
                dict(DEFAULT_DS_CONFIG, zero_optimization={"stage": st}),
                2,
            )
    return runs, pad_batch


def time_runs(tmp: Path, data: Path, runs: dict, args, threads: int) -> tuple[dict, dict]:
    """Every planned trainer run, each compared with a peak measured right before it (the machine is shared
    and its load drifts): per-run summaries, and the model config of the runs."""
    out = {}
    print("trainer runs...", flush=True)
    for name, (ov, ds, procs) in runs.items():
        prec = ov["precision"]
        local_peak = measure_peak(prec, threads=threads, seconds=2.0)
        res = run_trainer(tmp, name, data, dict(ov, steps=args.steps), ds, procs)
        s = summarize(res, args.warmup)
        s.update(
            peak_flops_before=local_peak,
            precision=prec,
            params=res["start"]["params"],
            processes=procs,
            zero_stage=res["run"]["zero_stage"],
        )
        out[name] = s
    return out, res["run"]["model_config"]


def _ratio(out: dict, a: str, b: str) -> float | None:
    """tokens/s of run ``a`` over run ``b``, when both were timed."""
    if a in out and b in out:
        return out[a]["tokens_per_s"] / out[b]["tokens_per_s"]
    return None


def speedups(out: dict) -> dict:
    """The side-by-side ratios of the runs that were timed."""
    return {
        "packing_speedup": {
            "vs_padded_dynamic": _ratio(out, "bf16_packed", "bf16_padded_dynamic"),
            "vs_padded_fixed": _ratio(out, "bf16_packed", "bf16_padded_fixed"),
        },
        "doc_attention_speedup": _ratio(out, "bf16_packed", "bf16_packed_dense_attention"),
        "compile_speedup": {
            "fp32_1proc": _ratio(out, "fp32_packed_compiled", "fp32_packed"),
            "bf16_1proc": _ratio(out, "bf16_packed_compiled", "bf16_packed"),
            "campaign_2proc": _ratio(out, "campaign_2proc_compiled", "campaign_2proc"),
        },
    }


def _x(v: float | None) -> str:
    return "n/a" if v is None else f"x{v:.2f}"


def print_summary(result: dict) -> None:
    out = result["runs"]
    print(f"\n{'run':28s} {'proc':>4s} {'zero':>4s} {'tok/s':>8s} {'step s':>7s} {'MFU':>6s}")
    for name, s in out.items():
        print(
            f"{name:28s} {s['processes']:4d} {s['zero_stage']:4d} {s['tokens_per_s']:8.0f} "
            f"{s['step_time_s']:7.2f} {100 * s['mfu']:5.1f}%"
        )
    ps, cs = result["packing_speedup"], result["compile_speedup"]
    print(
        f"packing speedup: {_x(ps['vs_padded_fixed'])} vs padded to max_len, "
        f"{_x(ps['vs_padded_dynamic'])} vs padded to the longest row"
    )
    pb = result["packing_bound"]
    print(
        f"  (bound on this data: x{pb['max_packing_speedup_vs_dynamic']:.2f} vs padded to the longest row; "
        f"per-document attention vs dense mask: {_x(result['doc_attention_speedup'])})"
    )
    print(
        f"torch.compile speedup: fp32 {_x(cs['fp32_1proc'])}, bf16 {_x(cs['bf16_1proc'])} (1 process); "
        f"campaign layout {_x(cs['campaign_2proc'])} (2 processes)"
    )
    print(
        f"load average start {result['machine']['load_avg_start']}, end {result['machine']['load_avg_end']}"
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    from xprompt.io_utils import atomic_write_text
    from xprompt.train.train_config import cpu_has_bf16

    threads = os.cpu_count() or 1
    result = {
        "machine": {"cpus": threads, "bf16_cpu": cpu_has_bf16(), "load_avg_start": os.getloadavg()},
        "steps": args.steps,
        "warmup": args.warmup,
    }
    print(f"peak matmul ({threads} threads)...", flush=True)
    peak = {d: measure_peak(d, threads=threads) for d in ("fp32", "bf16")}
    result["peak_flops"] = peak
    print(f"  fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s", flush=True)

    with tempfile.TemporaryDirectory(prefix="xprompt-bench-train-") as td:
        tmp = Path(td)
        data = Path(args.data) if args.data else build_data(tmp / "data", 300, args.tokenizer)
        card = data / "dataset_card.json"
        lens = json.loads(card.read_text())["tokens"] if card.is_file() else None
        result["data"] = {
            "dir": args.data or f"built: 300 samples, 64 px, tokenizer {args.tokenizer}",
            "tokens_per_sample": lens,
        }
        runs, pad_batch = run_plan(lens, args.skip_zero)
        if args.runs:
            wanted = set(args.runs.split(","))
            if wanted - set(runs):
                print(
                    f"error: unknown run(s) {', '.join(sorted(wanted - set(runs)))}; choose from {', '.join(runs)}",
                    file=sys.stderr,
                )
                return 2
            runs = {k: v for k, v in runs.items() if k in wanted}
        result["packing_bound"] = padding_bound(data, pad_batch["micro_batch"])
        out, mc = time_runs(tmp, data, runs, args, threads)
    n_total = next(iter(out.values()))["params"]
    n_matmul = n_total - mc["vocab_size"] * mc["dim"]
    for s in out.values():
        s["mfu"] = 6 * n_matmul * s["tokens_per_s"] / s["peak_flops_before"]
    result["model"] = {
        "preset": "tiny",
        "params": n_total,
        "matmul_params": n_matmul,
        "vocab_size": mc["vocab_size"],
        "dim": mc["dim"],
        "n_layers": mc["n_layers"],
        "max_len": 1024,
    }
    result["runs"] = out
    result.update(speedups(out))
    result["targets"] = {"mfu_bf16": ">= 0.30", "packing_speedup": ">= 1.3"}
    result["machine"]["load_avg_end"] = os.getloadavg()
    print_summary(result)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

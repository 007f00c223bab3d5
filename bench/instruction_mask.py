"""Benchmark: how well masks from the instruction's named object cover the real change (issue 17).

For each edit task of the suite, ``--n`` seeded evaluation instances (``make_eval_instances``, the ones
``xprompt eval`` uses; clean renders) go through ``xprompt.instruction_mask.instruction_mask`` and are compared
with the ground truth (``xprompt.eval.masked.automask_coverage``): the fraction found, the mean and minimum
fraction of changed pixels inside the mask, the fraction of instances covered completely, the IoU with the
oracle change box of the ``xp-mask`` row, the masked area (instruction mask vs oracle box), and ms per mask.
Prints a table and writes JSON (default ``bench/results/instruction_mask.json``).

    .venv/bin/python bench/instruction_mask.py --n 200 [--size 64] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

TASKS = ("add_object", "remove_object", "recolor", "move", "resize", "replace_background")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "instruction_mask.json"))
    args = p.parse_args(argv)
    import torch

    from xprompt.eval.masked import automask_coverage
    from xprompt.io_utils import atomic_write_text

    torch.set_num_threads(1)
    rows = []
    print(
        f"{'task':20s} {'found':>6s} {'cover':>7s} {'full':>6s} {'min':>6s} {'IoU/box':>7s} {'area':>6s} {'box':>6s} {'s':>6s}"
    )
    for task in TASKS:
        t0 = time.perf_counter()
        r = automask_coverage(task, args.n, args.size, args.seed)
        r["seconds"] = time.perf_counter() - t0  # includes drawing and rendering the instances
        rows.append(r)
        print(f"{task:20s} {r['found']:6.3f} {r['coverage']:7.4f} {r['full']:6.3f} {r['min_coverage']:6.3f} "
              f"{r['iou_oracle']:7.3f} {r['area']:6.3f} {r['oracle_area']:6.3f} {r['seconds']:6.1f}")  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out, json.dumps({"n": args.n, "size": args.size, "seed": args.seed, "tasks": rows}, indent=1)
    )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

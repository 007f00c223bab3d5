"""Plot the campaign's learning curves from ``legs.json`` (beside this file): validation loss and the in-training
probe's reads-example against cumulative training tokens, one colour per leg.

Usage: ``python checkpoints/campaign/plot_legs.py OUT.png`` (matplotlib, as the trainer's own loss curve).
The legs' run folders are not kept (each leg ran on its own machine); ``legs.json`` holds what their
``metrics.jsonl`` recorded at each validation, so the figure can be redrawn from the repository alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def points(leg: dict) -> tuple[list[float], list[float], list[float]]:
    per_step = leg["tokens_m"] / leg["steps"]  # a leg's mean packed tokens per step, M
    xs = [leg["start_tokens_m"] + p["step"] * per_step for p in leg["points"]]
    return xs, [p["val"] for p in leg["points"]], [p["reads"] for p in leg["points"]]


def main(out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    legs = json.loads((Path(__file__).parent / "legs.json").read_text())["legs"]
    fig, (ax_val, ax_read) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for leg in legs:
        xs, val, reads = points(leg)
        ax_val.plot(xs, val, marker=".", label=f"leg {leg['leg']}")
        ax_read.plot(xs, reads, marker=".")
    ax_val.set_ylabel("val loss (nats)")
    ax_val.legend(ncol=4, fontsize=8)
    ax_read.axhline(0.0, color="grey", lw=0.5)
    ax_read.set_ylabel("reads example (nats)")
    ax_read.set_xlabel("cumulative training tokens (M)")
    fig.suptitle("xprompt campaign (tiny, 6.1 M parameters): validation and in-context probe by leg")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(out)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python checkpoints/campaign/plot_legs.py OUT.png")
    main(sys.argv[1])

"""Training logs: JSONL metrics, the progress bar and the loss-curve PNG.

Design choices
* ``metrics.jsonl``: one JSON object per line, ``{"kind": "train" | "val" | "event", "step": ..., ...}``.
  Lines are flushed as they are written, so a crashed run keeps its history. On ``--resume`` the records
  after the resumed step are dropped (rewritten atomically) so the file describes one consistent run.
* Only process 0 writes; the numbers it writes are already averaged over processes by the trainer.
* The loss curve is drawn with matplotlib's Agg backend (no display) and written atomically.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from xprompt.io_utils import atomic_write_bytes, atomic_write_text


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricsLog:
    def __init__(self, path: Path, enabled: bool = True):
        self.path, self.enabled = Path(path), enabled
        self._f = None

    def truncate_after(self, step: int) -> None:
        """Drop records with ``step > step`` (used on resume)."""
        if not self.enabled or not self.path.exists():
            return
        keep = [line for line in read_jsonl_lines(self.path) if json.loads(line).get("step", 0) <= step]
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", buffering=1)  # noqa: SIM115 (kept open for the run)
        self._f.write(json.dumps({k: _clean(v) for k, v in record.items()}, sort_keys=True) + "\n")
        self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def read_jsonl_lines(path: Path) -> list[str]:
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash: ignore it
            continue
        out.append(line)
    return out


def read_metrics(path: Path, kind: str | None = None) -> list[dict]:
    recs = [json.loads(line) for line in read_jsonl_lines(path)] if Path(path).exists() else []
    return [r for r in recs if kind is None or r.get("kind") == kind]


def plot_loss_curve(metrics_path: Path, png_path: Path, title: str = "") -> Path | None:
    """Train loss (total, text, image) and val loss against step -> PNG. None when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = read_metrics(metrics_path, "train")
    val = read_metrics(metrics_path, "val")
    if not train and not val:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    if train:
        steps = [r["step"] for r in train]
        ax.plot(steps, [r["loss"] for r in train], label="train loss", lw=1.4)
        for key, style in (("text_loss", ":"), ("image_loss", "--")):
            pts = [(r["step"], r[key]) for r in train if isinstance(r.get(key), (int, float)) and r.get(key)]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, lw=1.0, label=f"train {key.replace('_', ' ')}")
    if val:
        ax.plot([r["step"] for r in val], [r["loss"] for r in val], "o-", ms=3, label="val loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("next-token loss (nats)")
    ax.set_title(title or "training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(png_path, buf.getvalue())
    return Path(png_path)


class Progress:
    """A tqdm bar on process 0 showing loss and tokens/s; a no-op elsewhere."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)

    def update(self, loss: float, tok_s: float, lr: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tok_s:,.0f}", lr=f"{lr:.2e}", refresh=False)
            self.bar.update(1)

    def write(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

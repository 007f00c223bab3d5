"""Benchmark: the web app's latency on the shipped model, direct call against the HTTP API.

Loads the shipped model (``XPrompt.from_pretrained()``, one torch thread as ``xprompt serve`` runs), starts the
Gradio app on a free local port and reports, for one in-context generation (a photo pair, a photo query,
greedy, mode xp):
- model load and app start-up seconds;
- the median of ``--n`` direct ``handlers.in_context`` calls, and of ``--n`` ``gradio_client`` calls of
  ``/generate`` (upload, queue, decode, download): their difference is the web layer's overhead;
- 4 clients at once (the queue runs one job at a time): wall seconds until all have their image.
The machine is shared (training may hold the cores): the 1-minute load average is written beside the figures.
Prints the figures and writes JSON (default ``bench/results/serve.json``).

    .venv/bin/python bench/serve.py [--n 5] [--out bench/results/serve.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path


def photos(d: Path) -> dict:
    import numpy as np
    from skimage import data

    from xprompt.images import write_png

    astro = data.astronaut()[::4, ::4]
    grey = np.repeat(astro.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    out = {"a": d / "a.png", "b": d / "b.png", "q": d / "q.png"}
    write_png(out["a"], astro)
    write_png(out["b"], grey)
    write_png(out["q"], data.coffee()[::4, ::4])
    return {k: str(v) for k, v in out.items()}


def main(argv=None) -> int:
    from xprompt.cli import set_offline_env
    from xprompt.paths import REPO_ROOT

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5, help="timed calls per path (default 5)")
    ap.add_argument("--out", default=str(REPO_ROOT / "bench" / "results" / "serve.json"))
    args = ap.parse_args(argv)
    set_offline_env()
    import torch
    from gradio_client import Client, handle_file

    from xprompt.pipeline import XPrompt
    from xprompt.serve import handlers as H
    from xprompt.serve.app import build_app, launch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    xp = XPrompt.from_pretrained()
    load_s = time.perf_counter() - t0
    f = photos(Path(tempfile.mkdtemp(prefix="bench-serve-")))
    slots = [f["a"], f["b"]] + [None] * (2 * H.MAX_PAIRS - 2)
    greedy = H.sampling_kwargs(greedy=True)
    H.in_context(xp, slots, f["q"], "", "xp", None, greedy)  # warm-up
    direct = []
    for _ in range(args.n):
        t = time.perf_counter()
        H.in_context(xp, slots, f["q"], "", "xp", None, greedy)
        direct.append(time.perf_counter() - t)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    app = build_app(xp)
    _, url, _ = launch(app, port=port, block=False, quiet=True)
    start_s = time.perf_counter() - t0
    up = [handle_file(p) if p else None for p in slots]
    call = [*up, handle_file(f["q"]), "", "xp", None, True, 0, 0, 1.0, 1.0]
    client = Client(url, verbose=False)
    client.predict(*call, api_name="/generate")  # warm-up
    http = []
    for _ in range(args.n):
        t = time.perf_counter()
        client.predict(*call, api_name="/generate")
        http.append(time.perf_counter() - t)

    got = []
    clients = [Client(url, verbose=False) for _ in range(4)]
    t0 = time.perf_counter()
    threads = [
        threading.Thread(target=lambda c=c: got.append(c.predict(*call, api_name="/generate")[0]))
        for c in clients
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    four_s = time.perf_counter() - t0
    app.close()

    res = {
        "model": str(xp.checkpoint),
        "image_size": xp.image_size,
        "torch_threads": 1,
        "model_load_s": round(load_s, 2),
        "app_start_s": round(start_s, 2),
        "direct_median_s": round(statistics.median(direct), 3),
        "http_median_s": round(statistics.median(http), 3),
        "http_overhead_s": round(statistics.median(http) - statistics.median(direct), 3),
        "four_clients_wall_s": round(four_s, 2),
        "four_clients_images": sum(1 for p in got if p and Path(p).is_file()),
        "n": args.n,
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    for k, v in res.items():
        print(f"{k:>22}: {v}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if res["four_clients_images"] == 4 else 1


if __name__ == "__main__":
    raise SystemExit(main())

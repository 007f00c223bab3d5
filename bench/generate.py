"""Benchmark generation on one random ``tiny`` model, side by side in one run.

(a) ours (KV cache, compressed context) vs a naive no-cache loop (full masked forward per token), same greedy
    output checked token for token;
(b) compressed (``xp``: IE entries dropped after prefill) vs uncompressed (``full`` layout: IE stays in the
    cache) in-context image generation with 1 and 3 example pairs, for every grid of ``--grids`` (24 = 384 px
    and 32 = 512 px at 16x, the paper's scale: 1,024 codes per image): latency per generated image (wall and
    process CPU time), its prefill / decoding split, peak KV-cache size, for one query and for a batch of
    queries sharing the examples (one task applied to several images), plus compiled task prompts (``.xpt``:
    the examples read once, beforehand), compared like for like: the task compiled in ``xp`` layout (PREFIX +
    XP kept) against the same task compiled in ``full`` layout (every example entry kept).
    Beside each measured ratio stands an analytic reference: the ratio of multiply-accumulates (linear layers,
    attention over the keys each token sees, LM head rows actually computed) of the two runs, and for the
    decoding loop the ratio of bytes read (weights once per step + every row's KV cache). The MAC ratio is not
    a bound on wall time (prefill runs as matrix products at many times the MAC rate of one-token decoding,
    so the measured ratio can exceed it); the bytes ratio is the ceiling for decoding if a step cost only its
    memory traffic. A least-squares fit of the batch-1 step time (fixed + per cached key) shows how much of a
    step the cache size can change at all.
(c) ours vs transformers' ``generate()`` on ``ChameleonForConditionalGeneration`` holding the same weights:
    greedy text tokens (HF blanks image logits, so ours blanks them too), same tokens checked.

Configurations are interleaved and repeated; the minimum over repetitions is reported (the machine is shared
and loaded, so absolute times are noisy; ratios within a run are what to read). fp32, ``--threads`` torch
threads. The issue's compression targets are judged at ``--judge-grid`` (default 32, the paper's scale) and
``--batch`` (default 8 queries of one task: at batch 1 reading the weights dominates a step of this tiny model
whatever the cache holds; batch-1 figures are reported beside).

    .venv/bin/python bench/generate.py [--grids 24,32] [--batch 8] [--reps 2] [--threads 1] \
        [--out bench/results/generate.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from xprompt.checkpoint import to_hf_model
from xprompt.compiled import compile_prompt
from xprompt.generation import decode, generate_images, prefill, td_only
from xprompt.masks import build_attention_mask, kept_entries
from xprompt.model import XPromptModel
from xprompt.model_config import get_preset
from xprompt.sampling import ImageGrid, SamplingConfig
from xprompt.sequence import Seg, SequenceBuilder, TokenSequence
from xprompt.tokenizer.vocab import Vocabulary

GREEDY = SamplingConfig(greedy=True)


def build_prompt(vocab, text_ids, examples, mode: str, query) -> TokenSequence:
    """<bos> instruction-like text, the example pairs (IE), XP (mode xp), the query image (TD)."""
    b = SequenceBuilder(vocab)
    b.add([vocab.bos_id], Seg.PREFIX)
    b.add(list(text_ids) + [vocab.eot_id], Seg.PREFIX)
    for inp, out in examples:
        b.image(inp, Seg.IE)
        b.image(out, Seg.IE)
    if mode == "xp":
        b.xp()
    b.image(query, Seg.TD)
    return b.build()


def random_examples(vocab, rng, n: int, grid: int):
    return [tuple(rng.integers(0, vocab.num_image_codes, (grid, grid)) for _ in range(2)) for _ in range(n)]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def run_ours(model, vocab, prompts, grid, context=None, context_segs=None):
    """-> dict: wall and process-CPU seconds in total and to the first sampled token (= prefill; the first
    ``on_step`` call), peak committed and allocated KV bytes, and the codes."""
    peak, alloc, first = [0], [0], []

    def track(step, cache):
        if not first:
            first.append((time.perf_counter(), time.process_time()))
        peak[0] = max(peak[0], cache.nbytes())
        alloc[0] = max(alloc[0], cache.capacity_nbytes())

    t0, c0 = time.perf_counter(), time.process_time()
    out = generate_images(
        model,
        vocab,
        prompts,
        [(grid, grid)] * len(prompts),
        GREEDY,
        on_step=track,
        context=context,
        context_segs=context_segs,
    )
    t1, c1 = time.perf_counter(), time.process_time()
    return {
        "wall": t1 - t0,
        "cpu": c1 - c0,
        "prefill_wall": first[0][0] - t0,
        "prefill_cpu": first[0][1] - c0,
        "kv": peak[0],
        "kv_alloc": alloc[0],
        "codes": out,
    }


# ---------------------------------------------------------------------------------------------- analytic reference
def linear_macs(cfg) -> int:
    """Multiply-accumulates of one token through the decoder's linear layers (= their weights; no LM head)."""
    hd = cfg.head_dim
    attn = cfg.dim * hd * (2 * cfg.n_heads + 2 * cfg.n_kv_heads)  # q, o: dim x H*hd; k, v: dim x Hkv*hd
    return cfg.n_layers * (attn + 3 * cfg.dim * cfg.ffn_dim)


def block_macs(cfg, t: int, past: int) -> int:
    """T new tokens after ``past`` visible cached keys, causal among themselves (token i sees past + i + 1)."""
    keys = t * past + t * (t + 1) // 2
    return t * linear_macs(cfg) + cfg.n_layers * 2 * keys * cfg.n_heads * cfg.head_dim


def analytic(cfg, vocab, prompt: TokenSequence, grid: int, batch: int, compiled: bool = False) -> dict:
    """Work per generated image for ``generate_images`` on ``batch`` queries sharing ``prompt``'s context.

    Counted as the code runs: stage A (the context, once per batch, skipped for a compiled task), stage B (the
    query + ``<boi> <h> <w>`` against the kept entries; one full-vocabulary LM-head row), then ``H*(W+1)``
    decoding steps, each token seeing every kept entry, the query and the tokens so far; the LM head over the
    image-code rows on sampled steps only (step 0 reuses the prefill logits). Decoding bytes: fp32 weights read
    once per step for the whole batch, every row's KV cache read once per step.
    """
    segs = prompt.segs
    n_ctx = int(np.argmax(segs == int(Seg.TD)))
    kept = len(kept_entries(segs[:n_ctx]))
    q = len(prompt) - n_ctx + 3
    fed = grid * (grid + 1)  # decoding steps that run the model (the last sampled token is not fed back)
    head_rows = vocab.num_image_codes * (grid * grid - 1)
    stage_a = 0 if compiled else block_macs(cfg, n_ctx, 0)
    stage_b = block_macs(cfg, q, kept) + cfg.dim * cfg.vocab_size
    dec = block_macs(cfg, fed, kept + q) + cfg.dim * head_rows
    keys = fed * (kept + q) + fed * (fed + 1) // 2  # keys read over the decoding loop, per row
    kv_per_key = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 4
    dec_bytes = 4 * (fed * linear_macs(cfg) + cfg.dim * head_rows) / batch + kv_per_key * keys
    return {
        "macs_per_image": stage_a / batch + stage_b + dec,
        "decode_macs_per_image": dec,
        "decode_bytes_per_image": dec_bytes,
        "kept_entries": kept,
        "query_tokens": q,
        "decode_steps": fed,
        "mean_keys_per_step": keys / fed,
    }


def fit_step_cost(rows: list[dict]) -> dict | None:
    """Least-squares fit of the measured batch-1 decoding step time = fixed + per_key * (keys the step sees),
    over every mode and grid: how much of a step the cache size can change at all."""
    pts = [
        (r["analytic"]["mean_keys_per_step"][m], r["decode_s_per_image"][m] / r["analytic"]["decode_steps"])
        for r in rows
        if r["batch"] == 1
        for m in MODES
    ]
    if len({round(x) for x, _ in pts}) < 2:
        return None
    x, y = np.array(pts).T
    (per_key, fixed), *_ = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1), y, rcond=None)
    pred = fixed + per_key * x
    r2 = 1 - ((y - pred) ** 2).sum() / max(((y - y.mean()) ** 2).sum(), 1e-30)
    return {
        "fixed_ms_per_step": 1e3 * fixed,
        "us_per_cached_key": 1e6 * per_key,
        "r2": float(r2),
        "points": len(pts),
        "keys_costing_one_fixed_step": fixed / per_key if per_key > 0 else None,
    }


@torch.no_grad()
def run_naive(model, vocab, prompt: TokenSequence, grid: int) -> tuple[float, np.ndarray]:
    """No cache: the whole sequence (with its X-Prompt mask) goes through the model for every new token."""

    def go():
        head = np.array([vocab.boi_id, vocab.h_token(grid), vocab.w_token(grid)])
        ids = np.concatenate([prompt.ids, head])
        segs = np.concatenate([prompt.segs, np.full(3, int(Seg.TD), np.int8)])
        proc = ImageGrid(vocab, [grid], [grid])
        toks = []
        for s in range(proc.steps):
            x = torch.from_numpy(ids)[None]
            mask = torch.from_numpy(build_attention_mask(segs))[None]
            logits = model(x, attn_mask=mask)[:, -1]
            t = int(proc(s, logits).argmax(-1))
            toks.append(t)
            ids = np.append(ids, t)
            segs = np.append(segs, np.int8(Seg.TD))
        body = np.array(toks[: grid * (grid + 1)]).reshape(grid, grid + 1)[:, :grid]
        return vocab.ids_to_codes(body)

    return timed(go)


class BlankImages:
    """What HF's Chameleon head does: image-code logits are -inf; nothing else is constrained, no stop."""

    def __init__(self, vocab):
        self.mask = vocab.image_token_mask()
        self.allowed_ids = (~self.mask).nonzero().squeeze(1)  # ours computes logits for these rows only

    def forced(self, step, batch, device):
        return torch.full((batch,), -1, dtype=torch.long)

    def __call__(self, step, logits):
        return logits.masked_fill(self.mask, float("-inf"))

    def is_image(self, step, batch, device):
        return torch.zeros(batch, dtype=torch.bool)

    def finished(self, step, tokens):
        return torch.zeros_like(tokens, dtype=torch.bool)


@torch.no_grad()
def run_text_ours(model, vocab, ids: torch.Tensor, n_new: int):
    def go():
        seqs = [
            TokenSequence(r.numpy(), np.full(len(r), int(Seg.TD), np.int8), np.zeros(len(r), bool))
            for r in ids
        ]
        pre = prefill(model, seqs, vocab.pad_id)
        return decode(model, pre, BlankImages(vocab), GREEDY, n_new, fill_id=vocab.eos_id)

    return timed(go)


@torch.no_grad()
def run_text_hf(hf, ids: torch.Tensor, n_new: int):
    return timed(
        lambda: hf.generate(ids, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False, use_cache=True)[
            :, ids.shape[1] :
        ]
    )


def best(xs):
    """Minimum over repetitions: on a shared, loaded machine the least-disturbed run is the best estimate."""
    return min(xs)


MODES = ("xp", "full", "xp_compiled", "full_compiled")
COMPILED = {"xp_compiled": "xp", "full_compiled": "full"}  # compiled task prompt -> the layout it holds


def compile_tasks(model, vocab, prompts: dict) -> tuple[dict, dict]:
    """The examples read once, beforehand (xp keeps PREFIX + XP, full all): compiled tasks and compile seconds."""
    tasks, compile_s = {}, {}
    for mode, layout in COMPILED.items():
        p = prompts[layout][0]
        ctx = TokenSequence(*(x[p.segs != int(Seg.TD)] for x in (p.ids, p.segs, p.loss)))
        t0 = time.perf_counter()
        tasks[mode] = compile_prompt(model, vocab, ctx)
        compile_s[mode] = time.perf_counter() - t0
    return tasks, compile_s


def bench_compression(model, vocab, rng, text, g: int, n_ex: int, batch: int, reps: int) -> dict:
    """(b) for one grid, number of examples and batch: every mode once per repetition, interleaved."""
    examples = random_examples(vocab, rng, n_ex, g)
    queries = [rng.integers(0, vocab.num_image_codes, (g, g)) for _ in range(batch)]
    prompts = {m: [build_prompt(vocab, text, examples, m, qq) for qq in queries] for m in ("xp", "full")}
    tasks, compile_s = compile_tasks(model, vocab, prompts)
    td = {mode: [td_only(p) for p in prompts[layout]] for mode, layout in COMPILED.items()}
    runs = {m: [] for m in MODES}
    for _ in range(reps):
        for mode in MODES:
            if mode in COMPILED:
                runs[mode].append(run_ours(model, vocab, td[mode], g, tasks[mode].cache, tasks[mode].segs))
            else:
                runs[mode].append(run_ours(model, vocab, prompts[mode], g))
    an = {
        "xp": analytic(model.cfg, vocab, prompts["xp"][0], g, batch),
        "full": analytic(model.cfg, vocab, prompts["full"][0], g, batch),
        **{
            m: analytic(model.cfg, vocab, prompts[layout][0], g, batch, compiled=True)
            for m, layout in COMPILED.items()
        },
    }
    row = {
        "grid": g,
        "codes_per_image": g * g,
        "examples": n_ex,
        "batch": batch,
        "prompt_tokens": {m: len(prompts[m][0]) for m in prompts},
        "kept_entries": {m: an[m]["kept_entries"] for m in ("xp", "full")},
    }
    return row | compression_figures(runs, an, batch, compile_s)


def compression_figures(runs: dict, an: dict, batch: int, compile_s: dict) -> dict:
    """Per-image times (best of the repetitions), their ratios and the analytic ratios of one (b) setting."""

    def per_image(key):
        return {m: best([r[key] for r in runs[m]]) / batch for m in MODES}

    wall, cpu, pre_wall, pre_cpu = (
        per_image("wall"),
        per_image("cpu"),
        per_image("prefill_wall"),
        per_image("prefill_cpu"),
    )
    dec = {m: wall[m] - pre_wall[m] for m in MODES}
    dec_cpu = {m: cpu[m] - pre_cpu[m] for m in MODES}
    peaks = {m: max(r["kv"] for r in runs[m]) for m in MODES}
    out = {m: runs[m][-1]["codes"] for m in MODES}
    return {
        "s_per_image": wall,
        "cpu_s_per_image": cpu,
        "prefill_s_per_image": pre_wall,
        "decode_s_per_image": dec,
        "decode_cpu_s_per_image": dec_cpu,
        "compile_s": compile_s,
        "peak_kv_bytes": peaks,
        "peak_kv_alloc_bytes": {m: max(r["kv_alloc"] for r in runs[m]) for m in MODES},
        "speedup": wall["full"] / wall["xp"],
        "cpu_speedup": cpu["full"] / cpu["xp"],
        "decode_speedup": dec["full"] / dec["xp"],
        "compiled_speedup": wall["full_compiled"] / wall["xp_compiled"],
        "compiled_vs_uncompiled_full": wall["full"] / wall["xp_compiled"],
        "analytic": {
            "macs_per_image": {m: an[m]["macs_per_image"] for m in MODES},
            "decode_steps": an["xp"]["decode_steps"],
            "mean_keys_per_step": {m: an[m]["mean_keys_per_step"] for m in MODES},
            "mac_ratio": an["full"]["macs_per_image"] / an["xp"]["macs_per_image"],
            "compiled_mac_ratio": (
                an["full_compiled"]["macs_per_image"] / an["xp_compiled"]["macs_per_image"]
            ),
            "decode_mac_ratio": an["full"]["decode_macs_per_image"] / an["xp"]["decode_macs_per_image"],
            "decode_bytes_ratio": (an["full"]["decode_bytes_per_image"] / an["xp"]["decode_bytes_per_image"]),
        },
        "kv_ratio": peaks["full"] / peaks["xp"],
        "compiled_same_output": all(
            np.array_equal(a, b)
            for m, layout in COMPILED.items()
            for a, b in zip(out[layout], out[m], strict=True)
        ),
    }


def judge(res: dict, judge_grid: int, judge_batch: int) -> tuple[dict, dict]:
    """The issue's targets at the judged grid, for one query (batch 1) and for ``judge_batch`` queries of one
    task, per prompt path (each query prompt read whole; a compiled task against the same task compiled in
    ``full`` layout), with the analytic references; bools for a quick look.

    The targets count as met at ``judge_batch``: at batch 1 a step of this 4.8M-parameter model is dominated
    by reading its weights, which no cache size changes (see the step fit); batch-1 rows are reported too."""
    detail = {
        "judged_at": {
            "grid": judge_grid,
            "batch": judge_batch,
            "also_reported": "batch 1",
            "basis": "wall-clock latency per generated image (prefill + decoding; batch b: the "
            "batch's wall time / b), min over reps",
        }
    }
    met = {}
    for row in res["b_compression"]:
        if row["grid"] != judge_grid or row["batch"] not in (1, judge_batch):
            continue
        need = 1.5 if row["examples"] == 1 else 3.0
        key = f"compressed_vs_full_{row['examples']}ex>={need:g}@batch{row['batch']}"
        detail[key] = {
            "measured": row["speedup"],
            "met": row["speedup"] >= need,
            "cpu_time_ratio": row["cpu_speedup"],
            "analytic_mac_ratio": row["analytic"]["mac_ratio"],
            "decode_measured": row["decode_speedup"],
            "decode_analytic_bytes_ratio": row["analytic"]["decode_bytes_ratio"],
            "compiled_measured": row["compiled_speedup"],
            "compiled_met": row["compiled_speedup"] >= need,
            "compiled_analytic_mac_ratio": row["analytic"]["compiled_mac_ratio"],
        }
        met[key] = detail[key]["met"]
        met[key.replace("@", "_compiled@")] = detail[key]["compiled_met"]
    if "c_hf" in res:
        detail["ours_vs_hf>=1.5"] = {"measured": res["c_hf"]["speedup"], "met": res["c_hf"]["speedup"] >= 1.5}
        met["ours_vs_hf>=1.5"] = detail["ours_vs_hf>=1.5"]["met"]
    detail["all_rows"] = [
        {k: row[k] for k in ("grid", "examples", "batch", "speedup", "compiled_speedup")}
        | {"analytic_mac_ratio": row["analytic"]["mac_ratio"]}
        for row in res["b_compression"]
    ]
    return detail, met


def parse_args(argv=None) -> tuple[argparse.Namespace, list[int], int]:
    """The arguments, the (b) grids and the grid the targets are judged at."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--grids",
        default="24,32",
        help="comma-separated image grid sides in codes for (b) (24 = 384 px, 32 = 512 px at 16x)",
    )
    ap.add_argument("--judge-grid", type=int, default=32, help="grid at which the issue's targets are judged")
    ap.add_argument("--naive-grid", type=int, default=8, help="grid side for the naive-loop comparison (a)")
    ap.add_argument(
        "--batch",
        type=int,
        default=8,
        help="queries sharing the examples in the batched case (the targets are judged there)",
    )
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: a shared, loaded machine makes OpenMP spin)"
    )
    ap.add_argument("--text-prompt", type=int, default=256, help="(c): prompt tokens")
    ap.add_argument("--text-new", type=int, default=128, help="(c): generated tokens")
    ap.add_argument("--skip-naive", action="store_true")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--out", default="bench/results/generate.json")
    args = ap.parse_args(argv)
    try:
        grids = sorted({int(x) for x in args.grids.split(",") if x.strip()})
    except ValueError:
        ap.error(f"--grids must be comma-separated integers, got {args.grids!r}")
    if not grids or min(grids) < 1 or args.reps < 1 or args.batch < 1:
        ap.error("--grids, --reps and --batch must be positive")
    if max(grids) > 64:
        ap.error("grids above 64 codes are outside this vocabulary's grid tokens")
    return args, grids, (args.judge_grid if args.judge_grid in grids else max(grids))


def section_a(model, vocab, rng, text, args) -> dict:
    """(a) ours vs the naive loop, one example, at ``--naive-grid``."""
    g = args.naive_grid
    q = rng.integers(0, vocab.num_image_codes, (g, g))
    p1 = build_prompt(vocab, text, random_examples(vocab, rng, 1, g), "xp", q)
    ta, tn = [], []
    for _ in range(args.reps):
        r = run_ours(model, vocab, [p1], g)
        ta.append(r["wall"])
        dt, naive = run_naive(model, vocab, p1, g)
        tn.append(dt)
    res = {
        "grid": g,
        "prompt_tokens": len(p1),
        "ours_s": best(ta),
        "naive_s": best(tn),
        "speedup": best(tn) / best(ta),
        "same_output": bool(np.array_equal(r["codes"][0], naive)),
    }
    print(
        f"(a) {g}x{g} image, 1 example: ours {best(ta):.2f}s  naive {best(tn):.2f}s  "
        f"-> {best(tn) / best(ta):.1f}x  same output: {res['same_output']}",
        flush=True,
    )
    return res


def section_b(model, vocab, rng, text, grids: list[int], args) -> list[dict]:
    """(b) compressed vs full context, per grid, 1 and 3 examples, batch 1 and ``--batch``."""
    rows = []
    for g in grids:
        for n_ex in (1, 3):
            for batch in sorted({1, args.batch}):
                row = bench_compression(model, vocab, rng, text, g, n_ex, batch, args.reps)
                rows.append(row)
                w, mib = row["s_per_image"], {m: v / 2**20 for m, v in row["peak_kv_bytes"].items()}
                print(
                    f"(b) {g}x{g}, {n_ex} example(s), batch {batch}: per image xp {w['xp']:.2f}s full "
                    f"{w['full']:.2f}s -> {row['speedup']:.2f}x (MACs {row['analytic']['mac_ratio']:.2f}x; cpu "
                    f"{row['cpu_speedup']:.2f}x; decoding {row['decode_speedup']:.2f}x, bytes "
                    f"{row['analytic']['decode_bytes_ratio']:.2f}x); compiled tasks xp {w['xp_compiled']:.2f}s "
                    f"full {w['full_compiled']:.2f}s -> {row['compiled_speedup']:.2f}x (MACs "
                    f"{row['analytic']['compiled_mac_ratio']:.2f}x); peak KV {mib['xp']:.1f} vs "
                    f"{mib['full']:.1f} MiB",
                    flush=True,
                )
    return rows


def section_c(model, vocab, rng, args) -> dict:
    """(c) ours vs transformers' generate() on text."""
    hf = to_hf_model(model, vocab, attn_implementation="sdpa")
    text_ids = torch.as_tensor(vocab.text_to_ids(rng.integers(0, vocab.text_size, args.text_prompt).tolist()))
    ids = torch.cat([torch.tensor([vocab.bos_id]), text_ids])[None]
    to, th = [], []
    for _ in range(args.reps):
        dt, ours = run_text_ours(model, vocab, ids, args.text_new)
        to.append(dt)
        dt, theirs = run_text_hf(hf, ids, args.text_new)
        th.append(dt)
    same = bool(torch.equal(ours.cpu(), theirs.cpu()))
    print(
        f"(c) {args.text_new} text tokens after {ids.shape[1]}: ours {best(to):.2f}s  HF generate() "
        f"{best(th):.2f}s -> {best(th) / best(to):.2f}x; same tokens: {same}",
        flush=True,
    )
    return {
        "prompt_tokens": ids.shape[1],
        "new_tokens": args.text_new,
        "ours_s": best(to),
        "hf_s": best(th),
        "speedup": best(th) / best(to),
        "same_tokens": same,
        "ours_ms_per_token": 1e3 * best(to) / args.text_new,
        "hf_ms_per_token": 1e3 * best(th) / args.text_new,
    }


def main(argv=None) -> int:
    args, grids, judge_grid = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    vocab = Vocabulary.build(text_size=4096, num_image_codes=8192, num_xp=32, max_grid=64)
    cfg = get_preset("tiny", vocab.size)
    model = XPromptModel(cfg).eval()
    res: dict = {
        "model": {
            "preset": "tiny",
            "params": model.num_params(),
            "vocab": vocab.size,
            "image_codes": vocab.num_image_codes,
            "non_embedding_params": model.num_params(exclude_embeddings=True),
            "linear_macs_per_token": linear_macs(cfg),
        },
        "machine": {
            "threads": args.threads,
            "cpu_count": os.cpu_count(),
            "load_avg_start": os.getloadavg(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "args": vars(args),
    }
    t_start = time.perf_counter()
    text = vocab.text_to_ids(rng.integers(0, vocab.text_size, 8).tolist())
    if not args.skip_naive:
        res["a_naive"] = section_a(model, vocab, rng, text, args)
    res["b_compression"] = section_b(model, vocab, rng, text, grids, args)
    res["b_decode_step_fit"] = fit_step_cost(res["b_compression"])
    if res["b_decode_step_fit"]:
        f = res["b_decode_step_fit"]
        print(
            f"(b) batch-1 decoding step = {f['fixed_ms_per_step']:.2f} ms fixed + {f['us_per_cached_key']:.3f} us per "
            f"cached key (r2 {f['r2']:.3f}): the fixed part costs as much as "
            f"{f['keys_costing_one_fixed_step'] or float('nan'):.0f} keys",
            flush=True,
        )
    if not args.skip_hf:
        res["c_hf"] = section_c(model, vocab, rng, args)
    res["machine"]["load_avg_end"] = os.getloadavg()
    res["wall_s"] = time.perf_counter() - t_start
    res["targets"], res["targets_met"] = judge(res, judge_grid, args.batch)
    print(
        f"targets at grid {judge_grid} (judged at batch {args.batch}; batch 1 reported):",
        json.dumps(res["targets_met"], indent=1),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from xprompt.io_utils import atomic_write_text

    atomic_write_text(out, json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

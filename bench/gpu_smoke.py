"""GPU smoke check (< 10 min on one CUDA GPU): the GPU-only paths this CPU machine cannot exercise.

1. ``attn``: FlexAttention (``attn_impl="flex"``) equals SDPA on X-Prompt masks (packed documents, IE/XP/TD
   segments), logits and gradients, bf16 autocast; flash-attn equals SDPA on causal rows when installed.
2. ``zero3``: a few DeepSpeed ZeRO-3 bf16 training steps of the ``base`` preset on X-Prompt-masked batches
   (``configs/ds_zero3_bf16.json`` resolved through the trainer's own ``resolve_ds_config``): the loss must
   fall on a repeated batch; step time and tokens/s.
3. ``decode``: compressed (``xp``: IE entries dropped after prefill) vs full-context in-context generation of
   one 32x32-code image (512 px at 16x) with the ``base`` preset, greedy: seconds each and the speed-up.

Prints one JSON line and writes it to ``--out`` (default ``bench/results/gpu_smoke.json``). On a machine
without CUDA it prints "gpu_smoke needs CUDA ..." and exits 2 (nothing here is untested for lack of effort:
this machine has no GPU, so the numbers come from whoever runs it on one).

    python bench/gpu_smoke.py [--steps 5] [--out bench/results/gpu_smoke.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _vocab():
    from xprompt.tokenizer.vocab import Vocabulary

    return Vocabulary.build(text_size=1000, num_image_codes=8192, num_xp=32, max_grid=64)


def _masked_batch(vocab, rng, b: int = 2, docs: int = 3, doc_len: int = 300):
    """Packed rows of ``docs`` documents, each PREFIX | IE | XP | TD: ids (B, T), segs, doc ids, dense mask."""
    import torch

    from xprompt.masks import build_attention_mask_batch

    seg = [0] * 8 + [1] * (doc_len - 8 - 32 - 100) + [2] * 32 + [3] * 100
    segs = torch.tensor([seg * docs] * b)
    doc_ids = torch.arange(docs).repeat_interleave(doc_len)[None].expand(b, -1)
    ids = torch.as_tensor(rng.integers(0, vocab.size, segs.shape))
    return ids, segs, doc_ids, build_attention_mask_batch(segs, doc_ids)


def check_attention(vocab, rng) -> dict:
    import torch

    from xprompt.model import XPromptModel
    from xprompt.model_config import get_preset

    cfg = get_preset("base", vocab.size, n_layers=4)
    ids, _, _, mask = (t.cuda() for t in _masked_batch(vocab, rng))
    out = {}
    ref_model = XPromptModel(cfg).cuda()
    for impl in ("flex", "flash"):
        if impl == "flash":
            try:
                import flash_attn  # noqa: F401
            except ImportError:
                out["flash"] = "skipped: flash-attn is not installed (pip install .[gpu])"
                continue
        model = XPromptModel(cfg.replace(attn_impl=impl)).cuda()
        model.load_state_dict(ref_model.state_dict())
        m = mask if impl == "flex" else None  # flash-attn runs plain causal rows only
        diffs = []
        for mod in (ref_model, model):
            mod.zero_grad()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                logits = mod(ids, attn_mask=m)
            logits.float().logsumexp(-1).mean().backward()
            diffs.append((logits.float().detach(), mod.layers[0].self_attn.q_proj.weight.grad.clone()))
        (la, ga), (lb, gb) = diffs
        out[impl] = {
            "max_abs_logit_diff": float((la - lb).abs().max()),
            "grad_rel_diff": float((ga - gb).norm() / ga.norm()),
            "mask": "x-prompt (3 packed docs, TD cannot see IE)" if impl == "flex" else "causal",
        }
        out[impl]["ok"] = out[impl]["max_abs_logit_diff"] < 0.1 and out[impl]["grad_rel_diff"] < 0.05
    return out


def zero3_steps(vocab, rng, steps: int) -> dict:
    import deepspeed
    import torch

    from xprompt.loss import next_token_loss
    from xprompt.model import XPromptModel
    from xprompt.model_config import get_preset
    from xprompt.train.train_config import TrainConfig, load_ds_config, resolve_ds_config

    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("MASTER_PORT", "29533")
    deepspeed.init_distributed("nccl")
    tcfg = TrainConfig(preset="base", micro_batch=2, global_batch=2, max_len=900, precision="bf16")
    ds = resolve_ds_config(load_ds_config(ROOT / "configs" / "ds_zero3_bf16.json"), tcfg, 1, "bf16")
    model = XPromptModel(get_preset("base", vocab.size, attn_impl="flex", gradient_checkpointing=True))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=ds, dist_init_required=False)
    ids, segs, _, mask = (t.cuda() for t in _masked_batch(vocab, rng))
    losses, times = [], []
    for _ in range(steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = next_token_loss(engine(ids, attn_mask=mask), ids, segs == 3)["loss"]
        engine.backward(loss)
        engine.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    step = float(np.median(times[1:] or times))
    return {
        "losses": losses,
        "falls": losses[-1] < losses[0],
        "median_step_s": step,
        "tokens_per_s": ids.numel() / step,
        "peak_gib": torch.cuda.max_memory_allocated() / 1024**3,
    }


def decode_speed(vocab, rng) -> dict:
    import torch

    from xprompt.generation import generate_images
    from xprompt.model import XPromptModel
    from xprompt.model_config import get_preset
    from xprompt.sampling import SamplingConfig
    from xprompt.sequence import build_sample

    class Chars:  # a text tokenizer for the instruction (its ids only need to be in range)
        def encode(self, s):
            return [ord(c) % 1000 for c in s]

    torch.manual_seed(0)
    model = XPromptModel(get_preset("base", vocab.size)).cuda().to(torch.bfloat16).eval()
    a, b, q = (rng.integers(0, 8192, (32, 32)) for _ in range(3))
    out = {}
    for mode in ("xp", "full"):
        seq = build_sample(vocab, Chars(), mode=mode, instruction="do the same", examples=[(a, b)], query=q)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        generate_images(model, vocab, [seq], [(32, 32)], SamplingConfig(greedy=True))
        torch.cuda.synchronize()
        out[f"{mode}_s"] = time.perf_counter() - t0
    out["speedup"] = out["full_s"] / out["xp_s"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="ZeRO-3 training steps (default 5)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_smoke.json"))
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(
            "gpu_smoke needs CUDA: no CUDA device is visible (torch.cuda.is_available() is False); run it on a "
            "GPU machine (FlexAttention, flash-attn, NCCL ZeRO-3 and the decoding timings are GPU-only)",
            file=sys.stderr,
        )
        return 2
    sys.path.insert(0, str(ROOT))
    rng = np.random.default_rng(0)
    vocab = _vocab()
    t0 = time.perf_counter()
    rec = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    rec["attn"] = check_attention(vocab, rng)
    rec["zero3"] = zero3_steps(vocab, rng, args.steps)
    rec["decode_32x32"] = decode_speed(vocab, rng)
    rec["seconds"] = time.perf_counter() - t0
    line = json.dumps(rec)
    print(line)
    from xprompt.io_utils import atomic_write_text

    atomic_write_text(Path(args.out), line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

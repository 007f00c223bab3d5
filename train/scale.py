"""Memory and time per step of a training config at scale, estimated from the model's shapes (no GPU needed).

Design choices
* Parameters are counted on a meta-device model (exact for any preset, nothing allocated).
* Bytes per parameter follow what the trainer does: bf16 is torch autocast over fp32 master weights, so a
  trained parameter costs 4 (weight) + 4 (grad) + 8 (AdamW m, v) = 16 B; ZeRO-3 divides all of it by the
  number of GPUs, and gathers whole layers on the fly (``live_layers`` of them in fp32: the one computing and
  the one prefetched). CPU offload moves the 16 B/param to host RAM (divided by nodes). LoRA freezes the base
  weights (kept in bf16, 2 B, sharded) and trains the adapters, the XP embedding rows and the LM head in fp32
  with AdamW (16 B each).
* Activations with checkpointing: the fp32 residual stream saved at every layer input
  (``B*T*D*4`` bytes per layer), one layer's recomputed internals in bf16 (q, k, v, attention out, two
  norms, SwiGLU's three ``F``-wide tensors: ``B*T*(8D+3F)*2``) and the logits (bf16 out of the head, fp32
  for the loss and its gradient: ``B*T*V*10``). Attention itself is flash/flex (no ``T x T`` tensor).
  Without checkpointing every layer keeps its internals. These are estimates (allocator slack, NCCL
  buffers and fragmentation typically add 10-20 %), good for choosing a recipe, not for a tight fit.
* Time: FLOPs = 6 x trained-path parameters x tokens (+2 for the recomputed forward under checkpointing;
  LoRA skips the weight-gradient matmuls of frozen layers: 4 instead of 6) plus causal attention
  ``6 L T^2 D`` per sequence (x4/3 with recomputation), divided by GPUs x peak bf16 x an assumed MFU.
"""

from __future__ import annotations

import argparse
import functools
import json
from dataclasses import asdict, dataclass

GIB = 1024**3
PEAK_TFLOPS = {"a100": 312.0, "h100": 989.0, "l40s": 362.0, "a6000": 155.0}  # dense bf16 tensor-core peaks
RECIPES = ("zero3", "zero3-offload", "lora")


@dataclass
class Estimate:
    recipe: str
    params: int
    trainable: int
    gpus: int
    nodes: int
    gpu_states_gib: float  # weights/grads/optimizer resident per GPU
    gpu_gathered_gib: float  # ZeRO-3 gathered layers in flight
    gpu_activations_gib: float
    gpu_total_gib: float
    cpu_per_node_gib: float  # host RAM for offloaded states
    tokens_per_step: int
    tflop_per_step: float
    seconds_per_step: float


def count_params(mcfg) -> tuple[int, int, int]:
    """(all parameters, one decoder layer, embedding + head) of a ``ModelConfig``, on the meta device."""
    return _count(json.dumps(asdict(mcfg.replace(attn_impl="sdpa")), sort_keys=True))


@functools.lru_cache(maxsize=16)
def _count(key: str) -> tuple[int, int, int]:  # keyed by the config's JSON (dataclasses here are unhashable)
    import torch

    from xprompt.model import XPromptModel
    from xprompt.model_config import ModelConfig

    with torch.device(
        "meta"
    ):  # attn_impl is "sdpa" in the key: same shapes, and the GPU-only check needs no GPU
        m = XPromptModel(ModelConfig(**json.loads(key)))
    total = sum(p.numel() for p in m.parameters())
    layer = sum(p.numel() for p in m.layers[0].parameters())
    return total, layer, m.embed_tokens.weight.numel() + m.lm_head.weight.numel()


def lora_trainable(mcfg, rank: int, num_xp: int) -> int:
    """LoRA on q/k/v/o and gate/up/down (A: r x in, B: out x r) + the XP embedding rows + the LM head."""
    d, f, hd = mcfg.dim, mcfg.ffn_dim, mcfg.head_dim
    qo = 2 * rank * (d + mcfg.n_heads * hd)
    kv = 2 * rank * (d + mcfg.n_kv_heads * hd)
    mlp = 3 * rank * (d + f)
    return mcfg.n_layers * (qo + kv + mlp) + num_xp * d + mcfg.vocab_size * d


def _activations(mcfg, micro_batch: int, seq_len: int, checkpointing: bool) -> float:
    bt, d, f = micro_batch * seq_len, mcfg.dim, mcfg.ffn_dim
    layer_internals = bt * (8 * d + 3 * f) * 2
    saved = bt * d * 4 * mcfg.n_layers if checkpointing else (layer_internals + bt * d * 4) * mcfg.n_layers
    return saved + (layer_internals if checkpointing else 0) + bt * mcfg.vocab_size * 10


def estimate(
    mcfg,
    *,
    micro_batch: int,
    seq_len: int,
    global_batch: int,
    gpus: int,
    gpus_per_node: int = 8,
    recipe: str = "zero3",
    checkpointing: bool = True,
    lora_rank: int = 16,
    num_xp: int = 32,
    gpu: str = "a100",
    mfu: float = 0.4,
    live_layers: int = 2,
) -> Estimate:
    if recipe not in RECIPES:
        raise ValueError(f"recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    total, layer, _ = count_params(mcfg)
    nodes = max(1, -(-gpus // gpus_per_node))
    trainable = lora_trainable(mcfg, lora_rank, num_xp) if recipe == "lora" else total
    if recipe == "lora":
        states, cpu = (2 * total + 16 * trainable) / gpus, 0.0
        gathered = live_layers * layer * 2
    elif recipe == "zero3-offload":
        states, cpu = 0.0, 16 * total / nodes
        gathered = live_layers * layer * 4
    else:
        states, cpu = 16 * total / gpus, 0.0
        gathered = live_layers * layer * 4
    acts = _activations(mcfg, micro_batch, seq_len, checkpointing)
    tokens = global_batch * seq_len
    per_token = (4 if recipe == "lora" else 6) + (2 if checkpointing else 0)
    attn = 6 * mcfg.n_layers * seq_len * seq_len * mcfg.dim * global_batch * (4 / 3 if checkpointing else 1)
    flop = per_token * total * tokens + attn
    secs = flop / (gpus * PEAK_TFLOPS[gpu] * 1e12 * mfu)
    return Estimate(
        recipe,
        total,
        trainable,
        gpus,
        nodes,
        states / GIB,
        gathered / GIB,
        acts / GIB,
        (states + gathered + acts) / GIB,
        cpu / GIB,
        tokens,
        flop / 1e12,
        secs,
    )


def estimate_config(train_cfg, vocab_size: int, gpus: int, **kw) -> Estimate:
    """``estimate`` for a ``TrainConfig`` (its preset, overrides, micro/global batch, max_len, checkpointing)."""
    from xprompt.model_config import get_preset

    mcfg = get_preset(train_cfg.preset, vocab_size, **train_cfg.model)
    return estimate(
        mcfg,
        micro_batch=train_cfg.micro_batch,
        seq_len=train_cfg.max_len,
        global_batch=train_cfg.global_batch,
        gpus=gpus,
        checkpointing=train_cfg.grad_checkpointing or mcfg.gradient_checkpointing,
        **kw,
    )


def main(argv=None) -> int:
    from xprompt.train.train_config import load_train_config

    p = argparse.ArgumentParser(description="memory and time per step of a training config, from shapes")
    p.add_argument(
        "--config", required=True, help="training config JSON (e.g. configs/chameleon-7b-512.json)"
    )
    p.add_argument("--vocab-size", type=int, default=65536 + 32, help="default: Chameleon's 65,536 + 32 XP")
    p.add_argument("--gpus", type=int, nargs="+", default=[8])
    p.add_argument("--gpu", choices=sorted(PEAK_TFLOPS), default="a100")
    p.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilisation")
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of the table")
    args = p.parse_args(argv)
    cfg = load_train_config(args.config)
    print("recipe         gpus  params  trainable  states  gathered  activ  GPU total  CPU/node  s/step")
    for n in args.gpus:
        for r in RECIPES:
            e = estimate_config(
                cfg, args.vocab_size, n, recipe=r, gpu=args.gpu, mfu=args.mfu, lora_rank=args.lora_rank
            )
            if args.json:
                print(json.dumps(asdict(e)))
                continue
            print(
                f"{r:<14} {n:>4} {e.params / 1e9:6.2f}B {e.trainable / 1e6:8.0f}M {e.gpu_states_gib:6.1f}G "
                f"{e.gpu_gathered_gib:8.1f}G {e.gpu_activations_gib:5.1f}G {e.gpu_total_gib:9.1f}G "
                f"{e.cpu_per_node_gib:8.0f}G {e.seconds_per_step:7.1f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""LoRA (peft) on a tiny model: training runs under DeepSpeed, only the intended parameters change, and the merged
export (plain weights, `xprompt export --lora`) gives the adapter model's logits."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from gen_helpers import tiny_model, tiny_vocab

from xprompt.checkpoint import load_pretrained, save_pretrained
from xprompt.errors import CheckpointError
from xprompt.lora import LoraSpec, apply_lora, save_adapter
from xprompt.masks import build_attention_mask_batch

pytest.importorskip("peft")


@pytest.fixture
def env():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def batch(vocab, rng, b=2):
    """Rows of PREFIX | IE | XP | TD with the X-Prompt mask; the loss on TD."""
    segs = torch.tensor([[0] * 2 + [1] * 10 + [2] * len(vocab.xp_ids) + [3] * 10] * b)
    ids = torch.as_tensor(rng.integers(0, vocab.size, segs.shape))
    ids[segs == 2] = torch.as_tensor(vocab.xp_ids).repeat(b)
    return ids, build_attention_mask_batch(segs), segs == 3


def deepspeed_engine(model):
    """A single-process DeepSpeed engine (gloo, the repository's ZeRO-2 engine settings) over the trainable
    parameters, as the trainer builds it."""
    import deepspeed

    from xprompt.train import dist
    from xprompt.train.train_config import DEFAULT_DS_CONFIG, TrainConfig, resolve_ds_config

    dist.init_process_group(dist.setup_env())
    ds = resolve_ds_config(
        DEFAULT_DS_CONFIG, TrainConfig(micro_batch=2, global_batch=2, precision="fp32"), 1, "fp32"
    )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=ds, dist_init_required=False)
    return engine, engine.backward, engine.step


def torch_engine(model):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    def step():
        opt.step()
        opt.zero_grad()

    return model, lambda loss: loss.backward(), step


# DeepSpeed's engine costs minutes of start-up on the shared cores: the same test runs fast with torch's AdamW
@pytest.mark.parametrize("engine_kind", ["torch", pytest.param("deepspeed", marks=pytest.mark.slow)])
def test_lora_training_only_intended_params_and_merged_export(tmp_path, env, engine_kind):
    from xprompt.cli import main
    from xprompt.loss import next_token_loss

    vocab = tiny_vocab()
    base = tiny_model(vocab)
    save_pretrained(tmp_path / "base", base, vocab)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = apply_lora(base, vocab, LoraSpec(r=4, alpha=8))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("lm_head.modules_to_save" in n for n in trainable)
    assert any("trainable_tokens_delta" in n for n in trainable)
    assert not any(n.endswith("base_layer.weight") or "norm" in n for n in trainable)

    engine, backward, step = (deepspeed_engine if engine_kind == "deepspeed" else torch_engine)(model)
    ids, mask, loss_mask = batch(vocab, np.random.default_rng(0))
    losses = []
    for _ in range(4):
        out = next_token_loss(engine(ids, attn_mask=mask), ids, loss_mask)
        backward(out["loss"])
        step()
        losses.append(float(out["ce"].detach()))
    assert losses[-1] < losses[0]

    model.eval()
    with torch.no_grad():
        adapter_logits = model(ids, attn_mask=mask)
    save_adapter(tmp_path / "adapter", model, LoraSpec(r=4, alpha=8), vocab, base=str(tmp_path / "base"))
    # the frozen base weights are untouched by training (peft keeps them as base_layer / original_module)
    for k, v in before.items():
        assert torch.equal(model.get_base_model().state_dict()[_peft_name(model, k)], v), k

    assert main(["export", "--checkpoint", str(tmp_path / "base"), "--lora", str(tmp_path / "adapter"),
                 "--out", str(tmp_path / "merged"), "--dtype", "fp32"]) == 0  # fmt: skip
    merged, v2 = load_pretrained(tmp_path / "merged")
    assert v2 == vocab and not any("lora" in k for k in merged.state_dict())
    with torch.no_grad():
        assert (merged(ids, attn_mask=mask) - adapter_logits).abs().max() < 1e-5
    changed = {k for k, v in merged.state_dict().items() if not torch.equal(v, before[k])}
    intended = {f"layers.{i}.{m}.weight" for i in range(2) for m in ("self_attn.q_proj", "self_attn.k_proj",
                "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}  # fmt: skip
    assert changed == intended | {"embed_tokens.weight", "lm_head.weight"}
    rows = (merged.embed_tokens.weight != before["embed_tokens.weight"]).any(1).nonzero().flatten()
    assert set(rows.tolist()) <= {int(i) for i in vocab.xp_ids} and len(rows) > 0  # only the XP rows

    other = tiny_vocab().__class__.build(text_size=27, num_image_codes=16, num_xp=2, max_grid=8)
    with pytest.raises(CheckpointError, match="another vocabulary"):
        from xprompt.lora import load_adapter

        load_adapter(tiny_model(other), other, tmp_path / "adapter")


def _peft_name(model, key: str) -> str:
    """Where a base weight lives inside the peft-wrapped model's base model."""
    names = model.get_base_model().state_dict()
    for cand in (key, key.replace(".weight", ".base_layer.weight"), key.replace(".weight", ".original_module.weight"),
                 key.replace("embed_tokens.weight", "embed_tokens.token_adapter.base_layer.weight")):  # fmt: skip
        if cand in names:
            return cand
    raise KeyError(key)


@pytest.mark.slow  # a DeepSpeed run through the trainer (JIT op builds on a fresh checkout: minutes)
def test_trainer_lora_run_exports_merged_weights_and_adapter(tmp_path, env):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_packing import make_dataset
    from test_trainer import cfg

    from xprompt.lora import load_adapter, merge
    from xprompt.model import XPromptModel
    from xprompt.model_config import get_preset
    from xprompt.train.trainer import train

    data = make_dataset(tmp_path / "d", n=40)
    tcfg = cfg(steps=2, lr=1e-2, val_every=100, lora={"r": 4, "alpha": 8})
    train(tcfg, data, tmp_path / "run", progress=False)
    run_model = tmp_path / "run" / "model"
    merged, vocab = load_pretrained(run_model)
    torch.manual_seed(tcfg.seed)  # the trainer's initial weights (seeded, embed_init "random")
    init = XPromptModel(get_preset(tcfg.preset, vocab.size, **tcfg.model))
    before = {k: v.clone() for k, v in init.state_dict().items()}
    changed = {k for k, v in merged.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(
        k.endswith(("_proj.weight",)) or k in ("embed_tokens.weight", "lm_head.weight") for k in changed
    )
    remerged = merge(load_adapter(init, vocab, run_model / "lora")[0])  # the adapter alone, onto the base
    for k, v in remerged.state_dict().items():
        assert torch.allclose(v, merged.state_dict()[k], atol=1e-6), k

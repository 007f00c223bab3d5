"""The decoder: shapes, masks, KV cache, packing, autocast, checkpointing, presets."""

import shutil

import numpy as np
import pytest
import torch

from xprompt.errors import ConfigError
from xprompt.masks import build_attention_mask, build_attention_mask_batch, position_ids
from xprompt.model import XPromptModel
from xprompt.model_config import ModelConfig, get_preset, preset_names
from xprompt.sequence import Seg

P, IE, XP, TD = int(Seg.PREFIX), int(Seg.IE), int(Seg.XP), int(Seg.TD)
V = 97


def small(**kw) -> XPromptModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=V,
        dim=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=kw.pop("n_kv_heads", 4),
        ffn_dim=48,
        max_seq_len=128,
        **kw,
    )
    return XPromptModel(cfg).eval()


def test_forward_shapes_and_default_causal():
    m = small()
    x = torch.randint(0, V, (3, 11))
    logits = m(x)
    assert logits.shape == (3, 11, V) and logits.dtype == torch.float32
    causal = torch.ones(3, 11, 11, dtype=torch.bool).tril()
    torch.testing.assert_close(m(x, attn_mask=causal), logits)
    # causality: changing a later token leaves earlier logits unchanged
    y = x.clone()
    y[:, 7] = (y[:, 7] + 1) % V
    torch.testing.assert_close(m(y)[:, :7], logits[:, :7])
    assert not torch.allclose(m(y)[:, 7:], logits[:, 7:])


def test_xp_mask_hides_examples_from_td():
    m = small()
    segs = np.array([P, IE, IE, IE, XP, XP, TD, TD, TD])
    mask = torch.from_numpy(build_attention_mask(segs))[None]
    x = torch.randint(0, V, (1, 9))
    y = x.clone()
    y[0, 1:4] = (y[0, 1:4] + 5) % V  # change the example tokens
    lx, ly = m(x, attn_mask=mask), m(y, attn_mask=mask)
    # With 2 layers TD sees IE through the XP tokens' hidden states, so TD logits change ...
    assert not torch.allclose(lx[0, 6:], ly[0, 6:])
    # ... but with 1 layer the XP keys depend on XP ids only, and TD's attention to IE keys is cut.
    m1 = small()
    m1.layers = m1.layers[:1]
    torch.testing.assert_close(m1(x, attn_mask=mask)[0, 6:], m1(y, attn_mask=mask)[0, 6:])
    full = torch.ones(1, 9, 9, dtype=torch.bool).tril()
    assert not torch.allclose(m1(x, attn_mask=full)[0, 6:], m1(y, attn_mask=full)[0, 6:])


def test_kv_cache_chunks_equal_full_forward():
    m = small(n_kv_heads=2)  # grouped-query attention path
    x = torch.randint(0, V, (2, 20))
    full = m(x)
    cache = m.new_cache()
    parts = [m(x[:, :7], kv_cache=cache)] + [m(x[:, t : t + 1], kv_cache=cache) for t in range(7, 20)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 20 and cache.next_pos.tolist() == [20, 20]
    assert cache.nbytes() == 2 * 2 * 2 * 2 * 20 * 8 * 4  # layers * (k,v) * B * Hkv * S * hd * fp32


def test_packed_documents_equal_separate_forwards():
    m = small()
    a, b = torch.randint(0, V, (1, 6)), torch.randint(0, V, (1, 5))
    docs = np.array([0] * 6 + [1] * 5)
    segs = np.array([P, IE, XP, TD, TD, TD, P, TD, TD, TD, TD])
    mask = torch.from_numpy(build_attention_mask(segs, docs))[None]
    pos = torch.from_numpy(position_ids(docs))[None]
    packed = m(torch.cat([a, b], 1), position_ids=pos, attn_mask=mask)
    sa = torch.from_numpy(build_attention_mask(segs[:6]))[None]
    torch.testing.assert_close(packed[:, :6], m(a, attn_mask=sa), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed[:, 6:], m(b), atol=1e-5, rtol=1e-5)


def test_batched_masks_and_padding_rows_stay_finite():
    m = small()
    segs = torch.tensor([[P, IE, XP, TD, TD, TD], [P, P, P, TD, TD, TD]])
    mask = build_attention_mask_batch(segs)
    mask[1, :, :2] = False  # left padding in row 1: nobody may see tokens 0, 1 (not even themselves)
    out = m(torch.randint(0, V, (2, 6)), attn_mask=mask)
    assert torch.isfinite(out).all()


def test_autocast_bf16_and_bf16_weights():
    m = small()
    x = torch.randint(0, V, (2, 9))
    ref = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.1)
    mb = small().to(torch.bfloat16)
    assert mb(x).dtype == torch.bfloat16


def test_gradient_checkpointing_same_gradients():
    m = small().train()
    x = torch.randint(0, V, (2, 10))
    m(x).logsumexp(-1).mean().backward()
    ref = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    m.set_gradient_checkpointing(True)
    m(x).logsumexp(-1).mean().backward()
    for n, p in m.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], atol=1e-6, rtol=1e-5)


def test_swin_norm_variant_runs():
    m = small(swin_norm=True)
    assert m(torch.randint(0, V, (1, 5))).shape == (1, 5, V)


def test_config_validation():
    with pytest.raises(ConfigError):
        ModelConfig(vocab_size=10, dim=30, n_heads=4)
    with pytest.raises(ConfigError):
        ModelConfig(vocab_size=10, attn_impl="magic")
    with pytest.raises(ConfigError):
        get_preset("huge", 100)
    with pytest.raises(ConfigError):
        get_preset("tiny", 100, dimm=3)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="GPU"):
            XPromptModel(ModelConfig(vocab_size=10, dim=16, n_heads=2, n_kv_heads=2, attn_impl="flex"))


def test_presets():
    assert {"tiny", "base", "chameleon-7b"} <= set(preset_names())
    tiny = get_preset("tiny", 12000)
    assert 4_000_000 <= tiny.non_embedding_params() <= 10_000_000
    m = XPromptModel(tiny)
    assert m.num_params(exclude_embeddings=True) == tiny.non_embedding_params()
    assert get_preset("tiny", 500, n_layers=2).n_layers == 2


def test_chameleon_7b_matches_transformers_parameter_count():
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration

    hf_cfg = ChameleonConfig(vocabulary_map={"<image>": 8711})
    cfg = get_preset("chameleon-7b", hf_cfg.vocab_size)
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.ffn_dim) == (
        hf_cfg.hidden_size,
        hf_cfg.num_hidden_layers,
        hf_cfg.num_attention_heads,
        hf_cfg.intermediate_size,
    )
    with torch.device("meta"):
        ours = XPromptModel(cfg)
        hf = ChameleonForConditionalGeneration(hf_cfg)
    n_hf = sum(p.numel() for k, p in hf.named_parameters() if ".vqmodel." not in k)
    assert ours.num_params() == n_hf  # 7,013,666,816 (the VQ-VAE is not part of the decoder)
    assert ours.num_params() == 7_013_666_816


@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="FlexAttention on CPU compiles through inductor, which needs a C++ compiler",
)
def test_flex_path_equals_sdpa_on_xprompt_masks():
    """The GPU fast path's code (dense X-Prompt mask -> FlexAttention block mask, GQA) run for real on the CPU
    (flex_attention compiles for CPU too): same logits as SDPA on X-Prompt masks with grouped-query heads.
    The model refuses ``attn_impl="flex"`` without CUDA (slow to compile, no faster here), so the switch is
    made on a built model."""
    m = small(n_kv_heads=2)
    segs = np.array([[P, IE, IE, IE, IE, XP, XP, TD, TD, TD, TD], [P, P, P, IE, IE, IE, XP, XP, TD, TD, TD]])
    masks = torch.from_numpy(build_attention_mask_batch(segs))  # (2, 11, 11), two different layouts
    x = torch.randint(0, V, (2, 11))
    ref = m(x, attn_mask=masks)
    m.cfg.attn_impl = "flex"
    try:
        with torch.no_grad():  # FlexAttention has no backward on the CPU
            torch.testing.assert_close(m(x, attn_mask=masks), ref, atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(m(x), m(x, attn_mask=torch.ones(2, 11, 11, dtype=torch.bool).tril()))
    finally:
        m.cfg.attn_impl = "sdpa"


def test_compile_regions_same_outputs_gradients_and_names():
    """Regional torch.compile (the trainer's ``compile``) changes neither results nor parameter names, for
    packed per-document batches of two different shapes (the second compiles with dynamic shapes)."""
    from xprompt.masks import DocAttention

    def batch(t, cuts):
        docs = np.full((2, t), -1)
        for r, cut in enumerate(cuts):
            docs[r, :cut], docs[r, cut : t - r] = 0, 1
        segs = np.where(np.arange(t) % 5 == 0, TD, P)[None].repeat(2, 0)
        segs[:, 1], segs[:, 2] = IE, XP
        return (
            torch.randint(0, V, (2, t)),
            torch.from_numpy(np.stack([position_ids(d) for d in docs])),
            DocAttention.from_layout(segs, docs),
        )

    from torch._dynamo.utils import counters

    counters.clear()
    eager, comp = small().train(), small().train()
    names = [n for n, _ in comp.named_parameters()]
    comp.compile_regions()
    assert [n for n, _ in comp.named_parameters()] == names
    assert list(comp.state_dict()) == list(eager.state_dict())
    for t, cuts in ((24, (9, 13)), (31, (20, 7))):
        x, pos, docs = batch(t, cuts)
        for m in (eager, comp):
            m.zero_grad()
            m(x, pos, docs).logsumexp(-1).mean().backward()
        torch.testing.assert_close(comp(x, pos, docs), eager(x, pos, docs), atol=1e-5, rtol=1e-5)
        for (n, pe), pc in zip(eager.named_parameters(), comp.parameters(), strict=True):
            torch.testing.assert_close(pc.grad, pe.grad, atol=1e-5, rtol=1e-4, msg=n)
    assert counters["stats"]["unique_graphs"] >= 3  # q/k/v, MLP and norm regions really were compiled

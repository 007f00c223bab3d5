"""Parity with transformers' Chameleon: converted weights give the same logits / hidden states.

Tolerance: fp32, max abs difference <= 1e-4 on logits of magnitude ~1 (observed ~1e-6); the only differences
are summation order inside matmuls/softmax.
"""

import random

import numpy as np
import pytest
import torch
from published_helpers import SPECIALS

from xprompt.checkpoint import (
    from_hf_model,
    load_hf_checkpoint,
    load_pretrained,
    save_pretrained,
    to_hf_model,
)
from xprompt.errors import CheckpointError
from xprompt.masks import build_attention_mask
from xprompt.sequence import Seg
from xprompt.tokenizer.vocab import chameleon_image_name

transformers = pytest.importorskip("transformers")
ATOL = 1e-4
N_IMG, MAX_GRID, NUM_XP = 32, 8, 4


def synthetic_vocabulary_map(seed: int = 0) -> dict:
    """A small Chameleon-style map: specials, <reservedNNNNN> tokens, text, IMGIMG...Z image tokens, scattered."""
    names = list(SPECIALS)
    names += [f"<reserved{8804 + n:05d}>" for n in range(1, MAX_GRID + 1)]
    names += [f"<reserved{9000 + s:05d}>" for s in range(NUM_XP)]
    names += [f"tok{i}" for i in range(40)] + [chameleon_image_name(c) for c in range(N_IMG)]
    ids = list(range(len(names)))
    random.Random(seed).shuffle(ids)
    return dict(zip(names, ids, strict=True))


def vocab_kwargs():
    return {"max_grid": MAX_GRID}


def hf_model(bare=False, attn="eager", n_kv=2):
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration, ChameleonModel

    torch.manual_seed(0)
    vmap = synthetic_vocabulary_map()
    cfg = ChameleonConfig(
        vocab_size=len(vmap),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=n_kv,
        vocabulary_map=vmap,
        attn_implementation=attn,
        vq_config={
            "embed_dim": 8,
            "num_embeddings": N_IMG,
            "latent_channels": 32,
            "base_channels": 32,
            "channel_multiplier": [1, 1],
            "num_res_blocks": 1,
            "resolution": 32,
        },
    )
    m = (ChameleonModel if bare else ChameleonForConditionalGeneration)(cfg).eval()
    with torch.no_grad():  # random norms, so the per-head affine and RMSNorm weights are really tested
        for k, p in m.named_parameters():
            if "norm" in k and "vqmodel" not in k:
                p.add_(0.3 * torch.randn_like(p))
    return m


def additive(mask_bool: torch.Tensor) -> torch.Tensor:
    """(B, T, S) bool -> (B, 1, T, S) float additive mask for HF (boolean 4D masks misbehave with eager)."""
    return torch.zeros(mask_bool.shape, dtype=torch.float32).masked_fill(
        ~mask_bool, torch.finfo(torch.float32).min
    )[:, None]


def text_columns(vocab):
    keep = torch.ones(vocab.size, dtype=torch.bool)
    keep[torch.as_tensor(vocab.image_ids)] = False
    return keep


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_logits_equal_causal_and_xprompt_mask(attn):
    hf = hf_model(attn=attn)
    ours, vocab = from_hf_model(hf, vocab=_vocab(hf))
    assert vocab.layout == "chameleon" and vocab.num_image_codes == N_IMG
    ids = torch.randint(0, vocab.size, (2, 12))
    cols = text_columns(vocab)
    with torch.no_grad():
        ref = hf(input_ids=ids).logits
        out = ours(ids)
        assert (out - ref)[..., cols].abs().max() < ATOL
        assert (ref[..., ~cols] == torch.finfo(ref.dtype).min).all()  # HF blanks image logits; we do not
        segs = np.array([Seg.PREFIX, Seg.IE, Seg.IE, Seg.IE, Seg.XP, Seg.XP] + [Seg.TD] * 6)
        mask = torch.from_numpy(build_attention_mask(segs))[None].expand(2, -1, -1)
        ref_m = hf(input_ids=ids, attention_mask=additive(mask)).logits
        out_m = ours(ids, attn_mask=mask)
        assert (out_m - ref_m)[..., cols].abs().max() < ATOL
        assert (out_m - out).abs().max() > 1e-3  # the mask really changed something


def _vocab(hf):
    from xprompt.checkpoint import vocab_from_hf_config

    return vocab_from_hf_config(hf.config, num_xp=NUM_XP, **vocab_kwargs())


def test_bare_chameleon_model_hidden_states():
    hf = hf_model(bare=True)
    with pytest.raises(CheckpointError, match="lm_head"):
        from_hf_model(hf, vocab=_vocab(hf))
    ours, _ = from_hf_model(hf, vocab=_vocab(hf), allow_missing_head=True)
    ids = torch.randint(0, hf.config.vocab_size, (1, 10))
    with torch.no_grad():
        ref = hf(input_ids=ids).last_hidden_state
        out = ours(ids, return_hidden=True)
    assert (out - ref).abs().max() < ATOL


def test_load_hf_directory_and_export_round_trip(tmp_path):
    hf = hf_model(n_kv=4)
    hf.save_pretrained(tmp_path / "hf")
    ours, vocab = load_hf_checkpoint(tmp_path / "hf", num_xp=NUM_XP, **vocab_kwargs())
    assert sorted(vocab.image_ids.tolist()) == sorted(
        hf.config.vocabulary_map[chameleon_image_name(c)] for c in range(N_IMG)
    )
    ids = torch.randint(0, vocab.size, (2, 9))
    cols = text_columns(vocab)
    with torch.no_grad():
        ref = hf(input_ids=ids).logits
        assert (ours(ids) - ref)[..., cols].abs().max() < ATOL
        # load_pretrained dispatches on HF directories too (its default grid/XP ids are absent here)
        with pytest.raises(CheckpointError, match="not in the Chameleon vocabulary map"):
            load_pretrained(tmp_path / "hf")
        # ours -> our checkpoint -> back; ours -> HF model (same weights) -> same logits
        save_pretrained(tmp_path / "ours", ours, vocab)
        again, v2 = load_pretrained(tmp_path / "ours")
        assert v2 == vocab
        back = to_hf_model(again, v2, attn_implementation="eager")
        assert (back(input_ids=ids).logits - ref)[..., cols].abs().max() < ATOL


def test_hf_directory_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_hf_checkpoint(tmp_path)
    hf = hf_model()
    hf.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_hf_checkpoint(tmp_path / "hf", num_xp=NUM_XP, **vocab_kwargs())


def test_greedy_tokens_match_hf_generate():
    """Our cached decoding (image ids blanked, as HF does) picks the same greedy tokens as HF generate()."""
    import numpy as np

    from xprompt.generation import decode, prefill
    from xprompt.sampling import SamplingConfig
    from xprompt.sequence import TokenSequence

    hf = hf_model(attn="sdpa")
    ours, vocab = from_hf_model(hf, vocab=_vocab(hf))

    class BlankImages:
        allowed_ids = text_columns(vocab).nonzero().squeeze(1)

        def forced(self, step, batch, device):
            return torch.full((batch,), -1, dtype=torch.long)

        def is_image(self, step, batch, device):
            return torch.zeros(batch, dtype=torch.bool)

        def finished(self, step, tokens):
            return torch.zeros_like(tokens, dtype=torch.bool)

    ids = torch.randint(0, vocab.size, (1, 9))
    with torch.no_grad():
        ref = hf.generate(ids, max_new_tokens=6, min_new_tokens=6, do_sample=False)[:, 9:]
    seq = TokenSequence(ids[0].numpy(), np.full(9, 3, np.int8), np.zeros(9, bool))
    pre = prefill(ours, [seq], vocab.pad_id)
    got = decode(ours, pre, BlankImages(), SamplingConfig(greedy=True), 6, fill_id=vocab.eos_id)
    assert got.tolist() == ref.tolist()

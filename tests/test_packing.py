"""Packing, collation and data loading: bins respect max_len, every sample is used once per epoch, the data
order is a pure function of the seed, and a packed batch gives the same loss as the samples one by one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xprompt.errors import XPromptError
from xprompt.sequence import Seg, build_sample, convert_mode
from xprompt.tokenizer.vocab import Vocabulary
from xprompt.train.packing import (
    Loader,
    SampleSource,
    SequencePlan,
    collate,
    first_fit,
    load_training_data,
    micro_batch_sequences,
    mode_lengths,
)


def tiny_vocab() -> Vocabulary:
    return Vocabulary.build(text_size=16, num_image_codes=24, num_xp=4, max_grid=8)


def make_dataset(path, n: int = 48, seed: int = 0, vocab: Vocabulary | None = None, meta: bool = True):
    """Synthetic task-suite-like data in ``xp`` layout: a random palette map shown by one example pair.

    Same layout as ``xprompt data build``: ``data/`` (save_to_disk), ``vocab.json``, ``tokenizers.json``."""
    from datasets import Dataset

    vocab = vocab or tiny_vocab()
    rng = np.random.default_rng(seed)
    cols = {k: [] for k in ("input_ids", "segs", "loss", "task", "family", "seed", "n_tokens")}
    for i in range(n):
        perm = rng.permutation(vocab.num_image_codes)
        h, w = int(rng.integers(2, 6)), int(rng.integers(2, 6))
        ex = rng.integers(0, vocab.num_image_codes, (h, w))
        q = rng.integers(0, vocab.num_image_codes, (h, w))
        s = build_sample(vocab, None, mode="xp", examples=[(ex, perm[ex])], query=q, answer=perm[q])
        cols["input_ids"].append(s.ids.tolist())
        cols["segs"].append(s.segs.tolist())
        cols["loss"].append(s.loss.astype(np.int8).tolist())
        cols["task"].append("palette")
        cols["family"].append("color")
        cols["seed"].append(i)
        cols["n_tokens"].append(len(s))
    path.mkdir(parents=True, exist_ok=True)
    Dataset.from_dict(cols).save_to_disk(str(path / "data"))
    vocab.save(path / "vocab.json")
    if meta:
        (path / "tokenizers.json").write_text(
            json.dumps({"bpe": {"path": "checkpoints/bpe"}, "image_tokenizer": {}})
        )
    return path


def test_first_fit_bins_respect_max_len_and_use_every_sample_once():
    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 60, 500)
    bins = first_fit(lengths, rng.permutation(500), max_len=128, window=8)
    used = np.concatenate(bins)
    assert sorted(used.tolist()) == list(range(500))
    assert all(lengths[b].sum() <= 128 for b in bins)
    fill = lengths.sum() / (128 * len(bins))
    assert fill > 0.9, fill  # packing leaves little padding


def test_plan_is_deterministic_and_skips_too_long():
    lengths = np.array([10, 200, 30, 40, 50, 20, 5, 300])
    a = SequencePlan(lengths, 100, seed=3)
    b = SequencePlan(lengths, 100, seed=3)
    assert a.skipped == 2
    for k in range(12):  # crosses epochs
        ea, sa = a.sequence(k)
        eb, sb = b.sequence(k)
        assert ea == eb and np.array_equal(sa, sb)
        assert 1 not in sa and 7 not in sa
    e0 = np.concatenate(a.epoch(0))
    assert sorted(e0.tolist()) == [0, 2, 3, 4, 5, 6]
    assert not all(
        np.array_equal(x, y) for x, y in zip(a.epoch(0), a.epoch(1), strict=False)
    )  # reshuffled per epoch


def test_micro_batches_cover_each_step_once_for_any_world_size():
    for world, micro, glob in ((1, 4, 8), (2, 2, 8), (2, 1, 8), (4, 2, 8)):
        accum = glob // (micro * world)
        got = sorted(
            k
            for a in range(accum)
            for r in range(world)
            for k in micro_batch_sequences(3, a, r, micro=micro, world=world, global_batch=glob)
        )
        assert got == list(range(24, 32))


def test_collate_masks_positions_and_padding():
    vocab = tiny_vocab()
    s1 = build_sample(
        vocab,
        None,
        examples=[(np.zeros((2, 2), int), np.ones((2, 2), int))],
        query=np.zeros((2, 2), int),
        answer=np.ones((2, 2), int),
    )
    s2 = convert_mode(s1, "none")
    b = collate([[s1, s2], [s2]], vocab)
    t = len(s1) + len(s2)
    assert b.input_ids.shape == (2, t) and b.attn_mask.shape == (2, t, t)
    assert b.n_real == t + len(s2) and b.n_samples == 3
    # positions restart at the second document
    assert b.position_ids[0, len(s1)].item() == 0 and b.position_ids[0, -1].item() == len(s2) - 1
    # no attention across documents; TD of the xp document cannot see its IE
    m = b.attn_mask[0].numpy()
    assert not m[len(s1) :, : len(s1)].any()
    td = np.nonzero(s1.segs == Seg.TD)[0]
    ie = np.nonzero(s1.segs == Seg.IE)[0]
    assert not m[np.ix_(td, ie)].any()
    # padding is never a target and holds the pad id
    assert not b.loss_mask[1, len(s2) :].any() and (b.input_ids[1, len(s2) :] == vocab.pad_id).all()
    assert b.image_mask.sum() > 0


def test_mode_lengths_match_convert_mode(tmp_path):
    make_dataset(tmp_path / "d", n=12)
    td = load_training_data(tmp_path / "d", val_fraction=0.0)
    for mode in ("xp", "full", "none"):
        src = SampleSource(td.train.ds, mode)
        got = mode_lengths(td.train.ds, mode)
        assert got.tolist() == [len(s) for s in src.get(range(12))]


def test_packed_loss_equals_unpacked_loss(tmp_path):
    import torch

    from xprompt.loss import next_token_loss
    from xprompt.model import XPromptModel
    from xprompt.model_config import get_preset

    torch.manual_seed(0)
    make_dataset(tmp_path / "d", n=10)
    td = load_training_data(tmp_path / "d", val_fraction=0.0)
    vocab = td.vocab
    model = XPromptModel(
        get_preset("tiny", vocab.size, dim=32, n_layers=2, n_heads=2, n_kv_heads=2, ffn_dim=64)
    )
    model.eval()
    torch.set_grad_enabled(False)
    samples = td.train.get(range(10))
    # packed: all samples in two rows
    packed = collate([samples[:5], samples[5:]], vocab)
    o = next_token_loss(
        model(packed.input_ids, packed.position_ids, packed.attn_mask), packed.input_ids, packed.loss_mask
    )
    # unpacked: one sample at a time, no padding at all, plain masks
    tot, n = 0.0, 0
    for s in samples:
        b = collate([[s]], vocab)
        oi = next_token_loss(model(b.input_ids, b.position_ids, b.attn_mask), b.input_ids, b.loss_mask)
        tot += float(oi["ce"]) * int(oi["n_tokens"])
        n += int(oi["n_tokens"])
    assert int(o["n_tokens"]) == n
    assert abs(float(o["ce"]) - tot / n) < 1e-5
    torch.set_grad_enabled(True)


def test_doc_attention_equals_dense_mask(tmp_path):
    """Per-document attention gives the dense block-diagonal mask's logits and gradients (modes mixed, one row
    padded), and the model refuses a layout that does not describe its batch."""
    import torch

    from xprompt.loss import next_token_loss
    from xprompt.model import XPromptModel
    from xprompt.model_config import get_preset

    torch.manual_seed(0)
    make_dataset(tmp_path / "d", n=7)
    td = load_training_data(tmp_path / "d", val_fraction=0.0)
    vocab = td.vocab
    model = XPromptModel(
        get_preset("tiny", vocab.size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64)
    )
    s = td.train.get(range(7))
    rows = [[s[0], convert_mode(s[1], "none"), convert_mode(s[2], "full")], [s[3]], [s[4], s[5], s[6]]]
    out = {}
    for doc_attention in (False, True):
        b = collate(rows, vocab, doc_attention=doc_attention)
        model.zero_grad()
        logits = model(b.input_ids, b.position_ids, b.attn_mask)
        next_token_loss(logits, b.input_ids, b.loss_mask)["loss"].backward()
        real = b.input_ids != vocab.pad_id
        out[doc_attention] = (logits[real].detach(), [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(out[True][0], out[False][0], atol=2e-5, rtol=1e-4)
    for g1, g0 in zip(out[True][1], out[False][1], strict=True):
        torch.testing.assert_close(g1, g0, atol=2e-5, rtol=1e-4)
    b = collate(rows, vocab, doc_attention=True)
    with pytest.raises(ValueError, match="DocAttention"):
        model(b.input_ids[:2], b.position_ids[:2], b.attn_mask)


def test_loader_reads_micro_batches(tmp_path):
    make_dataset(tmp_path / "d", n=30)
    td = load_training_data(tmp_path / "d", val_fraction=0.2, seed=1)
    assert len(td.train) == 24 and len(td.val) == 6
    assert td.meta["tokenizers.json"]["bpe"]["path"] == "checkpoints/bpe"
    plan = SequencePlan(td.train.lengths, 64, seed=0)
    loader = Loader(td.train, plan, td.vocab, micro=2, world=1, global_batch=4)
    b, epoch = loader.micro_batch(0, 1, 0)
    assert b.input_ids.shape[0] == 2 and b.input_ids.shape[1] <= 64 and epoch == 0


def test_bad_data_dirs(tmp_path):
    with pytest.raises(XPromptError, match="not found"):
        load_training_data(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(XPromptError, match="no saved dataset"):
        load_training_data(tmp_path / "empty")
    make_dataset(tmp_path / "novocab", n=4)
    (tmp_path / "novocab" / "vocab.json").unlink()
    with pytest.raises(XPromptError, match="vocab.json"):
        load_training_data(tmp_path / "novocab")

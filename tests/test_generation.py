"""Compressed-context decoding equals the masked full forward; batching, structure, sampling, CFG, text stop."""

import numpy as np
import pytest
import torch
from gen_helpers import CharTok, codes, tiny_model, tiny_vocab

from xprompt.errors import XPromptError
from xprompt.generation import decode, generate_images, generate_text, prefill
from xprompt.masks import build_attention_mask
from xprompt.sampling import ImageGrid, SamplingConfig, TextOnly, sample
from xprompt.sequence import Seg, build_sample, parse_image

TOK = CharTok()


def sample_seq(vocab, rng, mode="xp", n_examples=2, instruction="make it red", size=(3, 4)):
    ex = [(codes(rng, *size), codes(rng, *size)) for _ in range(n_examples)]
    return build_sample(
        vocab,
        TOK,
        mode=mode,
        instruction=instruction,
        examples=ex,
        query=codes(rng, *size),
        answer=codes(rng, *size),
    )


def first_answer_index(seq):
    return int(np.nonzero(seq.loss)[0][0])


@pytest.mark.parametrize("n_examples", [1, 3])
def test_compressed_cache_decoding_equals_masked_full_forward(n_examples):
    vocab, rng = tiny_vocab(), np.random.default_rng(n_examples)
    model = tiny_model(vocab)
    seq = sample_seq(vocab, rng, n_examples=n_examples)
    ids = torch.from_numpy(seq.ids)[None]
    mask = torch.from_numpy(build_attention_mask(seq.segs))[None]
    with torch.no_grad():
        full = model(ids, attn_mask=mask)[0]  # (T, V)
    a = first_answer_index(seq)
    prompt = type(seq)(seq.ids[:a], seq.segs[:a], seq.loss[:a])
    for compress in (True, False):
        pre = prefill(model, [prompt], vocab.pad_id, compress=compress)
        got = [pre.logits[0]]
        with torch.no_grad():
            for t in range(a, len(seq) - 1):
                got.append(model(ids[:, t : t + 1], kv_cache=pre.cache)[0, -1])
        torch.testing.assert_close(torch.stack(got), full[a - 1 : len(seq) - 1], atol=2e-5, rtol=1e-4)
        n_ie = int((seq.segs[:a] == Seg.IE).sum())
        expected_len = len(seq) - 1 - (n_ie if compress else 0)
        assert pre.cache.length == expected_len
    # and the mask matters: plain causal logits differ
    with torch.no_grad():
        assert (model(ids)[0, a:] - full[a:]).abs().max() > 1e-3


def test_batched_prefill_with_padding_equals_single_rows():
    vocab, rng = tiny_vocab(), np.random.default_rng(0)
    model = tiny_model(vocab)
    seqs = [
        sample_seq(vocab, rng, n_examples=1, instruction="red"),
        sample_seq(vocab, rng, n_examples=2, instruction="a much longer instruction", size=(2, 3)),
        sample_seq(vocab, rng, mode="full", n_examples=1),
        sample_seq(vocab, rng, mode="none", n_examples=0, instruction=""),
    ]
    prompts = [
        type(s)(
            s.ids[: first_answer_index(s)], s.segs[: first_answer_index(s)], s.loss[: first_answer_index(s)]
        )
        for s in seqs
    ]
    batch = prefill(model, prompts, vocab.pad_id)
    nxt = torch.tensor([[vocab.boi_id]] * len(prompts))
    with torch.no_grad():
        step_b = model(nxt, kv_cache=batch.cache)[:, -1]
    for i, p in enumerate(prompts):
        one = prefill(model, [p], vocab.pad_id)
        torch.testing.assert_close(batch.logits[i], one.logits[0], atol=2e-5, rtol=1e-4)
        with torch.no_grad():
            torch.testing.assert_close(
                step_b[i], model(nxt[:1], kv_cache=one.cache)[0, -1], atol=2e-5, rtol=1e-4
            )


def test_generate_images_structure_batching_and_seed():
    vocab, rng = tiny_vocab(), np.random.default_rng(1)
    model = tiny_model(vocab)
    q1, q2 = codes(rng, 3, 4), codes(rng, 2, 5)
    ex = [(codes(rng, 3, 4), codes(rng, 3, 4))]
    p1 = build_sample(vocab, TOK, mode="xp", examples=ex, query=q1)
    p2 = build_sample(vocab, TOK, mode="xp", instruction="blue", examples=ex, query=q2)
    greedy = SamplingConfig(greedy=True)
    both = generate_images(model, vocab, [p1, p2], [(3, 4), (2, 5)], greedy)
    assert both[0].shape == (3, 4) and both[1].shape == (2, 5)
    assert both[0].min() >= 0 and both[0].max() < 16
    np.testing.assert_array_equal(both[1], generate_images(model, vocab, [p2], [(2, 5)], greedy)[0])
    s1 = generate_images(model, vocab, [p1], [(3, 4)], SamplingConfig(seed=5, image_top_k=4))[0]
    s2 = generate_images(model, vocab, [p1], [(3, 4)], SamplingConfig(seed=5, image_top_k=4))[0]
    np.testing.assert_array_equal(s1, s2)
    cfg = generate_images(
        model, vocab, [p1, p2], [(3, 4), (2, 5)], SamplingConfig(greedy=True, cfg_scale=3.0)
    )
    assert cfg[1].shape == (2, 5)


def test_guidance_against_the_prompt_itself_is_no_guidance():
    """``uncond``: guidance contrasts each row with its own reference prompt; when the reference is the prompt,
    cond == uncond and any scale gives the unguided output, while the default reference (``<bos>``) does not."""
    vocab, rng = tiny_vocab(), np.random.default_rng(3)
    model = tiny_model(vocab)
    q1, q2 = codes(rng, 3, 4), codes(rng, 2, 5)
    p1 = build_sample(vocab, TOK, mode="none", query=q1)
    p2 = build_sample(vocab, TOK, mode="none", instruction="blue", query=q2)
    sizes = [(3, 4), (2, 5)]
    plain = generate_images(model, vocab, [p1, p2], sizes, SamplingConfig(greedy=True))
    guided = SamplingConfig(greedy=True, cfg_scale=4.0)
    same = generate_images(model, vocab, [p1, p2], sizes, guided, uncond=[p1, p2])
    for a, b in zip(plain, same, strict=True):
        np.testing.assert_array_equal(a, b)
    empty = generate_images(model, vocab, [p1, p2], sizes, guided)
    assert any(not np.array_equal(a, b) for a, b in zip(plain, empty, strict=True))
    ref = build_sample(vocab, TOK, mode="none", query=q2)  # row 2 against its query alone: not its own prompt
    other = generate_images(model, vocab, [p1, p2], sizes, guided, uncond=[p1, ref])
    np.testing.assert_array_equal(other[0], plain[0])
    with pytest.raises(XPromptError, match="one reference prompt per prompt"):
        generate_images(model, vocab, [p1, p2], sizes, guided, uncond=[p1])


def test_image_grid_forces_structure():
    vocab = tiny_vocab()
    proc = ImageGrid(vocab, [2, 1], [2, 3])
    logits = torch.zeros(2, vocab.size)
    seen = []
    for s in range(proc.steps):
        out = proc(s, logits)
        seen.append(sample(out, SamplingConfig(greedy=True), proc.is_image(s)))
        allowed = torch.isfinite(out)
        for b in range(2):
            if bool(proc.is_image(s)[b]):
                assert allowed[b].sum() == 16 and bool(vocab.is_image(allowed[b].nonzero()).all())
            else:
                assert allowed[b].sum() == 1
    toks = torch.stack(seen, 1)
    head = [vocab.boi_id, vocab.h_token(2), vocab.w_token(2)]
    parse_image(vocab, head + toks[0].tolist())  # a valid 2x2 image: rows, <eol>s, <eoi>
    assert toks[1, 4].item() == vocab.eoi_id and toks[1, 5].item() == vocab.eos_id  # 1x3 finished early
    with pytest.raises(Exception, match="grid"):
        ImageGrid(vocab, [9], [1])


def test_separate_top_k_and_greedy():
    logits = torch.tensor([[5.0, 4.0, 3.0, -1.0], [5.0, 4.0, 3.0, -1.0]])
    cfg = SamplingConfig(image_top_k=1, text_top_k=3, seed=0)
    g = cfg.generator()
    draws = torch.stack([sample(logits, cfg, torch.tensor([True, False]), g) for _ in range(200)])
    assert set(draws[:, 0].tolist()) == {0}  # image row: top-1
    assert set(draws[:, 1].tolist()) == {0, 1, 2}  # text row: top-3, never the 4th
    assert sample(logits, SamplingConfig(greedy=True), torch.tensor([False, False])).tolist() == [0, 0]
    with pytest.raises(Exception, match="temperature"):
        SamplingConfig(temperature=0)


class ScriptedHead(torch.nn.Module):
    """Replaces lm_head: the i-th call's last position prefers script[i] (10.0), else ``fallback`` (5.0)."""

    def __init__(self, vocab_size, script, fallback):
        super().__init__()
        self.v, self.script, self.fallback, self.i = vocab_size, script, fallback, 0

    def forward(self, h):
        out = torch.zeros(*h.shape[:-1], self.v)
        out[..., self.fallback] = 5.0
        out[..., self.script[min(self.i, len(self.script) - 1)]] = 10.0
        self.i += 1
        return out


def test_text_generation_stops_at_eot():
    vocab = tiny_vocab()
    model = tiny_model(vocab)
    a, b = vocab.text_to_ids(TOK.encode("ab"))
    img = int(vocab.image_ids[0])
    model.lm_head = ScriptedHead(vocab.size, [a, img, vocab.eot_id, a, a], fallback=b)  # img is masked -> b
    prompt = build_sample(vocab, TOK, mode="none", query=[codes(np.random.default_rng(0), 2, 2)])
    out = generate_text(model, vocab, [prompt], SamplingConfig(greedy=True), max_new_tokens=10)[0]
    assert out == [a, b]
    model.lm_head.i = 0
    model.lm_head.script = [a]  # never stops: capped by max_new_tokens
    assert generate_text(model, vocab, [prompt], SamplingConfig(greedy=True), max_new_tokens=4)[0] == [a] * 4


def test_text_only_processor_masks():
    vocab = tiny_vocab()
    out = TextOnly(vocab)(0, torch.zeros(1, vocab.size))
    allowed = set(torch.isfinite(out[0]).nonzero().squeeze(1).tolist())
    assert vocab.eot_id in allowed and vocab.eos_id in allowed
    assert not allowed & set(vocab.image_ids.tolist()) and not allowed & set(vocab.xp_ids.tolist())
    assert vocab.boi_id not in allowed


def test_decode_peak_cache_smaller_when_compressed():
    vocab, rng = tiny_vocab(), np.random.default_rng(2)
    model = tiny_model(vocab)
    ex = [(codes(rng, 4, 4), codes(rng, 4, 4)) for _ in range(3)]
    sizes = {}
    for mode in ("xp", "full"):
        p = build_sample(vocab, TOK, mode=mode, examples=ex, query=codes(rng, 4, 4))
        peak = []
        generate_images(
            model,
            vocab,
            [p],
            [(4, 4)],
            SamplingConfig(greedy=True),
            on_step=lambda s, c, peak=peak: peak.append(c.nbytes()),
        )
        sizes[mode] = max(peak)
    assert sizes["xp"] < 0.5 * sizes["full"]


def test_decode_rejects_empty_query():
    vocab, rng = tiny_vocab(), np.random.default_rng(0)
    model = tiny_model(vocab)
    p = build_sample(vocab, TOK, mode="xp", examples=[(codes(rng, 2, 2), codes(rng, 2, 2))])
    with pytest.raises(Exception, match="query"):
        prefill(model, [p], vocab.pad_id)
    assert decode is not None


@pytest.mark.parametrize("mode", ["xp", "full"])
def test_shared_context_prefilled_once_equals_single_rows(mode):
    vocab, rng = tiny_vocab(), np.random.default_rng(5)
    model = tiny_model(vocab)
    ex = [(codes(rng, 3, 3), codes(rng, 3, 3))]
    prompts = [
        build_sample(vocab, TOK, mode=mode, instruction="same", examples=ex, query=codes(rng, 3, 3 + i))
        for i in range(3)
    ]
    batch = prefill(model, prompts, vocab.pad_id)
    for i, p in enumerate(prompts):
        torch.testing.assert_close(
            batch.logits[i], prefill(model, [p], vocab.pad_id).logits[0], atol=2e-5, rtol=1e-4
        )


# ---------------------------------------------------------------------------------------------- KV cache buffers
def _step_logits(model, cache, ids):
    """Feed ``ids (B, n)`` one token at a time through ``cache`` -> (B, n, V) logits."""
    with torch.no_grad():
        return torch.cat([model(ids[:, t : t + 1], kv_cache=cache) for t in range(ids.shape[1])], 1)


def test_cache_grows_past_capacity_and_reserve_avoids_copies():
    from xprompt.kv_cache import MIN_CAPACITY

    vocab = tiny_vocab()
    model = tiny_model(vocab)
    n = 3 * MIN_CAPACITY + 5  # three doublings from the first allocation
    ids = torch.randint(0, vocab.size, (2, n), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids)  # (2, n, V)
    cache = model.new_cache()
    caps = []
    with torch.no_grad():
        got = [model(ids[:, :10], kv_cache=cache)]
        for t in range(10, n):
            got.append(model(ids[:, t : t + 1], kv_cache=cache))
            caps.append(cache.capacity)
    torch.testing.assert_close(torch.cat(got, 1), full, atol=2e-5, rtol=1e-4)
    assert cache.length == n and cache.key_mask.shape == (2, n) and bool(cache.key_mask.all())
    assert sorted(set(caps)) == [MIN_CAPACITY, 2 * MIN_CAPACITY, 4 * MIN_CAPACITY]  # doubling, not per step
    assert cache.nbytes() < cache.capacity_nbytes()
    # reserve: one allocation up front, then every step writes in place
    cache = model.new_cache().reserve(n)
    with torch.no_grad():
        model(ids[:, :10], kv_cache=cache)
        ptr = cache.k[0].data_ptr()
        out = _step_logits(model, cache, ids[:, 10:])
    assert cache.k[0].data_ptr() == ptr and cache.capacity == n + 10
    torch.testing.assert_close(out, full[:, 10:], atol=2e-5, rtol=1e-4)


def test_keep_after_growth_equals_hiding_the_dropped_entries():
    vocab = tiny_vocab()
    model = tiny_model(vocab)
    ids = torch.randint(0, vocab.size, (1, 150), generator=torch.Generator().manual_seed(1))
    a, b = model.new_cache(), model.new_cache()
    with torch.no_grad():
        model(ids[:, :100], kv_cache=a)
        _step_logits(model, a, ids[:, 100:140])  # grown past its first capacity
        model(ids[:, :140], kv_cache=b)
    keep = torch.cat([torch.arange(0, 5), torch.arange(60, 140)])  # drop entries 5..59
    a.keep(keep)
    assert a.length == len(keep) and a.next_pos.tolist() == [140]
    hidden = torch.zeros(1, 140, dtype=torch.bool)
    hidden[0, 5:60] = True
    b.hide(hidden)  # same visibility, entries still stored
    assert not b.all_valid() and a.all_valid()
    torch.testing.assert_close(
        _step_logits(model, a, ids[:, 140:]), _step_logits(model, b, ids[:, 140:]), atol=2e-5, rtol=1e-4
    )
    assert a.length == len(keep) + 10 and b.length == 150
    with pytest.raises(IndexError):
        a.keep(torch.tensor([0, a.length]))


def test_cache_state_dict_round_trip_holds_committed_entries_only():
    from xprompt.kv_cache import KVCache

    vocab = tiny_vocab()
    model = tiny_model(vocab)
    ids = torch.randint(0, vocab.size, (2, 90), generator=torch.Generator().manual_seed(2))
    cache = model.new_cache()
    with torch.no_grad():
        model(ids[:, :70], kv_cache=cache)
        _step_logits(model, cache, ids[:, 70:80])
    hidden = torch.zeros(2, 80, dtype=torch.bool)
    hidden[1, :3] = True
    cache.hide(hidden)
    sd = cache.state_dict()
    assert sd["k.0"].shape[2] == 80 and sd["key_mask"].shape == (2, 80) and sd["key_mask"].sum() == 157
    back = KVCache.from_state_dict({k: v.clone() for k, v in sd.items()}, model.cfg.n_layers)
    assert (
        back.length == 80
        and torch.equal(back.key_mask, cache.key_mask)
        and torch.equal(back.next_pos, cache.next_pos)
    )
    torch.testing.assert_close(
        _step_logits(model, back, ids[:, 80:]), _step_logits(model, cache, ids[:, 80:]), atol=0, rtol=0
    )
    copy = back.clone()
    assert copy.length == 90 and torch.equal(copy.k[0], back.k[0][:, :, :90])
    copy.hide(torch.ones(2, 90, dtype=torch.bool))  # a clone shares no storage with its source
    assert bool(back.key_mask.all(1)[0]) and not bool(copy.key_mask.any())
    with pytest.raises(ValueError, match="batch-1"):
        back.expand(3)
    with pytest.raises(ValueError, match="entries"):
        KVCache.from_state_dict(dict(sd, **{"v.1": sd["v.1"][:, :, :-1]}), model.cfg.n_layers)


def test_image_grid_schedule_tables():
    vocab = tiny_vocab()
    proc = ImageGrid(vocab, [2, 1], [2, 3])  # bodies 6 and 4 tokens; 7 steps
    assert proc.steps == 7
    expect_forced = [
        [-1, -1],
        [-1, -1],
        [vocab.eol_id, -1],
        [-1, vocab.eol_id],
        [-1, vocab.eoi_id],
        [vocab.eol_id, vocab.eos_id],
        [vocab.eoi_id, vocab.eos_id],
        [vocab.eos_id, vocab.eos_id],
    ]
    for s, row in enumerate(expect_forced + [expect_forced[-1]] * 3):  # past the end: <eos> forever
        assert proc.forced(s).tolist() == row
        assert proc.is_image(s).tolist() == [r == -1 for r in row]
        assert proc.all_forced(s) == all(r >= 0 for r in row)
    assert proc.finished(4, torch.zeros(2)).tolist() == [False, True]
    assert proc.finished(6, torch.zeros(2)).tolist() == [True, True]

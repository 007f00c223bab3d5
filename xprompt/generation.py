"""KV-cached generation with X-Prompt's compressed context, batched over several prompts.

Design choices
* Prefill in (at most) two stages per batch. Stage A runs the context (PREFIX + IE + XP: everything before
  the first TD token); in rows with XP tokens ``KVCache.keep`` then drops every IE entry; stage B runs the TD
  query against what is kept. When every row has the same context (several queries, one set of examples) stage
  A runs once and the cache is copied (``expand``), in every mode. Neither stage needs an X-Prompt mask: stage A has no TD token and after the drop TD can
  only see what the mask would have let it see. Positions run on from the full sequence, so the logits equal
  those of the masked full forward (tested). Prompts without XP tokens (modes ``full``/``none``) run in one
  stage; ``compress=False`` keeps the IE entries and applies the explicit mask instead (for comparisons).
* Batching: each stage's rows are left-padded; padded entries are marked invalid in the cache's
  ``key_mask`` and get explicit positions, so rows of different lengths decode together. Rows keep a
  different number of entries after compression (instructions differ in length): ``keep`` takes a per-row
  index with a validity mask.
* ``<boi> <h_H> <w_W>`` are forced, so they join the prompt (one prefill instead of three steps). After that
  every step is one token per row through the cache; forced ``<eol>``/``<eoi>`` still go through the model.
* Classifier-free guidance: the unconditional rows (``<bos> <boi> <h> <w>``, then the same sampled tokens: the
  image so far without any text or example) are extra rows of the same batch; with a compiled context their
  copy of the context is hidden through ``key_mask``. ``uncond`` replaces ``<bos>`` with a reference prompt
  per row, e.g. the query alone (InstructPix2Pix's text guidance: the guidance then amplifies only what the
  instruction and example add to the query, not the query's own pull towards a copy).
* The image tokenizer and the text tokenizer are not used here: inputs are ``TokenSequence``s, outputs are
  codes (h, w) or token ids. ``xprompt.pipeline`` does the pixels and strings.
* Progress: ``progress=True`` draws a tqdm bar; a callable ``progress(done, total)`` is called after every
  decoding step instead (how a web page shows token-by-token progress without UI code here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from xprompt.errors import XPromptError
from xprompt.kv_cache import KVCache
from xprompt.masks import build_attention_mask, compressed_away
from xprompt.sampling import ImageGrid, MaskedGrid, SamplingConfig, TextOnly, cfg_combine, sample
from xprompt.sequence import Seg, TokenSequence

PAD_SEG = -1
Progress = bool | Callable[[int, int], None]  # a tqdm bar (True), none (False) or a callback(done, total)


@dataclass
class Prefill:
    cache: KVCache
    logits: torch.Tensor  # (B, V) logits of the last prompt token of each row
    segs: torch.Tensor  # (B, S) segment of every cache entry (PAD_SEG for padding)


def _left_pad(rows: list[np.ndarray], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = max((len(r) for r in rows), default=0)
    out = torch.full((len(rows), t), fill, dtype=torch.long)
    valid = torch.zeros(len(rows), t, dtype=torch.bool)
    for b, r in enumerate(rows):
        if len(r):
            out[b, t - len(r) :] = torch.as_tensor(np.asarray(r), dtype=torch.long)
            valid[b, t - len(r) :] = True
    return out, valid  # (B, T), (B, T)


@torch.no_grad()
def append_block(
    model, cache: KVCache, rows: list[np.ndarray], pad_id: int, inner_mask=None, logits: bool = True
) -> torch.Tensor | None:
    """Run one left-padded block of new tokens through ``model`` into ``cache``; return last-token logits (B, V).

    ``inner_mask (B, T, T)`` optionally restricts attention among the new tokens (default causal).
    """
    dev = next(model.parameters()).device
    ids, valid = _left_pad(rows, pad_id)
    ids, valid = ids.to(dev), valid.to(dev)
    b, t = ids.shape
    npad = (~valid).sum(1)  # (B,)
    start = cache.next_pos if cache.next_pos is not None else torch.zeros(b, dtype=torch.long, device=dev)
    pos = start[:, None] + torch.arange(t, device=dev)[None, :] - npad[:, None]  # (B, T)
    all_valid = bool(valid.all())
    if cache.length == 0 and inner_mask is None and all_valid:
        mask = None  # plain causal from an empty cache: SDPA's causal kernel, no (B, T, T) mask (2-3x faster)
    else:
        inner = valid[:, None, :].expand(b, t, t)  # (B, T, T) padding is seen by no one
        if inner_mask is not None:
            inner = inner & inner_mask.to(dev)
        mask = cache.default_mask(t, b, dev, inner)  # (B, T, L+T)
    h = model(
        ids,
        position_ids=pos,
        attn_mask=mask,
        kv_cache=cache,
        key_valid=None if all_valid else valid,
        return_hidden=True,
    )
    return model.lm_head(h[:, -1]) if logits else None  # (B, V)


@torch.no_grad()
def prefill(
    model,
    seqs: list[TokenSequence],
    pad_id: int,
    *,
    compress: bool = True,
    cache: KVCache | None = None,
    cache_segs: torch.Tensor | None = None,
) -> Prefill:
    """Prefill ``seqs`` (one per row). With ``cache`` (e.g. a compiled, expanded context) the seqs continue it.

    ``compress=False`` runs whole prompts in one masked block and keeps the IE entries (the uncompressed
    reference); it needs an empty cache.
    """
    dev = next(model.parameters()).device
    b = len(seqs)
    if cache is None:
        cache, segs = model.new_cache(), torch.zeros(b, 0, dtype=torch.long, device=dev)
    else:
        if cache.batch_size != b:
            raise ValueError(f"cache has batch {cache.batch_size}, got {b} sequences")
        segs = (
            cache_segs if cache_segs is not None else torch.full((b, cache.length), int(Seg.XP), device=dev)
        )
    if not compress:
        logits = _masked_full(model, cache, seqs, pad_id)
        segs = _left_pad([s.segs for s in seqs], PAD_SEG)[0].to(dev)  # (B, L)
        cache.hide(compressed_away(segs))  # later (TD) tokens must not see IE either
        return Prefill(cache, logits, segs)
    splits = []  # context end = first TD token (PREFIX [+ IE [+ XP]] before it)
    for s in seqs:
        td = np.nonzero(s.segs == int(Seg.TD))[0]
        splits.append(int(td[0]) if len(td) else len(s))
    if any(len(s) - a == 0 for s, a in zip(seqs, splits, strict=True)):
        raise XPromptError("every prompt needs at least one token after its context (the query)")
    ctx = [_slice(s, 0, a) for s, a in zip(seqs, splits, strict=True)]
    shared = (
        cache.length == 0
        and b > 1
        and splits[0] > 0
        and all(np.array_equal(c.ids, ctx[0].ids) and np.array_equal(c.segs, ctx[0].segs) for c in ctx)
    )

    def run(parts: list[TokenSequence], logits: bool = True) -> torch.Tensor | None:
        nonlocal segs
        logits = append_block(model, cache, [p.ids for p in parts], pad_id, logits=logits)
        segs = torch.cat([segs, _left_pad([p.segs for p in parts], PAD_SEG)[0].to(dev)], dim=1)
        return logits

    if any(splits):  # stage A: the context (PREFIX + IE + XP); then drop IE where there are XP tokens
        if shared:  # queries sharing one context (same examples): prefill it once, then copy the cache
            cache, segs = model.new_cache(), segs[:1]
            run(ctx[:1], logits=False)
        else:
            run(ctx, logits=False)
        dropped = compressed_away(segs)  # (B, L)
        if bool(dropped.any()):
            keep = cache.key_mask & (segs != PAD_SEG) & ~dropped  # (B, L)
            n = keep.sum(1)  # (B,) entries kept per row
            idx = torch.zeros(
                keep.shape[0], int(n.max()), dtype=torch.long, device=dev
            )  # (B, K) left-aligned
            for r in range(keep.shape[0]):
                k = keep[r].nonzero().squeeze(1)
                idx[r, : len(k)] = k
            valid = torch.arange(idx.shape[1], device=dev)[None, :] < n[:, None]  # (B, K)
            cache.keep(idx, valid)
            segs = torch.where(valid, segs.gather(1, idx), torch.full_like(idx, PAD_SEG))
        if shared:
            cache, segs = cache.expand(b), segs.expand(b, -1).contiguous()
    logits = run([_slice(s, a, len(s)) for s, a in zip(seqs, splits, strict=True)])  # stage B: the TD part
    return Prefill(cache, logits, segs)


def _slice(s: TokenSequence, a: int, b: int) -> TokenSequence:
    return TokenSequence(s.ids[a:b], s.segs[a:b], s.loss[a:b])


@torch.no_grad()
def _masked_full(model, cache: KVCache, seqs: list[TokenSequence], pad_id: int) -> torch.Tensor:
    """Uncompressed prefill of whole prompts with the X-Prompt mask (TD cannot see IE, IE stays cached)."""
    if cache.length:
        raise ValueError("uncompressed prefill starts from an empty cache")
    segs, _ = _left_pad([s.segs for s in seqs], PAD_SEG)
    inner = torch.stack([torch.as_tensor(build_attention_mask(sg.numpy())) for sg in segs])  # (B, T, T)
    return append_block(model, cache, [s.ids for s in seqs], pad_id, inner)


@torch.no_grad()
def decode(
    model,
    pre: Prefill,
    proc,
    sampling: SamplingConfig,
    steps: int,
    *,
    n_cond: int | None = None,
    fill_id: int,
    progress: Progress = False,
    on_step=None,
) -> torch.Tensor:
    """Sample up to ``steps`` tokens per row -> (B, n) ids. With CFG, rows ``n_cond:`` are the unconditional
    copies of rows ``:n_cond`` and receive the same tokens. ``on_step(step, cache)`` is called after each step,
    and a callable ``progress(done, steps)`` too (``progress=True``: a tqdm bar).

    Processors with ``allowed_ids``/``forced`` (see ``xprompt.sampling``) get logits only for the allowed ids
    (a sub-matrix of the LM head) and none at all on steps where every row is forced. The cache is sized for
    all ``steps`` up front (``KVCache.reserve``), so no step reallocates it.
    """
    cache = pre.cache
    b = n_cond if n_cond is not None else pre.logits.shape[0]
    dev = pre.logits.device
    gen = sampling.generator(dev)
    allowed = getattr(proc, "allowed_ids", None)
    allowed = None if allowed is None else allowed.to(dev)
    linear = isinstance(model.lm_head, torch.nn.Linear)
    head = model.lm_head.weight[allowed] if allowed is not None and linear else None  # (n, D)
    all_forced = getattr(proc, "all_forced", None)
    cache.reserve(steps)
    hidden = None
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    out = []
    it = range(steps)
    report = progress if callable(progress) else None
    if progress and report is None:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="generating", unit="tok", leave=True)  # stays: the person sees what ran
    for s in it:
        forced = proc.forced(s, b, dev).to(dev) if hasattr(proc, "forced") else None
        if forced is not None and (all_forced(s) if all_forced is not None else bool((forced >= 0).all())):
            tok = forced
        else:
            if hidden is None or head is None:  # first step (prefill logits) or a non-Linear head
                lg = pre.logits if hidden is None else model.lm_head(hidden)  # (B', V)
                lg = lg if allowed is None else lg[:, allowed]
            else:
                lg = hidden @ head.T  # (B', n) only the allowed rows of the LM head
            if n_cond is not None:
                lg = cfg_combine(lg[:b], lg[b:], sampling.cfg_scale)
            lg = lg[:b].float()
            if allowed is None:
                lg = proc(s, lg)
            tok = sample(lg, sampling, proc.is_image(s, b, dev), gen)
            if allowed is not None:
                tok = allowed[tok]
            if forced is not None:
                tok = torch.where(forced >= 0, forced, tok)
        tok = torch.where(done, torch.full_like(tok, fill_id), tok)
        out.append(tok)
        done |= proc.finished(s, tok)
        if on_step is not None:
            on_step(s, cache)
        if report is not None:
            report(s + 1, steps)
        if bool(done.all()) or s == steps - 1:
            break
        feed = tok if n_cond is None else torch.cat([tok, tok])
        hidden = model(feed[:, None], kv_cache=cache, return_hidden=True)[:, -1]  # (B', D)
    return torch.stack(out, dim=1) if out else torch.zeros(b, 0, dtype=torch.long, device=dev)


def image_head(vocab, h: int, w: int) -> np.ndarray:
    return np.array([vocab.boi_id, vocab.h_token(int(h)), vocab.w_token(int(w))], dtype=np.int64)


def _with_tail(seq: TokenSequence, tail: np.ndarray) -> TokenSequence:
    return TokenSequence.concat(
        [seq, TokenSequence(tail, np.full(len(tail), int(Seg.TD), np.int8), np.zeros(len(tail), bool))]
    )


def td_only(seq: TokenSequence) -> TokenSequence:
    """The TD part of a sample (used to continue a compiled context)."""
    keep = seq.segs == int(Seg.TD)
    return TokenSequence(seq.ids[keep], seq.segs[keep], seq.loss[keep])


@torch.no_grad()
def generate_images(
    model,
    vocab,
    prompts: list[TokenSequence],
    sizes: list[tuple[int, int]],
    sampling: SamplingConfig | None = None,
    *,
    compress: bool = True,
    context: KVCache | None = None,
    context_segs: torch.Tensor | None = None,
    progress: Progress = False,
    on_step=None,
    keep: list[tuple[np.ndarray, np.ndarray] | None] | None = None,
    uncond: list[TokenSequence] | None = None,
) -> list[np.ndarray]:
    """Generate one image per prompt; ``sizes[b] = (h, w)`` in codes. Returns codes (h, w) int64 per row.

    ``context`` is a batch-1 cache of a compiled task prompt; ``prompts`` are then TD-only continuations.
    ``keep[b] = (codes, token_mask)`` constrains row b (mask-guided editing): outside the bool (h, w)
    ``token_mask`` the answer is forced to ``codes`` (``xprompt.sampling.MaskedGrid``); ``None`` = free.
    ``uncond[b]``: the reference prompt of row b's guidance (a ``TokenSequence`` without the image head, like
    ``prompts``; default ``<bos>`` alone). Used only when ``sampling.cfg_scale != 1``.
    """
    sampling = sampling or SamplingConfig()
    if len(prompts) != len(sizes) or not prompts:
        raise XPromptError("generate_images needs one (h, w) size per prompt and at least one prompt")
    b = len(prompts)
    seqs = [_with_tail(p, image_head(vocab, h, w)) for p, (h, w) in zip(prompts, sizes, strict=True)]
    use_cfg = sampling.cfg_scale != 1.0
    cache = None if context is None else context.expand(2 * b if use_cfg else b)
    csegs = None if context_segs is None else context_segs.expand(cache.batch_size, -1)
    if uncond is not None and len(uncond) != b:
        raise XPromptError(f"uncond needs one reference prompt per prompt (got {len(uncond)} for {b})")
    if use_cfg:
        bos = TokenSequence(np.array([vocab.bos_id]), np.array([int(Seg.PREFIX)], np.int8), np.zeros(1, bool))
        unc = [
            _with_tail(bos if uncond is None else u, image_head(vocab, h, w))
            for u, (h, w) in zip(uncond or [None] * b, sizes, strict=True)
        ]
        if cache is not None:  # the unconditional rows must not see the compiled context
            hidden = torch.zeros_like(cache.key_mask)
            hidden[b:] = True
            cache.hide(hidden)
        seqs = seqs + unc
    pre = prefill(model, seqs, vocab.pad_id, compress=compress, cache=cache, cache_segs=csegs)
    hs, ws = [h for h, _ in sizes], [w for _, w in sizes]
    if keep is None:
        proc = ImageGrid(vocab, hs, ws, device=pre.logits.device)
    else:
        if len(keep) != b:
            raise XPromptError(
                f"keep needs one (codes, mask) pair or None per prompt (got {len(keep)} for {b})"
            )
        pairs = [(None, None) if k is None else k for k in keep]
        proc = MaskedGrid(
            vocab, hs, ws, [p[0] for p in pairs], [p[1] for p in pairs], device=pre.logits.device
        )
    toks = (
        decode(
            model,
            pre,
            proc,
            sampling,
            proc.steps,
            n_cond=b if use_cfg else None,
            fill_id=vocab.eos_id,
            progress=progress,
            on_step=on_step,
        )
        .cpu()
        .numpy()
    )
    out = []
    for row, (h, w) in zip(toks, sizes, strict=True):
        body = row[: h * (w + 1)].reshape(h, w + 1)
        out.append(vocab.ids_to_codes(body[:, :w]))
    return out


@torch.no_grad()
def generate_text(
    model,
    vocab,
    prompts: list[TokenSequence],
    sampling: SamplingConfig | None = None,
    *,
    max_new_tokens: int = 64,
    compress: bool = True,
    context: KVCache | None = None,
    progress: Progress = False,
) -> list[list[int]]:
    """Generate text after each prompt until ``<eot>``/``<eos>`` (not included) or ``max_new_tokens``."""
    sampling = sampling or SamplingConfig()
    if not prompts:
        raise XPromptError("generate_text needs at least one prompt")
    cache = None if context is None else context.expand(len(prompts))
    pre = prefill(model, prompts, vocab.pad_id, compress=compress, cache=cache)
    proc = TextOnly(vocab, device=pre.logits.device)
    toks = decode(model, pre, proc, sampling, max_new_tokens, fill_id=vocab.eos_id, progress=progress)
    out = []
    stops = {vocab.eot_id, vocab.eos_id}
    for row in toks.cpu().tolist():
        text = []
        for t in row:
            if t in stops:
                break
            text.append(t)
        out.append(text)
    return out


@torch.no_grad()
def score_text(model, vocab, prompt: TokenSequence, ids: list[int]) -> np.ndarray:
    """Log-probabilities (n+1,) of the answer ``ids`` and the ``<eot>`` that ends it after ``prompt``, under the
    model's own next-token distribution (one teacher-forced forward with the X-Prompt mask): how sure the model
    is of a text it generated."""
    answer = np.asarray(list(ids) + [vocab.eot_id], dtype=np.int64)
    seq = _with_tail(prompt, answer)
    dev = next(model.parameters()).device
    x = torch.as_tensor(seq.ids, dtype=torch.long, device=dev)[None]  # (1, T)
    mask = build_attention_mask(torch.as_tensor(seq.segs, device=dev))[None]  # (1, T, T)
    logits = model(x, attn_mask=mask)[0].float()  # (T, V)
    n = len(answer)
    logp = torch.log_softmax(logits[-n - 1 : -1], dim=-1)  # (n, V): the positions predicting the answer
    return logp.gather(1, x[0, -n:, None])[:, 0].cpu().numpy()  # (n,)

"""X-Prompt attention masks and position ids: pure functions (numpy in -> numpy out, torch in -> torch out).

Rule (docs/design.md "Mask rule"): token i may attend token j iff
    j <= i,  j is in the same packed document as i,  and not (seg[i] = TD and seg[j] = IE and the document
    contains XP tokens).
The last clause is ``compressed_away``, the only place the compression rule is written: the attention cut
here and the KV-cache entries generation and compiled prompts drop both come from it. Compression is
therefore a property of the *layout*: a document laid out in mode ``xp`` holds XP tokens and gets the TD->IE
cut; a ``full`` document (IE, no XP) stays plain causal; a ``none`` document has no IE. Packed batches can mix
modes with no extra metadata. PREFIX and XP stay visible to everything after them.

Position ids restart at 0 at each document start and run on continuously inside a document, so dropping the
IE entries from a KV cache later changes nothing. Documents must be contiguous runs of equal ``doc_ids``
(padding should get its own document id).

Per-document attention (``document_layout`` / ``DocAttention``): a packed row of T tokens holding documents of
lengths n_1..n_k costs T^2 in a dense masked attention but only sum(n_i^2) when each document attends on its
own. The layout gathers every document into one row of a (N, L) batch (L = longest document, shorter ones
padded), with its own (L, L) X-Prompt mask; linear layers still run on the packed rows, so nothing is spent
on padding there. The result equals the dense block-diagonal mask exactly; tokens outside every document
(doc id -1, row padding) get a zero attention output (they are never targets and never attended to).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xprompt.sequence import Seg


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def compressed_away(segs, doc_ids=None):
    """The X-Prompt compression rule, the one place it is written: the entries TD tokens may not see.

    (..., T) segment tags [+ (..., T) document ids; without them each row is one document] -> (..., T) bool,
    True for an IE token of a document that holds XP tokens. ``build_attention_mask`` cuts every TD -> such
    entry; generation and compiled prompts drop them from the KV cache after the context (``kept_entries``).
    numpy in -> numpy out, torch in -> torch out.
    """
    xp = segs == int(Seg.XP)
    if doc_ids is None:
        has_xp = (xp.sum(-1) > 0)[..., None]  # (..., 1) the row's document holds XP
    else:
        same = doc_ids[..., :, None] == doc_ids[..., None, :]  # (..., T, T)
        has_xp = (same & xp[..., None, :]).sum(-1) > 0  # (..., T) the token's document holds XP
    return (segs == int(Seg.IE)) & has_xp


def kept_entries(segs):
    """(T,) segment tags of a context -> indices of the cache entries kept after compression (numpy)."""
    segs = np.asarray(segs.cpu() if _is_torch(segs) else segs).astype(np.int64)
    return np.nonzero(~compressed_away(segs))[0]


def build_attention_mask(segs, doc_ids=None):
    """(T,) segment tags [+ (T,) document ids] -> (T, T) bool mask, True = row may attend column."""
    if _is_torch(segs):
        import torch

        segs = segs.long()
        t = segs.shape[0]
        doc = (
            torch.zeros(t, dtype=torch.long, device=segs.device)
            if doc_ids is None
            else torch.as_tensor(doc_ids, device=segs.device).long()
        )
        causal = torch.ones(t, t, dtype=torch.bool, device=segs.device).tril()
    else:
        segs = np.asarray(segs).astype(np.int64)
        if segs.ndim != 1:
            raise ValueError(f"segs must be 1-D, got shape {segs.shape}")
        t = len(segs)
        doc = np.zeros(t, np.int64) if doc_ids is None else np.asarray(doc_ids).astype(np.int64)
        if doc.shape != segs.shape:
            raise ValueError("segs and doc_ids must have one length")
        causal = np.tri(t, dtype=bool)
    same = doc[:, None] == doc[None, :]
    cut = (segs == int(Seg.TD))[:, None] & compressed_away(segs, doc)[None, :]  # (T, T) within a document
    return causal & same & ~cut


def position_ids(doc_ids):
    """(T,) document ids -> (T,) positions restarting at 0 at every change of document id."""
    if _is_torch(doc_ids):
        import torch

        doc = doc_ids.long()
        t = doc.shape[0]
        idx = torch.arange(t, device=doc.device)
        start = torch.ones(t, dtype=torch.bool, device=doc.device)
        start[1:] = doc[1:] != doc[:-1]
        run_start = torch.cummax(torch.where(start, idx, torch.zeros_like(idx)), 0).values
        return idx - run_start
    doc = np.asarray(doc_ids).astype(np.int64)
    t = len(doc)
    idx = np.arange(t)
    start = np.ones(t, bool)
    start[1:] = doc[1:] != doc[:-1]
    return idx - np.maximum.accumulate(np.where(start, idx, 0))


def build_attention_mask_batch(segs, doc_ids=None):
    """(B, T) segs [+ (B, T) doc ids] -> (B, T, T) bool masks."""
    if _is_torch(segs):
        import torch

        return torch.stack(
            [
                build_attention_mask(segs[i], None if doc_ids is None else doc_ids[i])
                for i in range(segs.shape[0])
            ]
        )
    segs = np.asarray(segs)
    return np.stack(
        [
            build_attention_mask(segs[i], None if doc_ids is None else np.asarray(doc_ids)[i])
            for i in range(segs.shape[0])
        ]
    )


def position_ids_batch(doc_ids):
    """(B, T) doc ids -> (B, T) positions."""
    if _is_torch(doc_ids):
        import torch

        return torch.stack([position_ids(d) for d in doc_ids])
    return np.stack([position_ids(d) for d in np.asarray(doc_ids)])


def document_layout(segs, doc_ids):
    """(B, T) segs and doc ids (-1 = no document) -> per-document attention layout, numpy.

    Returns ``index`` (N, L) int64: flat position b*T + t of slot j of document n (0 in unused slots);
    ``valid`` (N, L) bool: slot holds a token; ``mask`` (N, L, L) bool: that document's X-Prompt mask, with the
    diagonal set in unused slots so no softmax row is empty. Documents are ordered by row, then position.
    """
    segs = np.asarray(segs).astype(np.int64)
    doc = np.asarray(doc_ids).astype(np.int64)
    if segs.ndim != 2 or doc.shape != segs.shape:
        raise ValueError(f"segs and doc_ids must both be (B, T), got {segs.shape} and {doc.shape}")
    t = segs.shape[1]
    spans = []  # (flat start, length)
    for r in range(segs.shape[0]):
        start = np.flatnonzero(np.r_[True, doc[r, 1:] != doc[r, :-1]])
        ends = np.r_[start[1:], t]
        spans += [(r * t + a, e - a) for a, e in zip(start, ends, strict=True) if doc[r, a] >= 0]
    n_docs, width = len(spans), max((n for _, n in spans), default=1)
    index = np.zeros((n_docs, width), np.int64)
    valid = np.zeros((n_docs, width), bool)
    mask = np.broadcast_to(np.eye(width, dtype=bool), (n_docs, width, width)).copy()
    flat_segs = segs.reshape(-1)
    for i, (a, n) in enumerate(spans):
        index[i, :n] = np.arange(a, a + n)
        valid[i, :n] = True
        mask[i, :n, :n] = build_attention_mask(flat_segs[a : a + n])
    return index, valid, mask


@dataclass(frozen=True)
class DocAttention:
    """Torch form of ``document_layout``: what ``XPromptModel.forward`` accepts as ``attn_mask`` for packed
    rows. ``index`` (N, L) long, ``valid`` (N, L) bool, ``mask`` (N, L, L) bool, ``tokens`` = B * T."""

    index: object
    valid: object
    mask: object
    tokens: int

    @classmethod
    def from_layout(cls, segs, doc_ids) -> DocAttention:
        import torch

        index, valid, mask = document_layout(segs, doc_ids)
        return cls(
            torch.from_numpy(index), torch.from_numpy(valid), torch.from_numpy(mask), int(np.size(segs))
        )

    def to(self, device) -> DocAttention:
        return DocAttention(self.index.to(device), self.valid.to(device), self.mask.to(device), self.tokens)

    def dense(self, batch: int):
        """The equivalent (B, T, T) dense mask, for checking a layout against ``build_attention_mask``."""
        import torch

        t = self.tokens // batch
        out = torch.zeros(self.tokens, self.tokens, dtype=torch.bool, device=self.mask.device)
        for n in range(self.index.shape[0]):
            pos = self.index[n][self.valid[n]]
            k = len(pos)
            out[pos[:, None], pos[None, :]] = self.mask[n, :k, :k]
        return torch.stack([out[b * t : (b + 1) * t, b * t : (b + 1) * t] for b in range(batch)])

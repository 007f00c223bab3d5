"""The in-context probe: does the model read the example? Answer-token loss with the right example, a wrong
one and none, measured on the tokens that actually change.

Design choices
* Three variants of every validation sample, all teacher-forced on the same answer: ``right`` (the sample as
  built, in the training mode), ``wrong`` (the same prefix, query and answer, but the in-context example of
  another sample whose task differs: the example no longer tells what to do), and ``none`` (no example).
  Only ``wrong - right`` is evidence of reading the example (DESIGN.md: a model can gain from "an example is
  present" alone, e.g. by copying the query).
* At tiny scale most answer tokens of an image task equal the query's token at the same grid position; the
  loss there measures copying, not the task. ``changed`` restricts to answer image tokens whose code differs
  from the query's code at that position (only for samples whose query and answer grids have one shape).
* Pure helpers (``swap_example``, ``changed_targets``) work on ``TokenSequence`` and are unit-tested exactly;
  ``probe`` runs the model without gradients on the CPU or GPU it lives on.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from xprompt.sequence import Seg, TokenSequence, convert_mode

VARIANTS = ("right", "wrong", "none")


def swap_example(seq: TokenSequence, donor: TokenSequence) -> TokenSequence:
    """``seq`` with its IE segment replaced by ``donor``'s (PREFIX, XP and TD of ``seq`` kept)."""

    def part(s: TokenSequence, keep) -> TokenSequence:
        m = keep(s.segs)
        return TokenSequence(s.ids[m], s.segs[m], s.loss[m])

    if not (seq.segs == Seg.IE).any() or not (donor.segs == Seg.IE).any():
        raise ValueError("both sequences need an in-context example (IE segment)")
    pre = part(seq, lambda g: g == Seg.PREFIX)
    ie = part(donor, lambda g: g == Seg.IE)
    ie = TokenSequence(ie.ids, ie.segs, np.zeros_like(ie.loss))  # the donor's example is never a target
    rest = part(seq, lambda g: (g == Seg.XP) | (g == Seg.TD))
    return TokenSequence.concat([pre, ie, rest])


def _image_spans(ids: np.ndarray, vocab) -> list[tuple[int, int]]:
    """[start, end) of every image's code tokens plus row ends (after ``<boi> <h> <w>``, before ``<eoi>``)."""
    boi, eoi = vocab.boi_id, vocab.special("<eoi>")
    starts = np.flatnonzero(ids == boi)
    ends = np.flatnonzero(ids == eoi)
    return [(int(s) + 3, int(e)) for s, e in zip(starts, ends[np.searchsorted(ends, starts)], strict=True)]


def changed_targets(seq: TokenSequence, vocab) -> np.ndarray:
    """(T,) bool: answer image-code targets whose code differs from the query's at the same position.

    The query is the TD segment's first image and the answer its last (the loss-flagged one); samples whose
    two grids differ in length (or that have no image answer) give an all-False mask."""
    out = np.zeros(len(seq), bool)
    td = np.flatnonzero(seq.segs == Seg.TD)
    if len(td) == 0:
        return out
    spans = [(s + td[0], e + td[0]) for s, e in _image_spans(seq.ids[td[0] :], vocab)]
    if len(spans) < 2:
        return out
    (qs, qe), (as_, ae) = spans[0], spans[-1]
    if qe - qs != ae - as_ or not seq.loss[as_:ae].any():
        return out
    q, a = seq.ids[qs:qe], seq.ids[as_:ae]
    img = np.asarray(vocab.is_image(a), bool)
    out[as_:ae] = img & (q != a) & seq.loss[as_:ae]
    return out


def donors(tasks: list[str], seed: int = 0) -> np.ndarray:
    """For each sample, the index of another sample of a different task (deterministic from ``seed``)."""
    n = len(tasks)
    order = np.random.default_rng(seed).permutation(n)
    where = np.argsort(order)  # position of sample i in ``order``
    out = np.arange(n)
    for i in range(n):
        for k in range(1, n):
            j = int(order[(where[i] + k) % n])
            if tasks[j] != tasks[i]:
                out[i] = j
                break
    return out


@dataclass
class ProbeResult:
    """Mean next-token loss (nats) and top-1 accuracy per variant, on all answer image tokens and on changed ones."""

    n_samples: int
    metrics: dict  # {variant: {"loss", "acc", "changed_loss", "changed_acc", "n", "n_changed"}}
    by_family: dict  # {family: {variant: {"changed_loss", "changed_acc", "loss"}}}

    def summary(self) -> dict:
        m = self.metrics
        out = {f"{v}_{k}": m[v][k] for v in VARIANTS for k in ("loss", "changed_loss", "changed_acc")}
        out["reads_example"] = m["wrong"]["changed_loss"] - m["right"]["changed_loss"]
        return out


def _variants(seqs, tasks, mode: str, seed: int):
    d = donors(tasks, seed)
    right = [convert_mode(s, mode) for s in seqs]
    wrong = [convert_mode(swap_example(s, seqs[int(j)]), mode) for s, j in zip(seqs, d, strict=True)]
    none = [convert_mode(s, "none") for s in seqs]
    return {"right": right, "wrong": wrong, "none": none}


def probe(
    model,
    seqs: list[TokenSequence],
    tasks: list[str],
    families: list[str],
    vocab,
    *,
    mode: str = "xp",
    batch: int = 8,
    seed: int = 0,
) -> ProbeResult:
    """Run the three variants of every sample (``xp``-layout ``seqs`` with an example) through ``model``."""
    import torch

    from xprompt.train.packing import collate

    keep = [i for i, s in enumerate(seqs) if (s.segs == Seg.IE).any()]
    seqs = [seqs[i] for i in keep]
    tasks, families = [tasks[i] for i in keep], [families[i] for i in keep]
    variants = _variants(seqs, tasks, mode, seed)
    dev = next(model.parameters()).device
    acc = {v: defaultdict(lambda: np.zeros(4)) for v in VARIANTS}  # family -> [loss, hit, closs, chit] sums
    counts = defaultdict(lambda: np.zeros(2))  # family -> [n image targets, n changed]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for v, vs in variants.items():
            for lo in range(0, len(vs), batch):
                chunk = vs[lo : lo + batch]
                b = collate([[s] for s in chunk], vocab).to(dev)
                logits = model(b.input_ids, b.position_ids, b.attn_mask).float()  # (B, T, V)
                ce = (
                    torch.nn.functional.cross_entropy(
                        logits[:, :-1].transpose(1, 2), b.input_ids[:, 1:], reduction="none"
                    )
                    .cpu()
                    .numpy()
                )  # (B, T-1)
                hit = (logits[:, :-1].argmax(-1) == b.input_ids[:, 1:]).cpu().numpy()
                for r, s in enumerate(chunk):
                    fam = families[lo + r]
                    tgt = (s.loss & np.asarray(vocab.is_image(s.ids), bool))[1:]
                    ch = changed_targets(s, vocab)[1:]
                    n = len(s) - 1
                    a = acc[v][fam]
                    a += [
                        ce[r, :n][tgt].sum(),
                        hit[r, :n][tgt].sum(),
                        ce[r, :n][ch].sum(),
                        hit[r, :n][ch].sum(),
                    ]
                    if v == "right":
                        counts[fam] += [tgt.sum(), ch.sum()]
    model.train(was_training)
    return _reduce(acc, counts, len(seqs))


def _reduce(acc, counts, n_samples: int) -> ProbeResult:
    def stats(sums, cnt) -> dict:
        n, nc = max(cnt[0], 1), max(cnt[1], 1)
        return {
            "loss": float(sums[0] / n),
            "acc": float(sums[1] / n),
            "changed_loss": float(sums[2] / nc),
            "changed_acc": float(sums[3] / nc),
            "n": int(cnt[0]),
            "n_changed": int(cnt[1]),
        }

    total = {v: stats(sum(acc[v].values(), np.zeros(4)), sum(counts.values(), np.zeros(2))) for v in VARIANTS}
    fams = {f: {v: stats(acc[v][f], counts[f]) for v in VARIANTS} for f in sorted(counts)}
    return ProbeResult(n_samples, total, fams)


def probe_data(
    model, data, vocab, *, n: int = 256, mode: str = "xp", batch: int = 8, seed: int = 0
) -> ProbeResult:
    """``probe`` on the first ``n`` samples of a built dataset (``ds`` with ``task``/``family`` columns or a
    data directory written by ``xprompt data build``)."""
    from xprompt.errors import XPromptError

    if not hasattr(data, "select"):
        from xprompt.train.packing import open_dataset

        data, _, data_vocab, _, _ = open_dataset(data)
        if data_vocab.fingerprint() != vocab.fingerprint():
            raise XPromptError("the probe data was built with another vocabulary than the model's")
    missing = [c for c in ("input_ids", "segs", "loss", "task", "family") if c not in data.column_names]
    if missing:
        raise XPromptError(f"the probe data lacks column(s) {', '.join(missing)}")
    rows = data.select(range(min(n, len(data)))).select_columns(
        ["input_ids", "segs", "loss", "task", "family"]
    )
    seqs = [TokenSequence(np.asarray(a), np.asarray(b), np.asarray(c))
            for a, b, c in zip(rows["input_ids"], rows["segs"], rows["loss"], strict=True)]  # fmt: skip
    return probe(
        model, seqs, list(rows["task"]), list(rows["family"]), vocab, mode=mode, batch=batch, seed=seed
    )

"""RAIE training pairs: the nearest neighbour of every edit sample by instruction (X-Prompt Sec. 4.3).

``nearest_neighbours(instructions)`` returns, for every item i, the index j != i of the item whose instruction
embedding is most similar (cosine), excluding i itself and every exact duplicate of i's instruction — the
paper pairs each sample "with the most similar instruction ... excluding the sample itself", and a duplicate
instruction is the same sample for this purpose (its neighbour would teach nothing about reading an example).

Design choices
* Instructions are compared after whitespace normalisation (``" ".join(s.split())``); the distinct strings
  are embedded once and searched once, so a suite with many templated repeats costs only its distinct
  instructions. A kNN over the distinct set (k = a few, to step over the query itself and over distinct
  strings that embed identically, e.g. differing only in case) runs in batches through faiss: exact
  ``IndexFlatIP`` up to ``exact_limit`` distinct strings, IVF beyond (nprobe tuned for recall, not speed).
* When the neighbouring instruction is shared by several items, one of them is chosen with a seeded RNG,
  so the example images are spread over the group and the result is reproducible.
* An item whose instruction is the only distinct one in the set gets -1 (no neighbour exists).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from xprompt.errors import XPromptError


def _knn(vectors: np.ndarray, k: int, batch: int, exact_limit: int, progress: bool):
    """kNN of every row of ``vectors`` (U, D) among all rows -> (scores (U, k), ids (U, k))."""
    import faiss
    from tqdm.auto import tqdm

    u, d = vectors.shape
    if u <= exact_limit:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = int(4 * np.sqrt(u))
        index = faiss.index_factory(d, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        index.train(vectors[rng.choice(u, min(u, 64 * nlist), replace=False)])
        faiss.extract_index_ivf(index).nprobe = max(16, nlist // 32)
    index.add(vectors)
    scores = np.empty((u, k), np.float32)  # (U, k)
    ids = np.empty((u, k), np.int64)  # (U, k)
    for s in tqdm(range(0, u, batch), disable=not progress, desc="kNN", unit="batch"):
        scores[s : s + batch], ids[s : s + batch] = index.search(vectors[s : s + batch], k)
    return scores, ids


def nearest_neighbours(
    instructions: Sequence[str],
    encoder=None,
    batch: int = 4096,
    *,
    seed: int = 0,
    k: int = 4,
    exact_limit: int = 200_000,
    return_scores: bool = False,
    progress: bool | None = None,
):
    """Nearest neighbour by instruction of every item -> int64 (N,) item indices (-1: none exists).

    ``encoder``: an encoder object or spec (default: the MiniLM encoder). With ``return_scores`` also
    returns float32 (N,) cosine similarities (nan where there is no neighbour).
    """
    from xprompt.retrieval.encoders import check_instructions, get_encoder

    if isinstance(instructions, str):
        raise XPromptError("nearest_neighbours takes a list of instructions, not a single string")
    if batch < 1:
        raise XPromptError(f"batch must be >= 1, got {batch}")
    norm = check_instructions(instructions)
    n = len(norm)
    out = np.full(n, -1, dtype=np.int64)
    sc = np.full(n, np.nan, dtype=np.float32)
    if n == 0:
        return (out, sc) if return_scores else out
    uniq, inverse = np.unique(np.asarray(norm, dtype=object), return_inverse=True)  # U distinct strings
    inverse = inverse.reshape(-1)
    u = len(uniq)
    # members[g] = item indices whose instruction is distinct string g (grouped via a stable sort)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(u + 1))
    if u == 1:
        return (out, sc) if return_scores else out
    enc = encoder if encoder is not None and not isinstance(encoder, str) else get_encoder(encoder)
    show = progress if progress is not None else u >= 20_000
    vecs = enc.encode(list(uniq), progress=show)  # (U, D)
    kk = min(u, max(2, k))
    scores, ids = _knn(vecs, kk, batch, exact_limit, show)
    best = np.full(u, -1, dtype=np.int64)
    best_s = np.full(u, np.nan, dtype=np.float32)
    for g in range(u):
        for s, j in zip(scores[g], ids[g], strict=True):
            if j >= 0 and j != g:
                best[g], best_s[g] = j, s
                break
    # Rare: all k hits were the query itself or -1 (approximate search) -> exact scan for those rows.
    missing = np.flatnonzero(best < 0)
    for g in missing:
        sims = vecs @ vecs[g]  # (U,)
        sims[g] = -np.inf
        best[g] = int(np.argmax(sims))
        best_s[g] = sims[best[g]]
    rng = np.random.default_rng(seed)
    for g in range(u):
        items = order[bounds[g] : bounds[g + 1]]
        nb = best[g]
        cand = order[bounds[nb] : bounds[nb + 1]]
        out[items] = cand[rng.integers(0, len(cand), size=len(items))]
        sc[items] = best_s[g]
    return (out, sc) if return_scores else out

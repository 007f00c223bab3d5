"""The FAISS index of a store: ``StoreConfig`` (factory string, search parameters) and building, training,
tuning an index.

Design choices
* Split from ``store.py``: everything faiss-specific about making an index lives here (the store only adds and
  searches). Every index uses ``METRIC_INNER_PRODUCT`` over L2-normalised vectors, so scores are cosines;
  IDMap is refused because store ids are table row numbers.
* Untrained indexes (IVF, PQ) are trained on a seeded random sample of at most ``max_train`` vectors, so a
  large store trains in bounded time and reproducibly. faiss' multi-line C++ errors become one line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xprompt.config_io import config_from_dict
from xprompt.errors import XPromptError


@dataclass
class StoreConfig:
    """How the FAISS index is built and searched (saved as the store's config.json)."""

    factory: str = "Flat"  # faiss index_factory string; metric is always inner product (cosine)
    nprobe: int = 32  # IVF: inverted lists visited per query
    ef_search: int = 64  # HNSW: search beam width
    max_train: int = 100_000  # IVF/PQ training uses at most this many vectors (a seeded random sample)
    seed: int = 0
    image_vectors: bool = False  # also embed the source images (encoder needs encode_images: openclip)

    def __post_init__(self):
        if not self.factory.strip():
            raise ValueError("factory must be a faiss index_factory string such as 'Flat' or 'IVF1024,PQ64'")
        if self.nprobe < 1 or self.ef_search < 1 or self.max_train < 1:
            raise ValueError("nprobe, ef_search and max_train must be >= 1")


def faiss_msg(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    err = [ln for ln in lines if ln.lower().startswith("error")]
    return (err or lines or [type(e).__name__])[0][:200]


def make_index(dim: int, cfg: StoreConfig):
    import faiss

    if "idmap" in cfg.factory.lower():
        raise XPromptError(
            f"factory {cfg.factory!r}: IDMap is not supported (store ids are table row numbers)"
        )
    try:
        return faiss.index_factory(dim, cfg.factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise XPromptError(
            f"bad faiss factory string {cfg.factory!r} for dim {dim}: {faiss_msg(e)}"
        ) from None


def apply_search_params(index, cfg: StoreConfig) -> None:
    """Set nprobe (IVF) / efSearch (HNSW) wherever they apply in a (possibly wrapped) index."""
    import faiss

    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = cfg.nprobe
    base = faiss.downcast_index(index)
    for cand in (base, getattr(base, "index", None)):
        if cand is not None and hasattr(cand, "hnsw"):
            faiss.downcast_index(cand).hnsw.efSearch = cfg.ef_search


def train_index(index, vectors: np.ndarray, cfg: StoreConfig) -> None:
    """Train ``index`` (if it needs training) on at most ``cfg.max_train`` of ``vectors`` (N, D)."""
    if index.is_trained:
        return
    if len(vectors) > cfg.max_train:
        rng = np.random.default_rng(cfg.seed)
        vectors = vectors[np.sort(rng.choice(len(vectors), cfg.max_train, replace=False))]
    try:
        index.train(np.ascontiguousarray(vectors, dtype=np.float32))
    except RuntimeError as e:
        raise XPromptError(
            f"cannot train faiss index {index.__class__.__name__} on {len(vectors)} vectors: {faiss_msg(e)} "
            "(use --factory Flat for small stores, or fewer IVF lists / PQ bits)"
        ) from None


def store_config_from_args(factory: str | None = None, **overrides) -> StoreConfig:
    data = {k: v for k, v in overrides.items() if v is not None}
    if factory:
        data["factory"] = factory
    return config_from_dict(StoreConfig, data)

"""The RAIE instruction store: a FAISS index over instruction embeddings + an Arrow metadata table.

Layout of a store directory::

    STORE/manifest.json   format, encoder (name/dim/version/spec), factory, count, index size + SHA-256,
                          created-by xprompt/faiss versions, per-task counts
    STORE/config.json     StoreConfig (factory string and search parameters)
    STORE/index.faiss     faiss.write_index; row i of the index is row i of the table
    STORE/meta/           datasets.save_to_disk: instruction, task, source (Image), target (Image), description
                          [, mask (Image: white = edited region), turn_index (int), img_id (str): real edit
                          sets such as MagicBrush keep them, ``xprompt.retrieval.sources.reader_table``]

Design choices
* Vectors are L2-normalised by the encoder and every index uses ``METRIC_INNER_PRODUCT``, so scores are
  cosine similarities (the paper's ``dist``). The index kind is a faiss ``index_factory`` string in the
  config: ``Flat`` (exact, the default for small stores), ``IVF{nlist},Flat`` / ``IVF{nlist},PQ{m}`` /
  ``HNSW32`` for large ones; untrained indexes are trained on (a sample of) the first vectors added.
* Images are kept as encoded bytes in ``datasets.Image`` columns (PNG for arrays we encode, the original
  bytes for MagicBrush-style sources), read back undecoded; ``Record.source_image()`` decodes on demand.
  Loaded tables are memory-mapped Arrow, so a large store does not sit in RAM.
* Saving is atomic (``atomic_dir``: build in a temp dir, swap at the end) — an interrupted build leaves the
  previous store intact. Loading trusts nothing: the manifest is checked against the encoder used for
  queries (name, dim, weights fingerprint), the index file against its recorded size and SHA-256 and
  ``ntotal``, every file (index, table, config, image vectors) against its size and SHA-256 in the
  manifest (``xprompt.integrity``), and the table's row count against the index. Every failure is a one-line ``XPromptError``.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xprompt.config_io import config_from_dict, config_to_dict, load_config
from xprompt.errors import XPromptError
from xprompt.images import png_bytes
from xprompt.integrity import record_tree
from xprompt.integrity import verify as verify_files
from xprompt.io_utils import atomic_dir

FORMAT = "xprompt-raie-store"
FORMAT_VERSION = 1
MANIFEST, CONFIG, INDEX, META = "manifest.json", "config.json", "index.faiss", "meta"
IMAGE_VECTORS = "image_vectors.npy"
COLUMNS = ("instruction", "task", "source", "target", "description")
EXTRA_COLUMNS = (
    "mask",
    "turn_index",
    "img_id",
)  # optional; a store has all three or none (null where unknown)


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


@dataclass
class Record:
    """One stored edit example. ``source`` / ``target`` are encoded image bytes (PNG, JPEG...)."""

    id: int
    instruction: str
    task: str
    source: bytes
    target: bytes
    description: str | None = None
    mask: bytes | None = None  # encoded mask image (white = edited region), when the source set had one
    turn_index: int | None = None  # MagicBrush: 1 = the real image, >= 2 = an edit of the previous turn
    img_id: str | None = None

    def mask_array(self) -> np.ndarray | None:
        """bool (H, W): the edited region of the stored pair (white in the mask image), or None."""
        return None if self.mask is None else decode_image(self.mask).astype(np.float32).mean(-1) > 127.0

    def source_image(self) -> np.ndarray:
        return decode_image(self.source)

    def target_image(self) -> np.ndarray:
        return decode_image(self.target)

    def pair(self) -> tuple[np.ndarray, np.ndarray]:
        """(source, target) as uint8 (H, W, 3) arrays: the in-context example for RAIE."""
        return self.source_image(), self.target_image()


# ---------------------------------------------------------------------------------------------- images
def encode_image(img: Any) -> bytes:
    """uint8 (H, W, 3|4|1) array, PIL image, encoded bytes or a datasets Image dict -> encoded image bytes."""
    from PIL import Image

    if isinstance(img, (bytes, bytearray)):
        return bytes(img)
    if isinstance(img, dict) and ("bytes" in img or "path" in img):
        if img.get("bytes"):
            return bytes(img["bytes"])
        if img.get("path"):
            return Path(img["path"]).read_bytes()
        raise XPromptError("image entry has neither bytes nor path")
    if isinstance(img, Image.Image):
        pil = img
    else:
        arr = np.asarray(img)
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
            raise XPromptError(f"expected a uint8 (H, W, 3) image array, got {arr.dtype} {arr.shape}")
        pil = Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)
    return png_bytes(pil)


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> uint8 (H, W, 3), bounded in pixels before decoding (``load_image``)."""
    from xprompt.errors import ImageInputError
    from xprompt.tokenizer.image_io import load_image

    try:
        return load_image(data, name="stored image")
    except ImageInputError as e:
        raise XPromptError(f"{e}; the store is corrupted") from None


def _features(extra: bool = False):
    from datasets import Features, Image, Value

    f = {
        "instruction": Value("string"),
        "task": Value("string"),
        "source": Image(),
        "target": Image(),
        "description": Value("string"),
    }
    if extra:
        f.update({"mask": Image(), "turn_index": Value("int32"), "img_id": Value("string")})
    return Features(f)


def _with_extra(table):
    """``table`` with every ``EXTRA_COLUMNS`` column (null where it has none), in store order and types."""
    with quiet_datasets():
        for c in EXTRA_COLUMNS:
            if c not in table.column_names:
                table = table.add_column(c, [None] * len(table))
        table = table.select_columns([*COLUMNS, *EXTRA_COLUMNS])
        return table if table.features == _features(True) else table.cast(_features(True))


@contextlib.contextmanager
def quiet_datasets():
    """Silence datasets' per-operation progress bars (casting/saving a few rows is not news)."""
    import datasets
    from datasets.utils import logging as ds_logging

    was = datasets.are_progress_bars_disabled()
    level = ds_logging.get_verbosity()
    datasets.disable_progress_bars()
    ds_logging.set_verbosity_error()
    try:
        yield
    finally:
        ds_logging.set_verbosity(level)
        if not was:
            datasets.enable_progress_bars()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _faiss_msg(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    err = [ln for ln in lines if ln.lower().startswith("error")]
    return (err or lines or [type(e).__name__])[0][:200]


# ---------------------------------------------------------------------------------------------- index
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
            f"bad faiss factory string {cfg.factory!r} for dim {dim}: {_faiss_msg(e)}"
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
            f"cannot train faiss index {index.__class__.__name__} on {len(vectors)} vectors: {_faiss_msg(e)} "
            "(use --factory Flat for small stores, or fewer IVF lists / PQ bits)"
        ) from None


# ---------------------------------------------------------------------------------------------- store
class InstructionStore:
    """FAISS instruction index + metadata table. Build with ``build``/``add``, query with ``search``."""

    def __init__(self, encoder=None, config: StoreConfig | None = None):
        from xprompt.retrieval.encoders import get_encoder

        self.encoder = (
            encoder if encoder is not None and not isinstance(encoder, str) else get_encoder(encoder)
        )
        self.config = config or StoreConfig()
        self.index = make_index(self.encoder.dim, self.config)
        apply_search_params(self.index, self.config)
        if self.config.image_vectors and not hasattr(self.encoder, "encode_images"):
            raise XPromptError(
                f"image embeddings need an encoder that embeds images (openclip:ARCH:WEIGHTS); "
                f"{self.encoder.name} is text-only"
            )
        self._parts: list = []  # datasets.Dataset pieces, concatenated lazily
        self._meta = None
        self._image_parts: list[np.ndarray] = []  # (n_i, D) source-image embeddings, when configured
        self.path: Path | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        instructions,
        sources,
        targets,
        tasks=None,
        descriptions=None,
        *,
        encoder=None,
        config: StoreConfig | None = None,
        vectors: np.ndarray | None = None,
    ) -> InstructionStore:
        store = cls(encoder, config)
        store.add(instructions, sources, targets, tasks, descriptions, vectors=vectors)
        return store

    def add(
        self,
        instructions: Sequence[str],
        sources,
        targets,
        tasks=None,
        descriptions=None,
        *,
        vectors: np.ndarray | None = None,
    ) -> None:
        """Append edit examples. Images: uint8 arrays, PIL images or encoded bytes. ``vectors`` (N, D) may
        be given when already embedded with this store's encoder."""
        from datasets import Dataset

        from xprompt.retrieval.encoders import check_instructions

        n = len(instructions)
        instructions = check_instructions(instructions)
        tasks = list(tasks) if tasks is not None else [""] * n
        descriptions = list(descriptions) if descriptions is not None else [None] * n
        if not (len(sources) == len(targets) == len(tasks) == len(descriptions) == n):
            raise XPromptError(
                f"store.add: lengths differ (instructions {n}, sources {len(sources)}, targets {len(targets)}, "
                f"tasks {len(tasks)}, descriptions {len(descriptions)})"
            )
        if n == 0:
            return
        table = Dataset.from_dict(
            {
                "instruction": instructions,
                "task": [str(t) for t in tasks],
                "source": [{"bytes": encode_image(s), "path": None} for s in sources],
                "target": [{"bytes": encode_image(t), "path": None} for t in targets],
                "description": descriptions,
            },
            features=_features(),
        )
        self.add_table(table, vectors=vectors)

    def add_table(
        self, table, *, vectors: np.ndarray | None = None, batch: int = 4096, progress: bool | None = None
    ) -> None:
        """Append a ``datasets.Dataset`` with the store's columns (images as ``Image`` features); only the
        instruction column is read into memory, the images stay in the table's Arrow files. ``progress``: the
        encoder's bar (None: shown for large tables only; False: never)."""
        missing = [c for c in COLUMNS if c not in table.column_names]
        if missing:
            raise XPromptError(f"metadata table lacks column(s) {missing}; needs {list(COLUMNS)}")
        if self.has_extra or any(c in table.column_names for c in EXTRA_COLUMNS):
            if not self.has_extra:  # the first table with masks/turns: earlier parts get null columns
                self._parts, self._meta = [_with_extra(p) for p in self._parts], None
            table = _with_extra(table)
        else:
            table = table.select_columns(list(COLUMNS))
            if table.features != _features():
                with quiet_datasets():
                    table = table.cast(_features())
        if vectors is None:
            vectors = self.encoder.encode(
                table["instruction"], **({} if progress is None else {"progress": progress})
            )
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # (N, D)
        if vectors.shape != (len(table), self.encoder.dim):
            raise XPromptError(
                f"vectors have shape {vectors.shape}, expected ({len(table)}, {self.encoder.dim})"
            )
        if not self.index.is_trained:
            train_index(self.index, vectors, self.config)
        try:
            for s in range(0, len(vectors), batch * 64):
                self.index.add(vectors[s : s + batch * 64])
        except RuntimeError as e:
            raise XPromptError(
                f"faiss cannot add to a {self.config.factory!r} index: {_faiss_msg(e)}"
            ) from None
        if self.config.image_vectors:
            self._image_parts.append(self._embed_sources(table))
        self._parts.append(table)
        self._meta = None

    @property
    def has_extra(self) -> bool:
        """Whether the metadata keeps masks, turn indices and image ids (``EXTRA_COLUMNS``)."""
        return any(EXTRA_COLUMNS[0] in p.column_names for p in self._parts)

    def _embed_sources(self, table, batch: int = 64) -> np.ndarray:
        """Source-image embeddings of ``table`` -> float32 (N, D), decoded and embedded ``batch`` at a time."""
        from datasets import Image

        src = table.select_columns(["source"]).cast_column("source", Image(decode=False))
        out = np.empty((len(src), self.encoder.dim), np.float32)  # (N, D)
        for s in range(0, len(src), batch):
            imgs = [decode_image(encode_image(r)) for r in src[s : s + batch]["source"]]
            out[s : s + len(imgs)] = self.encoder.encode_images(imgs)
        return out

    @property
    def image_vectors(self) -> np.ndarray | None:
        """(N, D) unit embeddings of the stored source images, or None when the store has none."""
        if not self.config.image_vectors:
            return None
        if len(self._image_parts) != 1:
            parts = self._image_parts or [np.empty((0, self.encoder.dim), np.float32)]
            self._image_parts = [np.concatenate(parts)]
        return self._image_parts[0]

    @property
    def meta(self):
        """The metadata table (a ``datasets.Dataset``), row i <-> index id i."""
        if self._meta is None:
            from datasets import Dataset, concatenate_datasets

            if not self._parts:
                self._meta = Dataset.from_dict({c: [] for c in COLUMNS}, features=_features())
            else:
                self._meta = self._parts[0] if len(self._parts) == 1 else concatenate_datasets(self._parts)
                self._parts = [self._meta]
        return self._meta

    def __len__(self) -> int:
        return int(self.index.ntotal)

    # ------------------------------------------------------------------ querying
    def record(self, i: int) -> Record:
        return self.records([i])[0]

    def records(self, ids: Sequence[int]) -> list[Record]:
        from datasets import Image

        rows = (
            self.meta.select([int(i) for i in ids])
            .cast_column("source", Image(decode=False))
            .cast_column("target", Image(decode=False))
        )
        extra = self.has_extra
        if extra:
            rows = rows.cast_column("mask", Image(decode=False))
        out = []
        for i, row in zip(ids, rows, strict=True):
            ex = {}
            if extra:
                ex = {"mask": encode_image(row["mask"]) if row["mask"] else None,
                      "turn_index": row["turn_index"], "img_id": row["img_id"]}  # fmt: skip
            out.append(
                Record(
                    id=int(i),
                    instruction=row["instruction"],
                    task=row["task"],
                    source=encode_image(row["source"]),
                    target=encode_image(row["target"]),
                    description=row["description"],
                    **ex,
                )
            )
        return out

    def search_vectors(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw kNN: float32 (Q, D) -> (scores (Q, k), ids (Q, k)); id -1 where fewer than k exist."""
        if len(self) == 0:
            raise XPromptError("the store is empty; build it with `xprompt index build` first")
        if k < 1:
            raise XPromptError(f"k must be >= 1, got {k}")
        q = np.ascontiguousarray(queries, dtype=np.float32)  # (Q, D)
        return self.index.search(q, int(k))

    def search(
        self,
        instructions: Sequence[str],
        k: int = 5,
        *,
        images=None,
        image_weight: float = 0.5,
        candidates: int = 64,
    ) -> list[list[tuple[float, Record]]]:
        """For every query instruction, the up-to-k most similar stored examples, best first, as
        (cosine score, Record).

        Multimodal ``dist`` (X-Prompt: "dist can be extended beyond text similarity"): with ``images`` (one
        query image per instruction) and a store built with image vectors, the ``candidates`` best by text are
        re-ranked by ``(1 - image_weight) * text_cos + image_weight * cos(query image, stored source)``.
        """
        if isinstance(instructions, str):
            instructions = [instructions]
        q = self.encoder.encode(instructions)  # (Q, D); raises on empty / whitespace instructions
        if images is not None:
            scores, ids = self._rerank_by_image(q, images, k, image_weight, candidates)
        else:
            scores, ids = self.search_vectors(q, min(int(k), len(self)) if k >= 1 else k)
        flat = sorted({int(i) for i in ids.ravel() if i >= 0})
        recs = dict(zip(flat, self.records(flat), strict=True))
        return [
            [(float(s), recs[int(i)]) for s, i in zip(srow, irow, strict=True) if i >= 0]
            for srow, irow in zip(scores, ids, strict=True)
        ]

    def _rerank_by_image(self, q: np.ndarray, images, k: int, w: float, candidates: int):
        if self.image_vectors is None:
            raise XPromptError(
                "this store has no image embeddings; build it with --image-embeddings and an "
                "openclip encoder to retrieve by image too"
            )
        if len(images) != len(q):
            raise XPromptError(f"got {len(images)} query images for {len(q)} instructions")
        if not 0.0 <= w <= 1.0:
            raise XPromptError(f"image_weight must be in [0, 1], got {w}")
        if k < 1:
            raise XPromptError(f"k must be >= 1, got {k}")
        qi = self.encoder.encode_images(list(images))  # (Q, D)
        ts, ids = self.search_vectors(q, min(len(self), max(int(k), candidates)))  # (Q, C) text candidates
        iv = self.image_vectors
        out_s = np.full((len(q), k), -np.inf, np.float32)
        out_i = np.full((len(q), k), -1, np.int64)
        for r in range(len(q)):
            ok = ids[r] >= 0
            cand, comb = ids[r][ok], (1 - w) * ts[r][ok] + w * (iv[ids[r][ok]] @ qi[r])  # (C,)
            order = np.argsort(-comb, kind="stable")[:k]
            out_s[r, : len(order)], out_i[r, : len(order)] = comb[order], cand[order]
        return out_s, out_i

    # ------------------------------------------------------------------ files
    def manifest(self) -> dict:
        import faiss

        from xprompt import __version__

        tasks: dict[str, int] = {}
        if len(self):
            for t in self.meta["task"]:
                tasks[t] = tasks.get(t, 0) + 1
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "encoder": self.encoder.describe(),
            "factory": self.config.factory,
            "metric": "inner_product",
            "count": len(self),
            "created_by": f"xprompt {__version__}",
            "faiss_version": faiss.__version__,
            "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "tasks": dict(sorted(tasks.items())),
            "image_vectors": self.config.image_vectors,
            "extra_columns": list(EXTRA_COLUMNS) if self.has_extra else [],
        }

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the store atomically; an existing store is replaced only with ``overwrite``."""
        import faiss

        path = Path(path)
        meta = self.meta
        if len(meta) != len(self):
            raise RuntimeError(f"internal: table has {len(meta)} rows but the index {len(self)}")
        with atomic_dir(path, overwrite=overwrite, marker=MANIFEST) as tmp:
            faiss.write_index(self.index, str(tmp / INDEX))
            with quiet_datasets():
                meta.save_to_disk(str(tmp / META))
            (tmp / CONFIG).write_text(
                json.dumps(config_to_dict(self.config), indent=2, sort_keys=True) + "\n"
            )
            if self.config.image_vectors:
                np.save(tmp / IMAGE_VECTORS, self.image_vectors)
            man = self.manifest()
            man["index_bytes"] = (tmp / INDEX).stat().st_size
            man["index_sha256"] = _sha256(tmp / INDEX)
            man["integrity"] = record_tree(tmp, exclude=(MANIFEST,))  # every file: table, config, vectors
            (tmp / MANIFEST).write_text(json.dumps(man, indent=2) + "\n")  # last: marks a complete store
        self.path = path
        self._parts, self._meta = [_load_meta(path, len(self))], None  # re-map the saved table
        if self.config.image_vectors:
            self._image_parts = [_load_image_vectors(path, len(self), self.encoder.dim)]
        return path

    @classmethod
    def load(cls, path: str | Path, encoder=None, *, verify: bool = True) -> InstructionStore:
        """Open a saved store. ``encoder`` (an encoder or spec) must match the one it was built with; by
        default the manifest's encoder spec is loaded. ``verify`` checks every file's size and SHA-256 against
        the manifest (stores written before per-file checksums: the index file's)."""
        import faiss

        from xprompt.retrieval.encoders import get_encoder

        path = Path(path)
        man = read_manifest(path)
        cfg = (
            load_config(StoreConfig, path / CONFIG)
            if (path / CONFIG).is_file()
            else StoreConfig(man["factory"])
        )
        idx_path = path / INDEX
        if not idx_path.is_file():
            raise XPromptError(f"store {path} has no {INDEX}; rebuild it with `xprompt index build`")
        size = idx_path.stat().st_size
        if "index_bytes" in man and size != man["index_bytes"]:
            raise XPromptError(
                f"{idx_path} is {size} bytes, the manifest says {man['index_bytes']}: "
                "the index file is truncated or corrupted; rebuild the store"
            )
        if verify:
            verify_files(path, man.get("integrity"), f"store {path}", "rebuild it with `xprompt index build`")
        if verify and "index_sha256" in man and _sha256(idx_path) != man["index_sha256"]:
            raise XPromptError(
                f"{idx_path} does not match its SHA-256 in the manifest: the index file is "
                "corrupted; rebuild the store"
            )
        try:
            index = faiss.read_index(str(idx_path))
        except RuntimeError as e:
            raise XPromptError(
                f"cannot read {idx_path} ({_faiss_msg(e)}): corrupted index; rebuild the store"
            ) from None
        enc_info = man["encoder"]
        if index.ntotal != man["count"] or index.d != enc_info["dim"]:
            raise XPromptError(
                f"{idx_path} holds {index.ntotal} vectors of dim {index.d}, the manifest says "
                f"{man['count']} of dim {enc_info['dim']}; rebuild the store"
            )
        meta = _load_meta(path, index.ntotal)
        if encoder is None:
            encoder = get_encoder(enc_info.get("spec") or enc_info["name"])
        elif isinstance(encoder, str):
            encoder = get_encoder(encoder)
        check_encoder(man, encoder, path)
        store = cls.__new__(cls)
        store.encoder, store.config, store.index, store.path = encoder, cfg, index, path
        store._parts, store._meta = [meta], None
        store._image_parts = (
            [_load_image_vectors(path, index.ntotal, encoder.dim)] if cfg.image_vectors else []
        )
        apply_search_params(store.index, cfg)
        return store


def read_manifest(path: Path) -> dict:
    mp = Path(path) / MANIFEST
    if not Path(path).is_dir():
        raise XPromptError(f"store not found: {path} (build one with `xprompt index build`)")
    if not mp.is_file():
        raise XPromptError(f"{path} is not an xprompt instruction store (no {MANIFEST})")
    try:
        man = json.loads(mp.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise XPromptError(f"{mp} is not valid JSON ({e}); rebuild the store") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise XPromptError(f"{mp} is not an xprompt instruction-store manifest")
    if man.get("format_version", 0) > FORMAT_VERSION:
        raise XPromptError(f"{path} was written by a newer xprompt (store format {man['format_version']})")
    for key in ("encoder", "factory", "count"):
        if key not in man:
            raise XPromptError(f"{mp} lacks {key!r}; rebuild the store")
    return man


def check_encoder(man: dict, encoder, path) -> None:
    """Refuse to query a store with an encoder other than the one that built it."""
    want = man["encoder"]
    got = encoder.describe()
    for key in ("name", "dim", "version"):
        if want.get(key) != got[key]:
            raise XPromptError(
                f"store {path} was built with encoder {want.get('name')} (dim {want.get('dim')}, weights "
                f"{want.get('version')}), the query encoder is {got['name']} (dim {got['dim']}, weights "
                f"{got['version']}): use the same --encoder or rebuild the store"
            )


def _load_image_vectors(path: Path, count: int, dim: int) -> np.ndarray:
    p = Path(path) / IMAGE_VECTORS
    try:
        iv = np.load(p, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise XPromptError(f"cannot read {p} ({type(e).__name__}); rebuild the store") from None
    if iv.shape != (count, dim):
        raise XPromptError(f"{p} has shape {iv.shape}, expected ({count}, {dim}); rebuild the store")
    return iv


def _load_meta(path: Path, count: int):
    from datasets import load_from_disk

    mp = Path(path) / META
    if not mp.is_dir():
        raise XPromptError(f"store {path} has no {META}/ table; rebuild it")
    try:
        meta = load_from_disk(str(mp))
    except Exception as e:  # noqa: BLE001 - datasets raises many kinds (OSError, ValueError, ArrowInvalid...)
        raise XPromptError(
            f"cannot read the metadata table {mp} ({type(e).__name__}); rebuild the store"
        ) from None
    missing = [c for c in COLUMNS if c not in getattr(meta, "column_names", [])]
    if missing:
        raise XPromptError(f"metadata table {mp} lacks column(s) {missing}; rebuild the store")
    if len(meta) != count:
        raise XPromptError(
            f"metadata table {mp} has {len(meta)} rows but the index holds {count} vectors; "
            "the store is inconsistent, rebuild it"
        )
    return meta


def store_config_from_args(factory: str | None = None, **overrides) -> StoreConfig:
    data = {k: v for k, v in overrides.items() if v is not None}
    if factory:
        data["factory"] = factory
    return config_from_dict(StoreConfig, data)


__all__ = [
    "InstructionStore",
    "Record",
    "StoreConfig",
    "check_encoder",
    "decode_image",
    "encode_image",
    "read_manifest",
    "store_config_from_args",
]

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
* Layout: this module is ``InstructionStore`` (add, search, save, load); a stored row and the table schema are
  ``records.py``, the FAISS index and ``StoreConfig`` ``faiss_index.py``, the files and their checks
  ``store_format.py``. The names of ``__all__`` stay importable from here.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xprompt.config_io import config_to_dict, load_config
from xprompt.errors import XPromptError
from xprompt.integrity import record_tree
from xprompt.integrity import verify as verify_files
from xprompt.io_utils import atomic_dir
from xprompt.retrieval.faiss_index import (
    StoreConfig,
    apply_search_params,
    faiss_msg,
    make_index,
    store_config_from_args,
    train_index,
)
from xprompt.retrieval.records import (
    COLUMNS,
    EXTRA_COLUMNS,
    Record,
    decode_image,
    encode_image,
    quiet_datasets,
    record_features,
    with_extra_columns,
)
from xprompt.retrieval.store_format import (
    CONFIG,
    FORMAT,
    FORMAT_VERSION,
    IMAGE_VECTORS,
    INDEX,
    MANIFEST,
    META,
    check_encoder,
    file_sha256,
    load_image_vectors,
    load_meta,
    read_manifest,
)


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
            features=record_features(),
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
                self._parts, self._meta = [with_extra_columns(p) for p in self._parts], None
            table = with_extra_columns(table)
        else:
            table = table.select_columns(list(COLUMNS))
            if table.features != record_features():
                with quiet_datasets():
                    table = table.cast(record_features())
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
                f"faiss cannot add to a {self.config.factory!r} index: {faiss_msg(e)}"
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
                self._meta = Dataset.from_dict({c: [] for c in COLUMNS}, features=record_features())
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
            man["index_sha256"] = file_sha256(tmp / INDEX)
            man["integrity"] = record_tree(tmp, exclude=(MANIFEST,))  # every file: table, config, vectors
            (tmp / MANIFEST).write_text(json.dumps(man, indent=2) + "\n")  # last: marks a complete store
        self.path = path
        self._parts, self._meta = [load_meta(path, len(self))], None  # re-map the saved table
        if self.config.image_vectors:
            self._image_parts = [load_image_vectors(path, len(self), self.encoder.dim)]
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
        if verify and "index_sha256" in man and file_sha256(idx_path) != man["index_sha256"]:
            raise XPromptError(
                f"{idx_path} does not match its SHA-256 in the manifest: the index file is "
                "corrupted; rebuild the store"
            )
        try:
            index = faiss.read_index(str(idx_path))
        except RuntimeError as e:
            raise XPromptError(
                f"cannot read {idx_path} ({faiss_msg(e)}): corrupted index; rebuild the store"
            ) from None
        enc_info = man["encoder"]
        if index.ntotal != man["count"] or index.d != enc_info["dim"]:
            raise XPromptError(
                f"{idx_path} holds {index.ntotal} vectors of dim {index.d}, the manifest says "
                f"{man['count']} of dim {enc_info['dim']}; rebuild the store"
            )
        meta = load_meta(path, index.ntotal)
        if encoder is None:
            encoder = get_encoder(enc_info.get("spec") or enc_info["name"])
        elif isinstance(encoder, str):
            encoder = get_encoder(encoder)
        check_encoder(man, encoder, path)
        store = cls.__new__(cls)
        store.encoder, store.config, store.index, store.path = encoder, cfg, index, path
        store._parts, store._meta = [meta], None
        store._image_parts = (
            [load_image_vectors(path, index.ntotal, encoder.dim)] if cfg.image_vectors else []
        )
        apply_search_params(store.index, cfg)
        return store


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

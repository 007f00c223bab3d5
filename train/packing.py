"""Sequence packing and collation: several samples per training sequence, no compute on padding.

Design choices
* Samples live in a HF ``datasets`` dataset in ``xp`` layout; ``SampleSource`` gives random access to them in
  the training context mode (``convert_mode`` for ``full`` / ``none``) and knows every sample's length in that
  mode without decoding the rows (counted from the Arrow ``segs`` column).
* The data order is a pure function of (seed, epoch): each epoch is a seeded permutation of the samples that
  fit in ``max_len``, packed greedily first-fit into bins of ``max_len`` tokens while at most ``window`` bins
  are open (the fullest open bin is closed when the window overflows). Global sequence ``k`` is the k-th bin
  of the concatenated epochs, so resuming at step ``s`` needs nothing but ``s``. Samples longer than
  ``max_len`` are skipped and counted (never truncated: the answer would lose its targets).
* Optimizer step ``s`` consumes global sequences ``[s*G, (s+1)*G)``; micro-batch ``a`` of process ``r`` takes
  ``M`` consecutive ones at ``s*G + (a*W + r)*M``. The set of sequences of a step does not depend on the
  number of processes.
* Collation: every bin becomes one row; document ids number the samples inside the row (padding gets its
  own id -1), the attention mask comes from ``xprompt.masks.build_attention_mask`` (document-aware, TD->IE
  cut in documents with XP tokens) and positions restart per document (``xprompt.masks.position_ids``).
  Rows are padded only to the longest row of the micro-batch; with packing that tail is small.
* ``doc_attention=True`` (the default in training) hands the model a ``DocAttention`` layout instead of the
  dense (B, T, T) mask: each document attends on its own, so attention costs sum(n_i^2) instead of T^2 per
  row, with the same result (``tests/test_packing.py`` checks logits and gradients against the dense mask).
* ``pack=False`` puts one sample per row (the baseline for the packing benchmark and the equality test).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xprompt.errors import XPromptError
from xprompt.masks import DocAttention, build_attention_mask, position_ids
from xprompt.sequence import MODES, Seg, TokenSequence, convert_mode, with_example_loss


class SampleSource:
    """Samples of a HF dataset (``xp`` layout) in a context mode; ``indices`` restricts it to a subset.

    ``mode_mix`` ({mode: weight}) lays each sample out in its own mode instead, drawn once per sample from
    ``seed`` (so a sample keeps its layout in every epoch and the plan stays a pure function of the seed)."""

    def __init__(
        self,
        ds,
        mode: str = "xp",
        indices: np.ndarray | None = None,
        example_loss: tuple[int, int] | None = None,
        mode_mix: dict | None = None,
        seed: int = 0,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        # only the token columns: an eval-split dataset also holds images, which must not be decoded here
        self.ds, self.mode = ds.select_columns(list(REQUIRED_COLUMNS)), mode
        self.raw = ds  # every column (task, family ...): the in-context probe reads them
        self.indices = (
            np.arange(len(ds), dtype=np.int64) if indices is None else np.asarray(indices, np.int64)
        )
        self.example_loss = example_loss  # (<eoi>, <eot>) ids: also train on the examples' outputs
        if mode_mix:
            names = sorted(mode_mix)
            p = np.array([mode_mix[m] for m in names], float)
            pick = np.random.default_rng([seed, 4049]).choice(
                len(names), size=len(self.indices), p=p / p.sum()
            )
            self.modes = [names[i] for i in pick]
            self.lengths = np.zeros(len(self.indices), np.int64)
            for i, m in enumerate(names):
                self.lengths[pick == i] = mode_lengths(ds, m)[self.indices[pick == i]]
        else:
            self.modes = None
            self.lengths = mode_lengths(ds, mode)[self.indices]  # (n,)

    def __len__(self) -> int:
        return len(self.indices)

    def get(self, idx) -> list[TokenSequence]:
        """Samples at positions ``idx`` of this source (not raw dataset rows)."""
        idx = [int(i) for i in np.asarray(idx).reshape(-1)]
        if not idx:
            return []
        rows = self.ds[[int(self.indices[i]) for i in idx]]
        out = []
        for i, ids, segs, loss in zip(idx, rows["input_ids"], rows["segs"], rows["loss"], strict=True):
            seq = TokenSequence(np.asarray(ids), np.asarray(segs), np.asarray(loss))
            if self.example_loss:
                seq = with_example_loss(seq, *self.example_loss)
            out.append(convert_mode(seq, self.modes[i] if self.modes else self.mode))
        return out


def mode_lengths(ds, mode: str) -> np.ndarray:
    """(len(ds),) token count of every sample after ``convert_mode(., mode)``, read from the Arrow columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if mode == "xp" and "n_tokens" in ds.column_names:
        return np.asarray(ds["n_tokens"], dtype=np.int64)
    col = ds.data.column("segs")
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if len(col) == 0:
        return np.zeros(0, np.int64)
    offsets = np.asarray(col.offsets, dtype=np.int64)  # (n+1,)
    values = np.asarray(pc.list_flatten(col), dtype=np.int64)
    drop = {"xp": (), "full": (int(Seg.XP),), "none": (int(Seg.XP), int(Seg.IE))}[mode]
    keep = ~np.isin(values, drop) if drop else np.ones(len(values), bool)
    csum = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
    start = offsets[:-1] - offsets[0]
    end = offsets[1:] - offsets[0]
    return csum[end] - csum[start]


def first_fit(lengths: np.ndarray, order: np.ndarray, max_len: int, window: int = 64) -> list[np.ndarray]:
    """Pack samples (in ``order``) into bins of at most ``max_len`` tokens, first-fit over <= ``window`` open bins.

    Returns the bins as arrays of sample positions, in the order they were closed (deterministic).
    """
    bins: list[list[int]] = []
    free: list[int] = []
    done: list[np.ndarray] = []
    for i in order:
        n = int(lengths[i])
        for b, f in enumerate(free):
            if n <= f:
                bins[b].append(int(i))
                free[b] -= n
                break
        else:
            bins.append([int(i)])
            free.append(max_len - n)
            if len(bins) > window:
                b = int(np.argmin(free))  # close the fullest bin
                done.append(np.asarray(bins.pop(b), np.int64))
                free.pop(b)
        # a bin that cannot take even a 1-token sample is closed right away
        full = [b for b, f in enumerate(free) if f == 0]
        for b in reversed(full):
            done.append(np.asarray(bins.pop(b), np.int64))
            free.pop(b)
    done.extend(np.asarray(b, np.int64) for b in bins)
    return done


class SequencePlan:
    """Global training sequence ``k`` -> the sample positions packed into it (epochs concatenated)."""

    def __init__(
        self,
        lengths: np.ndarray,
        max_len: int,
        seed: int,
        pack: bool = True,
        window: int = 64,
        shuffle: bool = True,
    ):
        self.lengths = np.asarray(lengths, np.int64)
        self.max_len, self.seed, self.pack, self.window, self.shuffle = max_len, seed, pack, window, shuffle
        self.fits = np.nonzero((self.lengths <= max_len) & (self.lengths > 0))[0]
        self.skipped = int(len(self.lengths) - len(self.fits))
        self._epochs: list[list[np.ndarray]] = []
        self._starts: list[int] = [0]  # global index of each epoch's first sequence

    def epoch(self, e: int) -> list[np.ndarray]:
        while len(self._epochs) <= e:
            n = len(self._epochs)
            if len(self.fits) == 0:
                raise ValueError("no sample fits in max_len")
            order = (
                np.random.default_rng([self.seed, n]).permutation(self.fits)
                if self.shuffle
                else self.fits.copy()
            )
            bins = (
                first_fit(self.lengths, order, self.max_len, self.window)
                if self.pack
                else [np.asarray([i], np.int64) for i in order]
            )
            self._epochs.append(bins)
            self._starts.append(self._starts[-1] + len(bins))
        return self._epochs[e]

    def sequence(self, k: int) -> tuple[int, np.ndarray]:
        """(epoch, sample positions) of global sequence ``k``."""
        e = 0
        while True:
            bins = self.epoch(e)
            if k < self._starts[e + 1]:
                return e, bins[k - self._starts[e]]
            e += 1

    def epoch_size(self, e: int = 0) -> int:
        return len(self.epoch(e))


def micro_batch_sequences(
    step: int, accum: int, rank: int, *, micro: int, world: int, global_batch: int
) -> range:
    """Global sequence indices of micro-batch ``accum`` of process ``rank`` at optimizer step ``step``."""
    start = step * global_batch + (accum * world + rank) * micro
    return range(start, start + micro)


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) long  # noqa: F821
    position_ids: torch.Tensor  # (B, T) long  # noqa: F821
    attn_mask: object  # (B, T, T) bool tensor (True = may attend) or a DocAttention layout
    loss_mask: torch.Tensor  # (B, T) bool, token is a target  # noqa: F821
    image_mask: torch.Tensor  # (B, T) bool, token is an image code  # noqa: F821
    n_real: int  # non-padding tokens
    n_samples: int

    def to(self, device) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.position_ids.to(device),
            self.attn_mask.to(device),
            self.loss_mask.to(device),
            self.image_mask.to(device),
            self.n_real,
            self.n_samples,
        )


def collate(
    rows: list[list[TokenSequence]], vocab, pad_to: int | None = None, doc_attention: bool = False
) -> Batch:
    """Rows of packed samples -> a ``Batch`` padded to the longest row (or to ``pad_to``); its attention is a
    dense mask or, with ``doc_attention``, a per-document ``DocAttention`` layout."""
    import torch

    lens = [sum(len(s) for s in row) for row in rows]
    t = max(lens) if pad_to is None else pad_to
    if max(lens) > t:
        raise ValueError(f"a row of {max(lens)} tokens does not fit pad_to={t}")
    b = len(rows)
    ids = np.full((b, t), vocab.pad_id, np.int64)
    segs = np.full((b, t), int(Seg.PREFIX), np.int8)
    loss = np.zeros((b, t), bool)
    docs = np.full((b, t), -1, np.int64)
    for r, row in enumerate(rows):
        pos = 0
        for d, s in enumerate(row):
            n = len(s)
            ids[r, pos : pos + n] = s.ids
            segs[r, pos : pos + n] = s.segs
            loss[r, pos : pos + n] = s.loss
            docs[r, pos : pos + n] = d
            pos += n
    if doc_attention:
        mask = DocAttention.from_layout(segs, docs)
    else:
        mask = torch.from_numpy(
            np.stack([build_attention_mask(segs[r], docs[r]) for r in range(b)])
        )  # (B, T, T)
    pos_ids = np.stack([position_ids(docs[r]) for r in range(b)])  # (B, T)
    ids_t = torch.from_numpy(ids)
    return Batch(
        input_ids=ids_t,
        position_ids=torch.from_numpy(pos_ids),
        attn_mask=mask,
        loss_mask=torch.from_numpy(loss),
        image_mask=vocab.is_image(ids_t),
        n_real=int(sum(lens)),
        n_samples=sum(len(row) for row in rows),
    )


class Loader:
    """Micro-batches for (step, accumulation index, rank) from a ``SampleSource`` and a ``SequencePlan``."""

    def __init__(
        self,
        source: SampleSource,
        plan: SequencePlan,
        vocab,
        *,
        micro: int,
        world: int,
        global_batch: int,
        pad_to: int | None = None,
        doc_attention: bool = False,
    ):
        self.source, self.plan, self.vocab = source, plan, vocab
        self.micro, self.world, self.global_batch, self.pad_to = micro, world, global_batch, pad_to
        self.doc_attention = doc_attention

    def micro_batch(self, step: int, accum: int, rank: int) -> tuple[Batch, int]:
        """(batch, epoch of its first sequence)."""
        seqs = micro_batch_sequences(
            step, accum, rank, micro=self.micro, world=self.world, global_batch=self.global_batch
        )
        rows, epoch = [], None
        for k in seqs:
            e, members = self.plan.sequence(k)
            epoch = e if epoch is None else epoch
            rows.append(self.source.get(members))
        return collate(rows, self.vocab, self.pad_to, self.doc_attention), int(epoch)

    def eval_batch(self, i: int, rank: int) -> Batch:
        """Validation micro-batch ``i`` of process ``rank`` (fixed, epoch 0 of an unshuffled plan)."""
        start = (i * self.world + rank) * self.micro
        n = self.plan.epoch_size(0)
        rows = [self.source.get(self.plan.sequence(k % n)[1]) for k in range(start, start + self.micro)]
        return collate(rows, self.vocab, self.pad_to, self.doc_attention)


# ---------------------------------------------------------------------- reading a built dataset
REQUIRED_COLUMNS = ("input_ids", "segs", "loss")
META_FILES = ("tokenizers.json", "build_config.json", "dataset_card.json", "meta.json")


@dataclass
class TrainingData:
    vocab: object
    train: SampleSource
    val: SampleSource | None
    data_dir: Path
    val_source: str  # "--val-data DIR", "split 'val' of the data", "held-out fraction 0.02", or "none"
    meta: dict

    def describe(self) -> dict:
        return {
            "data_dir": str(self.data_dir),
            "train_samples": len(self.train),
            "val_samples": len(self.val) if self.val is not None else 0,
            "val_source": self.val_source,
            "vocab_fingerprint": self.vocab.fingerprint(),
            "meta": self.meta,
        }


def _find_dataset(root: Path):
    """(dataset or DatasetDict, its directory) under ``root``: the dir itself or a known subfolder."""
    from datasets import load_from_disk

    def loadable(p: Path) -> bool:
        return (p / "dataset_dict.json").is_file() or (p / "state.json").is_file()

    cands = [root] + [root / n for n in ("train", "dataset", "data", "hf")]
    cands += sorted(p for p in root.iterdir() if p.is_dir() and p not in cands)
    for p in cands:
        if p.is_dir() and loadable(p):
            try:
                return load_from_disk(str(p)), p
            except Exception as e:  # noqa: BLE001 (datasets raises several types for damaged dirs)
                raise XPromptError(f"{p}: cannot load the dataset ({type(e).__name__}: {e})") from None
    raise XPromptError(
        f"{root} holds no saved dataset (no dataset_dict.json/state.json); build one with "
        "`xprompt data build`"
    )


def _find_upwards(name: str, start: Path, stop: Path) -> Path | None:
    p = start
    while True:
        if (p / name).is_file():
            return p / name
        if p == stop or p.parent == p:
            return None
        p = p.parent


def open_dataset(path) -> tuple[object, object | None, object, dict, Path]:
    """(train split, val split or None, Vocabulary, metadata, dir) of a dataset built by ``xprompt data build``."""
    from datasets import DatasetDict

    from xprompt.tokenizer.vocab import Vocabulary

    root = Path(path)
    if not root.is_dir():
        raise XPromptError(f"data directory not found: {root} (build one with `xprompt data build`)")
    from xprompt.train.build import verify_dataset

    verify_dataset(root)  # before any Arrow file is parsed: damage is reported as damage
    ds, ds_dir = _find_dataset(root)
    val = None
    if isinstance(ds, DatasetDict):
        if "train" not in ds:
            raise XPromptError(f"{ds_dir}: the dataset has no 'train' split (splits: {', '.join(ds)})")
        val = next((ds[k] for k in ("val", "validation") if k in ds), None)
        ds = ds["train"]
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise XPromptError(
            f"{ds_dir}: the dataset lacks column(s) {', '.join(missing)}; it was not built by "
            "`xprompt data build`"
        )
    if len(ds) == 0:
        raise XPromptError(f"{ds_dir}: the dataset is empty")
    vf = _find_upwards("vocab.json", ds_dir, root)
    if vf is None:
        raise XPromptError(f"{root}: no vocab.json beside the dataset; the data build is incomplete")
    vocab = Vocabulary.load(vf)
    meta = {}
    for name in META_FILES:
        f = _find_upwards(name, ds_dir, root)
        if f is not None:
            try:
                meta[name] = json.loads(f.read_text())
            except json.JSONDecodeError:
                raise XPromptError(f"{f} is not valid JSON") from None
    return ds, val, vocab, meta, ds_dir


def load_training_data(
    data,
    *,
    val_data=None,
    mode: str = "xp",
    val_fraction: float = 0.02,
    seed: int = 0,
    loss_on_examples: bool = False,
    mode_mix: dict | None = None,
) -> TrainingData:
    """Training and validation ``SampleSource``s of a data dir (validation: --val-data, a 'val' split, or a
    seeded held-out fraction of the training samples, in that order). ``loss_on_examples`` adds the examples'
    outputs to the training targets only: validation always scores the answers alone, so runs compare; so does
    ``mode_mix`` (validation stays in ``mode``)."""
    ds, val_split, vocab, meta, _ = open_dataset(data)
    n = len(ds)
    ex = (vocab.special("<eoi>"), vocab.special("<eot>")) if loss_on_examples else None
    train_kw = {"example_loss": ex, "mode_mix": mode_mix or None, "seed": seed}
    if val_data is not None:
        vds, _, vvocab, _, _ = open_dataset(val_data)
        if vvocab.fingerprint() != vocab.fingerprint():
            raise XPromptError(f"--val-data {val_data} was built with another vocabulary than {data}")
        return TrainingData(
            vocab,
            SampleSource(ds, mode, **train_kw),
            SampleSource(vds, mode),
            Path(data),
            f"--val-data {val_data}",
            meta,
        )
    if val_split is not None and len(val_split):
        return TrainingData(
            vocab,
            SampleSource(ds, mode, **train_kw),
            SampleSource(val_split, mode),
            Path(data),
            "split 'val' of the data",
            meta,
        )
    n_val = round(n * val_fraction)
    if n_val == 0 or n - n_val < 1:
        return TrainingData(vocab, SampleSource(ds, mode, **train_kw), None, Path(data), "none", meta)
    perm = np.random.default_rng([seed, 7919]).permutation(n)
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return TrainingData(
        vocab,
        SampleSource(ds, mode, train_idx, **train_kw),
        SampleSource(ds, mode, val_idx),
        Path(data),
        f"held-out fraction {val_fraction}",
        meta,
    )

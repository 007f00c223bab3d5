"""Building pre-tokenized task-suite datasets (``xprompt data build``) and loading them back.

Design choices:
- Reproducible from the seed: group g of ``group_size`` samples (one task instance, pairs shared in rotated
  roles, see ``pairing.draw_group``) is drawn from ``SeedSequence([seed, 0, g])``, sample i's instruction
  from ``SeedSequence([seed, 2, i])`` (eval instances use stream 1), so a build is the same whatever the
  chunking or number of worker processes.
- Sampling: a family by the mixture weights (``configs/data_mix.json`` -> ``DataMix``), then a task uniformly
  among the family's tasks that the split allows (``train/heldout.py``); the eval split draws every task
  uniformly from the evaluation photographs.
- Images are VQ-encoded in batches (encoding dominates the cost); samples are laid out with
  ``xprompt.sequence.build_sample`` in ``xp`` mode (the trainer derives ``full`` / ``none`` with
  ``convert_mode``). Columns: ``input_ids`` (int32), ``segs`` (int8), ``loss`` (int8), ``task``, ``family``,
  ``kind``, ``example_task``, ``instruction``, ``params`` (JSON), ``seed``, ``index``, ``n_tokens``; the eval
  split also keeps the raw images (PNG) and texts of example, query and target, and the scene graphs.
- Output directory (written atomically: temp dir + rename): ``data/`` (``datasets.save_to_disk`` in shards),
  ``vocab.json``, ``tokenizers.json`` (paths + fingerprints of the VQ and BPE tokenizers), ``build_config.json``,
  ``dataset_card.json`` + ``README.md`` (counts per task and family, held-out list, seeds, mixture), and last
  ``integrity.json`` (size + SHA-256 of every file, checked by ``load_built`` and the trainer's loader). An
  existing directory is only replaced with ``overwrite`` and only if it holds a ``dataset_card.json``.
- Generation of raw samples (numpy/PIL) can run in worker processes; encoding stays in the parent.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from xprompt.config_io import config_from_dict, load_config, save_config
from xprompt.errors import XPromptError
from xprompt.images import png_bytes
from xprompt.integrity import read_record, record_tree, verify, write_record
from xprompt.io_utils import atomic_dir, atomic_write_text
from xprompt.tokenizer.loading import load_image_tokenizer, load_text_tokenizer, tokenizer_ref
from xprompt.train import photo_pool, sources
from xprompt.train.heldout import check_split, excluded_tasks, split_tasks
from xprompt.train.pairing import RawSample, draw_contrast_group, draw_group, raie_pair
from xprompt.train.tasks import FAMILIES, all_tasks, check_size, get_task, params_json
from xprompt.train.tasks_dense import RAMP_PREFIX, with_ramp_palette

CARD = "dataset_card.json"
DATASET_FORMAT = "xprompt-dataset/1"


PROBABILITIES = ("instruction_drop", "contrast", "multi_example", "ramp_palettes")  # DataMix fields in [0, 1]


@dataclass
class DataMix:
    """Sampling weight of each task family (relative; 0 = never) and the instruction drop probability."""

    dense: float = 1.0
    controllable: float = 0.6
    lowlevel: float = 1.0
    degrade: float = 0.6
    edit: float = 1.5
    style: float = 1.2
    geometric: float = 0.5
    t2i: float = 0.4
    caption: float = 0.4
    difference: float = 0.6
    unseen: float = 0.0  # inpainting / colorization: only used when a split includes them
    instruction_drop: float = 0.3
    contrast: float = 0.0  # share of eligible groups drawn as contrast pairs (one query, two task instances)
    photo_pool: str = "packaged"  # training photographs: "packaged" or "debian" (train/photo_pool.py)
    multi_example: float = 0.0  # share of (non-contrast) groups whose samples show 2 or 3 examples
    ramp_palettes: float = 0.0  # share of depth instances (both directions) drawn with a random colour ramp

    def __post_init__(self):
        photo_pool.check_pool(self.photo_pool)
        for k, v in asdict(self).items():
            is_prob = k in PROBABILITIES
            if k != "photo_pool" and (v < 0 or (is_prob and v > 1)):
                raise ValueError(
                    f"{k} must be >= 0 (and a probability for {'/'.join(PROBABILITIES)}), got {v}"
                )

    def weight(self, family: str) -> float:
        return float(getattr(self, family))


@dataclass
class BuildConfig:
    split: str = "train"
    n: int = 1000
    size: int = 64
    seed: int = 0
    num_xp: int = 16
    shard_size: int = 5000
    chunk: int = 256  # samples generated, RAIE-paired and encoded together (rounded to whole groups)
    group_size: int = (
        2  # samples per task instance sharing their pairs (see pairing.draw_group); 1 = no sharing
    )
    workers: int = 1
    keep_heldout_reverses: bool = False
    include_unseen: bool = False
    raie_pairing: bool = False
    tasks: list = field(default_factory=list)  # restrict to these task names (default: all the split allows)
    vocab: str = (
        ""  # a vocab.json to tokenize into (a converted Chameleon / Lumina-mGPT model's); "" = build ours
    )
    mix: dict = field(default_factory=dict)  # DataMix fields
    # real datasets mixed in (train/real_sources.py): NAME=PATH specs, names that must never be trained on,
    # training pairs read per source (0 = all), and reader options
    sources: list = field(default_factory=list)
    holdout: list = field(default_factory=list)
    source_limit: int = 0
    columns: str = ""
    depth_scale: float = 1000.0

    def data_mix(self) -> DataMix:
        return config_from_dict(DataMix, self.mix, where="data mix")


def load_mix(path: str | Path | None) -> dict:
    if path is None:
        return {}
    return asdict(load_config(DataMix, path))


# ----------------------------------------------------------------------------------------- sampling


def task_table(cfg: BuildConfig) -> tuple[list[str], list[str], np.ndarray]:
    """(allowed task names, candidate tasks, their sampling probabilities) for a config."""
    check_split(cfg.split)
    allowed = split_tasks(cfg.split, cfg.keep_heldout_reverses, cfg.include_unseen)
    tasks = all_tasks()
    if cfg.tasks:
        for name in cfg.tasks:
            get_task(name)  # unknown name -> XPromptError
        bad = sorted(set(cfg.tasks) - set(allowed))
        if bad:
            raise XPromptError(f"task(s) {bad} are held out of split {cfg.split!r}; choose another split")
        cands = sorted(set(cfg.tasks))
    else:
        cands = allowed
    if cfg.split == "eval" or cfg.tasks:
        probs = np.ones(len(cands))
    else:
        mix = cfg.data_mix()
        fam_n = Counter(tasks[t].family for t in cands)
        probs = np.array([mix.weight(tasks[t].family) / fam_n[tasks[t].family] for t in cands])
    if not cands or probs.sum() <= 0:
        raise XPromptError(f"split {cfg.split!r} with this mixture has no task to sample")
    return allowed, cands, probs / probs.sum()


def sample_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


def _mix(cfg: BuildConfig) -> DataMix:
    key = json.dumps(cfg.mix, sort_keys=True)
    if key not in _MIX_CACHE:
        _MIX_CACHE[key] = cfg.data_mix()
    return _MIX_CACHE[key]


_MIX_CACHE: dict[str, DataMix] = {}


def draw_group_at(cfg: BuildConfig, group: int, table=None) -> list[RawSample]:
    """The raw samples of group ``group`` (indices ``group*K .. group*K+K-1``, K = ``cfg.group_size``),
    deterministic from ``cfg.seed``: the group's task, instance and pairs come from ``SeedSequence([seed, 0,
    group])``, each sample's instruction (and drop) from ``SeedSequence([seed, 2, index])``."""
    allowed, cands, probs = table or task_table(cfg)
    k = cfg.group_size
    lo, hi = group * k, min(group * k + k, cfg.n)
    rng = sample_rng(cfg.seed, group)
    task = get_task(cands[int(rng.choice(len(cands), p=probs))])
    photo_split = "eval" if cfg.split == "eval" else "train"
    mix = _mix(cfg)
    drop = 0.0 if cfg.split == "eval" else mix.instruction_drop
    rngs = [sample_rng(cfg.seed, i, stream=2) for i in range(lo, hi)]
    remap = _ramp_remap(cfg, mix, group)
    # stream 3 decides contrast groups, so builds without them draw exactly what they drew before
    if (
        cfg.split != "eval"
        and hi - lo == 2
        and mix.contrast
        and sample_rng(cfg.seed, group, 3).random() < mix.contrast
    ):
        got = draw_contrast_group(
            task, rng, cfg.size, photo_split, first_index=lo, allowed=allowed, sample_rngs=rngs, remap=remap
        )
        if got is not None:
            return got
    return draw_group(task, rng, cfg.size, photo_split, k=hi - lo, first_index=lo, allowed=allowed,
                      instruction_drop=drop, sample_rngs=rngs, n_examples=_n_examples(cfg, mix, group),
                      remap=remap)  # fmt: skip


def _ramp_remap(cfg: BuildConfig, mix: DataMix, group: int):
    """The ``ramp_palettes`` share of the training groups' depth instances get a random colour ramp (stream 6
    decides and draws it, so builds without ramps draw exactly what they drew before); None = no change."""
    if cfg.split == "eval" or not mix.ramp_palettes:
        return None
    r = sample_rng(cfg.seed, group, 6)
    return lambda task, params: with_ramp_palette(task, params, r, mix.ramp_palettes)


def _n_examples(cfg: BuildConfig, mix: DataMix, group: int) -> int:
    """Examples per sample of group ``group``: 1, or 2-3 for a ``multi_example`` share of the training groups
    (stream 5 decides, so builds without multi-example groups draw exactly what they drew before)."""
    if cfg.split == "eval" or not mix.multi_example:
        return 1
    r = sample_rng(cfg.seed, group, 5)
    return 1 if r.random() >= mix.multi_example else int(r.integers(2, 4))


def draw_groups(cfg: BuildConfig, lo: int, hi: int, table=None) -> list[RawSample]:
    """The raw samples of groups [lo, hi)."""
    table = table or task_table(cfg)
    return [s for g in range(lo, hi) for s in draw_group_at(cfg, g, table)]


# ------------------------------------------------------------------------------------- tokenization


VQ_HINT = "train one (xprompt train tokenizer) or pass --tokenizer"
BPE_HINT = "train it with `xprompt train bpe` or pass --bpe"


def _image_slots(s: RawSample) -> list[np.ndarray]:
    items = [*s.example.inputs, s.example.output, *s.query.inputs, s.query.output]
    items += [x for p in s.more_examples for x in (*p.inputs, p.output)]
    return [x for x in items if not isinstance(x, str)]


def tokenize_chunk(samples: list[RawSample], vq, vocab, bpe) -> list:
    """Encode every distinct image of the chunk in one batch (pairs shared by several samples are encoded
    once) and lay each sample out in ``xp`` mode."""
    from xprompt.sequence import build_sample

    slot: dict[int, int] = {}  # id(image array) -> row in the batch
    imgs: list[np.ndarray] = []
    for s in samples:
        for im in _image_slots(s):
            if id(im) not in slot:
                slot[id(im)] = len(imgs)
                imgs.append(im)
    codes = vq.encode(np.stack(imgs)) if imgs else np.zeros((0, 1, 1), np.int64)  # (N, h, w)

    def conv(x):
        return x if isinstance(x, str) else codes[slot[id(x)]]

    seqs = []
    for s in samples:
        examples = [([conv(x) for x in p.inputs], conv(p.output)) for p in (s.example, *s.more_examples)]
        q_in = [conv(x) for x in s.query.inputs]
        ans = conv(s.query.output)
        seqs.append(build_sample(vocab, bpe, mode="xp", instruction=s.instruction or None,
                                 examples=examples, query=q_in, answer=ans))  # fmt: skip
    return seqs, len(imgs)


# ------------------------------------------------------------------------------------------ writing


def _features(eval_split: bool):
    from datasets import Features, Image, Sequence, Value

    f = {
        "input_ids": Sequence(Value("int32")), "segs": Sequence(Value("int8")), "loss": Sequence(Value("int8")),
        "task": Value("string"), "family": Value("string"), "kind": Value("string"),
        "example_task": Value("string"), "instruction": Value("string"), "params": Value("string"),
        "seed": Value("int64"), "index": Value("int64"), "n_tokens": Value("int32"),
    }  # fmt: skip
    if eval_split:
        f.update({
            "true_instruction": Value("string"),
            "example_inputs": Sequence(Image()), "example_output": Image(), "query_inputs": Sequence(Image()),
            "target": Image(), "example_inputs_text": Sequence(Value("string")), "example_output_text": Value("string"),
            "query_inputs_text": Sequence(Value("string")), "target_text": Value("string"),
            "scene_before": Value("string"), "scene_after": Value("string"),
        })  # fmt: skip
    return Features(f)


def _png(x):
    return {"bytes": png_bytes(x), "path": None}


def _row(s: RawSample, seq, seed: int, eval_split: bool) -> dict:
    row = {
        "input_ids": seq.ids.astype(np.int32), "segs": seq.segs.astype(np.int8), "loss": seq.loss.astype(np.int8),
        "task": s.task, "family": s.family, "kind": s.kind, "example_task": s.example_task,
        "instruction": s.instruction, "params": params_json(s.params), "seed": seed, "index": s.index,
        "n_tokens": len(seq),
    }  # fmt: skip
    if eval_split:

        def imgs(xs):
            return [_png(x) for x in xs if not isinstance(x, str)]

        def txts(xs):
            return [x for x in xs if isinstance(x, str)]

        def one(x):
            return (None, x) if isinstance(x, str) else (_png(x), "")

        row.update({
            "true_instruction": s.true_instruction,
            "example_inputs": imgs(s.example.inputs), "example_inputs_text": txts(s.example.inputs),
            "query_inputs": imgs(s.query.inputs), "query_inputs_text": txts(s.query.inputs),
            "scene_before": json.dumps(s.query.scene_before), "scene_after": json.dumps(s.query.scene_after),
        })  # fmt: skip
        row["example_output"], row["example_output_text"] = one(s.example.output)
        row["target"], row["target_text"] = one(s.query.output)
    return row


_WORKER: dict = {}  # per-process state of a build: cfg, task table, tokenizers, vocabulary, RAIE encoder


def _init_worker(cfg: BuildConfig, tokenizer, bpe, vocab_dict: dict, threads: int, encoder=None) -> None:
    """Load what a build process needs (in a spawned worker, or in the parent when ``workers == 1``)."""
    import torch

    from xprompt.tokenizer.vocab import Vocabulary

    torch.set_num_threads(threads)
    sources.set_photo_pool(cfg.data_mix().photo_pool if cfg.split != "eval" else "packaged")
    vq = load_image_tokenizer(tokenizer, VQ_HINT)
    text = load_text_tokenizer(bpe, BPE_HINT)
    _WORKER.update(cfg=cfg, table=task_table(cfg), vq=vq, bpe=text, vocab=Vocabulary.from_dict(vocab_dict),
                   encoder=encoder)  # fmt: skip


def _work(group_range: tuple[int, int]) -> tuple[list[dict], dict]:
    """Generate, (RAIE-)pair, encode and lay out the samples of groups [lo, hi): (rows, statistics)."""
    w = _WORKER
    cfg = w["cfg"]
    lo, hi = group_range
    raw = draw_groups(cfg, lo, hi, w["table"])
    raie_n = raie_pair(raw, w["encoder"], seed=cfg.seed) if cfg.raie_pairing else 0
    seqs, n_enc = tokenize_chunk(raw, w["vq"], w["vocab"], w["bpe"])
    rows = [_row(s, seq, cfg.seed, cfg.split == "eval") for s, seq in zip(raw, seqs, strict=True)]
    stats = {"tasks": Counter(s.task for s in raw), "families": Counter(s.family for s in raw),
             "n_tok": [len(q) for q in seqs], "raie": raie_n, "images": n_enc,
             "multi_example": sum(bool(s.more_examples) for s in raw),
             "ramp_palette": sum(str(s.params.get("palette", "")).startswith(RAMP_PREFIX) for s in raw)}  # fmt: skip
    return rows, stats


def _check_build(cfg: BuildConfig, out: Path) -> tuple:
    """Validate the config and the output dir before anything is loaded or written; returns the task table."""
    if cfg.n < (0 if cfg.sources else 1):
        raise XPromptError(f"--n must be >= 1 (>= 0 with --source), got {cfg.n}")
    if cfg.sources and cfg.split == "eval":
        raise XPromptError("--source adds training pairs; the eval split takes none (evaluate with `xprompt eval "
                           "unseen --dataset`)")  # fmt: skip
    if cfg.group_size < 1 or cfg.workers < 1 or cfg.chunk < 1 or cfg.shard_size < 1:
        raise XPromptError("group_size, workers, chunk and shard_size must all be >= 1")
    check_size(cfg.size)
    table = task_table(cfg)  # validates split, tasks and mixture
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / CARD).exists())):
        raise XPromptError(f"{out} exists and is not an xprompt dataset; refusing to write into it")
    return table


def _build_tokenizers(cfg: BuildConfig, tokenizer, bpe):
    """(vq, text tokenizer, vocabulary, refs): the tokenizers of a build, checked against the image size."""
    from xprompt.tokenizer.vocab import Vocabulary

    vq = load_image_tokenizer(str(tokenizer), VQ_HINT)
    vq_ref = tokenizer_ref("vq", tokenizer)
    if cfg.size % vq.factor:
        raise XPromptError(f"--size {cfg.size} is not a multiple of the image tokenizer factor {vq.factor}")
    if cfg.size // vq.factor > 64:
        raise XPromptError(f"--size {cfg.size} gives a {cfg.size // vq.factor}-token grid; the maximum is 64")
    text_tok = load_text_tokenizer(str(bpe), BPE_HINT)
    bpe_ref = tokenizer_ref("bpe", bpe)
    if (
        cfg.vocab
    ):  # the model's own vocabulary (e.g. Chameleon's 65,536 ids + XP): data and weights must agree
        vocab = Vocabulary.load(cfg.vocab)
        if vocab.num_image_codes != vq.codebook_size or vocab.text_size < text_tok.vocab_size:
            raise XPromptError(
                f"--vocab {cfg.vocab} has {vocab.num_image_codes} image codes and {vocab.text_size} text ids; the "
                f"tokenizers need {vq.codebook_size} and {text_tok.vocab_size}: pass the model's own tokenizers"
            )
        if vocab.num_xp != cfg.num_xp:
            raise XPromptError(
                f"--vocab {cfg.vocab} has {vocab.num_xp} XP tokens; pass --num-xp {vocab.num_xp}"
            )
    else:
        vocab = Vocabulary.build(text_size=text_tok.vocab_size, num_image_codes=vq.codebook_size, num_xp=cfg.num_xp,
                                 max_grid=64)  # fmt: skip
    refs = {"image_tokenizer": vq_ref, "bpe": bpe_ref, "vocab_fingerprint": vocab.fingerprint()}
    return vq, text_tok, vocab, refs


def _chunks(cfg: BuildConfig, vq, text_tok, vocab, refs: dict, encoder):
    """(chunk iterator over (rows, stats) of every group range, pool or None): worker processes or in-process."""
    n_groups = math.ceil(cfg.n / cfg.group_size)
    per = max(1, cfg.chunk // cfg.group_size)  # groups per chunk
    ranges = [(lo, min(lo + per, n_groups)) for lo in range(0, n_groups, per)]
    if cfg.workers > 1:
        import multiprocessing as mp

        init = (cfg, refs["image_tokenizer"]["path"], refs["bpe"]["path"], vocab.to_dict(), 1)
        pool = mp.get_context("spawn").Pool(cfg.workers, initializer=_init_worker, initargs=init)
        return pool.imap(_work, ranges), pool
    import torch

    _init_worker(cfg, vq, text_tok, vocab.to_dict(), torch.get_num_threads(), encoder)
    return (_work(r) for r in ranges), None


def new_stats() -> dict:
    """Empty build statistics (summed chunk by chunk: Counter update, list extend, int add)."""
    return {
        "tasks": Counter(),
        "families": Counter(),
        "n_tok": [],
        "raie": 0,
        "images": 0,
        "multi_example": 0,
        "ramp_palette": 0,
    }


def _collect(cfg: BuildConfig, chunks, pool, features, progress: bool) -> tuple[list, dict]:
    """Gather the chunks into ``shard_size`` Datasets; returns them and the summed statistics."""
    import datasets
    from tqdm.auto import tqdm

    stats = new_stats()
    shards, rows = [], []
    bar = tqdm(total=cfg.n, desc=f"build {cfg.split}", unit="sample", disable=not progress)
    try:
        for chunk_rows, st in chunks:
            rows += chunk_rows
            for k in stats:
                stats[k] += st[k]  # Counter.update / list extend / int add
            if len(rows) >= cfg.shard_size:
                shards.append(datasets.Dataset.from_list(rows, features=features))
                rows = []
            bar.update(len(chunk_rows))
    finally:
        bar.close()
        _WORKER.clear()
        if pool is not None:
            pool.terminate()
            pool.join()
    if rows:
        shards.append(datasets.Dataset.from_list(rows, features=features))
    return shards, stats


def _photos_card(cfg: BuildConfig) -> dict:
    """The photograph pool a build draws from (checked before any worker starts)."""
    if cfg.split == "eval":
        return {"pool": "eval", "photos": len(sources.EVAL_PHOTOS)}
    return sources.pool_card(cfg.data_mix().photo_pool)


def _card(
    cfg: BuildConfig,
    stats: dict,
    table,
    refs: dict,
    num_shards: int,
    factor: int,
    seconds: float,
    photos: dict,
) -> dict:
    n_tok = np.asarray(stats["n_tok"])
    return {
        "split": cfg.split, "n": cfg.n, "size": cfg.size, "seed": cfg.seed, "seed_scheme": "group g: SeedSequence([seed, 0, g]); instruction of sample i: SeedSequence([seed, 2, i])",
        "num_xp": cfg.num_xp, "layout": "xp", "num_shards": num_shards,
        "held_out": excluded_tasks(cfg.split, cfg.keep_heldout_reverses, cfg.include_unseen),
        "keep_heldout_reverses": cfg.keep_heldout_reverses, "include_unseen": cfg.include_unseen,
        "raie_pairing": cfg.raie_pairing, "raie_repaired": stats["raie"], "group_size": cfg.group_size,
        "multi_example_samples": stats["multi_example"], "ramp_palette_samples": stats["ramp_palette"],
        "images_encoded": stats["images"], "tasks": dict(sorted(stats["tasks"].items())),
        "families": dict(sorted(stats["families"].items())), "sampled_tasks": table[1],
        "mix": asdict(cfg.data_mix()) if cfg.split != "eval" else "uniform over tasks",
        "tokens": {"mean": float(n_tok.mean()), "min": int(n_tok.min()), "max": int(n_tok.max()),
                   "total": int(n_tok.sum())},
        "image_grid": cfg.size // factor, "tokenizers": refs, "build_seconds": round(seconds, 2),
        "photos": photos,
    }  # fmt: skip


def build_dataset(cfg: BuildConfig, out: str | Path, *, tokenizer="checkpoints/vq-64", bpe="checkpoints/bpe",
                  overwrite: bool = False, progress: bool = True, encoder=None) -> dict:  # fmt: skip
    """Build the dataset described by ``cfg`` into ``out``; returns the dataset card (a dict).

    ``cfg.workers > 1`` spawns that many processes, each generating, encoding (one torch thread) and laying
    out whole chunks; the parent only writes. ``encoder`` (RAIE pairing) is used in-process only; workers load
    the default encoder."""
    import datasets

    out = Path(out)
    table = _check_build(cfg, out)
    vq, text_tok, vocab, refs = _build_tokenizers(cfg, tokenizer, bpe)
    features = _features(cfg.split == "eval")
    photos = _photos_card(cfg)
    t0 = time.time()
    with atomic_dir(out, overwrite=overwrite, marker=CARD) as tmp, sources.photo_pool_scope():
        chunks, pool = _chunks(cfg, vq, text_tok, vocab, refs, encoder)
        shards, stats = _collect(cfg, chunks, pool, features, progress)
        real = []
        if cfg.sources:
            from xprompt.train.real_sources import build_real

            rows, rstats, real = build_real(cfg, vq, text_tok, vocab, encoder, first_index=cfg.n)
            shards.append(datasets.Dataset.from_list(rows, features=features))
            for k in stats:
                stats[k] += rstats[k]
        ds = datasets.concatenate_datasets(shards)
        num_shards = max(1, math.ceil(len(ds) / cfg.shard_size))
        ds.save_to_disk(str(tmp / "data"), num_shards=num_shards)
        vocab.save(tmp / "vocab.json")
        atomic_write_text(tmp / "tokenizers.json", json.dumps(refs, indent=2) + "\n")
        save_config(cfg, tmp / "build_config.json")
        card = _card(cfg, stats, table, refs, num_shards, vq.factor, time.time() - t0, photos)
        if cfg.sources:
            card.update(real_sources=real, holdout=list(cfg.holdout), n_total=len(ds))
        atomic_write_text(tmp / CARD, json.dumps(card, indent=2) + "\n")
        atomic_write_text(tmp / "README.md", card_markdown(card))
        write_record(tmp, record_tree(tmp), DATASET_FORMAT)  # last: sizes + SHA-256 of every file above
    return card


def card_markdown(card: dict) -> str:
    lines = [
        f"# xprompt task-suite dataset: split `{card['split']}`", "",
        (f"{card['n']} samples at {card['size']} px ({card['image_grid']}x{card['image_grid']} image tokens), "
        f"seed {card['seed']} ({card['seed_scheme']}), layout `{card['layout']}` with {card['num_xp']} XP tokens, "
        f"{card['num_shards']} shard(s). Tokens per sample: mean {card['tokens']['mean']:.0f}, "
        f"max {card['tokens']['max']}."), "",
        (f"Held out of this split: {', '.join(card['held_out']) or 'nothing'} "
        f"(keep_heldout_reverses={card['keep_heldout_reverses']}). RAIE pairing: {card['raie_pairing']}."), "",
        "Load: `datasets.load_from_disk(DIR + '/data')`; vocabulary: `Vocabulary.load(DIR + '/vocab.json')`.", "",
        *[f"Real source `{r['name']}`: `{r['path']}` (split `{r['split']}`, fingerprint `{r['fingerprint']}`): "
          f"{r['pairs']} pairs -> {r['samples']} samples" + (f", {r['dropped_add_remove']} add/remove edits "
          "dropped (held out)" if r["dropped_add_remove"] else "") + "." for r in card.get("real_sources", [])],
        "",
        "| task | samples |", "|---|---|", *[f"| {k} | {v} |" for k, v in card["tasks"].items()], "",
        "| family | samples |", "|---|---|", *[f"| {k} | {v} |" for k, v in card["families"].items()], "",
    ]  # fmt: skip
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ loading


def verify_dataset(path: Path) -> bool:
    """Check a built dataset's files against its ``integrity.json`` (False: built before checksums)."""
    what, fix = f"dataset {path}", "rebuild it with `xprompt data build --overwrite`"
    return verify(path, read_record(path, what, fix), what, fix)


def load_built(path: str | Path):
    """(datasets.Dataset, Vocabulary, card dict) of a built dataset directory."""
    import datasets

    from xprompt.tokenizer.vocab import Vocabulary

    p = Path(path)
    if not (p / CARD).is_file() or not (p / "data").is_dir():
        raise XPromptError(
            f"{p} is not an xprompt dataset (no {CARD} or data/); build one with `xprompt data build`"
        )
    verify_dataset(p)
    card = json.loads((p / CARD).read_text())
    return datasets.load_from_disk(str(p / "data")), Vocabulary.load(p / "vocab.json"), card


def row_to_sequence(row: dict):
    """A dataset row -> ``xprompt.sequence.TokenSequence`` (xp layout)."""
    from xprompt.sequence import TokenSequence

    return TokenSequence(np.asarray(row["input_ids"], np.int64), np.asarray(row["segs"], np.int8),
                         np.asarray(row["loss"], bool))  # fmt: skip


__all__ = [
    "FAMILIES",
    "BuildConfig",
    "DataMix",
    "build_dataset",
    "load_built",
    "row_to_sequence",
]

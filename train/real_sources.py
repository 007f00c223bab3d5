"""Real pairs in the pre-tokenized dataset: ``xprompt data build --source lol=PATH --source magicbrush=PATH``.

Design choices
* Only a dataset's **training split** is read (``RealDataset.train_split``; for a one-split set like
  InstructPix2Pix that split). A test-only copy (e.g. Rain100H's ``rain``/``norain`` folders) is refused:
  training on it would contaminate its evaluation.
* **Held-out protocol** (``train/heldout.py``): each set stands for a suite task (``SUITE_TASK``: LOL =
  low-light enhancement, Rain100H/L = derain, NYUv2 = depth, ADE20K = segmentation). A set whose task the
  split holds out is refused, so with the default ``train`` split LOL and Rain100 can only be evaluated
  (Table 4's novel tasks); ``--split full`` or ``no_<task>`` admits them. Edit sets mix edit types: when the
  split holds out object addition/removal, rows whose instruction starts with an add/remove verb
  (``ADD_REMOVE``, a keyword rule on the first words, counted in the card) are dropped. ``--holdout NAME``
  marks a set held out: it is then refused as a source whatever the split.
* **Samples per real pair** (all at ``--size``, centre-cropped like the suite's photos): the forward task
  with the dataset's instruction (dropped like the suite's with the mix's ``instruction_drop``) and, as its
  example, another training pair of the same set: drawn with the seed, or for edit sets the pair whose
  instruction is the nearest neighbour (RAIE, ``pairing.raie_pair``); the **reversed** task (input and
  target swapped in query and example: darken, add rain, depth/segmentation -> image; for edit sets the
  undo edit, with "Do the same to this image." since no instruction names it); and for low-level and edit
  sets a **difference description** (before, after -> text: the suite's difference text of the task, or the
  edit instruction itself, which names the change).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xprompt.errors import XPromptError
from xprompt.train.pairing import RawSample, raie_pair
from xprompt.train.tasks import SAME_AS_EXAMPLE, Pair

SUITE_TASK = {"lol": "low_light_enhance", "rain100h": "derain", "rain100l": "derain", "nyuv2": "depth",
              "ade20k": "segmentation"}  # fmt: skip
REVERSE = {
    "lowlevel": {
        "lol": "Darken this image.",
        "rain100h": "Add rain to this image.",
        "rain100l": "Add rain to this image.",
    },
    "depth": "Generate an image from this depth map.",
    "segmentation": "Generate an image from this segmentation map.",
}
DIFFERENCE = {"lol": "the image was brightened", "rain100h": "the rain streaks were removed",
              "rain100l": "the rain streaks were removed"}  # fmt: skip
DIFF_INSTRUCTION = "What changed between these two images?"
ADD_REMOVE = ("add", "put", "place", "insert", "include", "remove", "delete", "erase", "take away", "take out",
              "get rid of", "eliminate")  # fmt: skip
EDIT_HELDOUT = ("add_object", "remove_object")


@dataclass
class SourceSpec:
    name: str
    path: str


def open_sources(specs: list[str], holdout: list[str], excluded: list[str], columns: str = "",
                 depth_scale: float = 1000.0) -> list:  # fmt: skip
    """The readers of ``--source NAME=PATH`` specs, refusing held-out and test-only sets (one line each)."""
    from xprompt.readers import DATASETS, open_dataset, parse_spec

    unknown = [h for h in holdout if h not in DATASETS]
    if unknown:
        raise XPromptError(f"--holdout {unknown}: unknown dataset name(s); choose from {', '.join(DATASETS)}")
    out = []
    for spec in specs:
        name, path = parse_spec(spec, "--source")
        if name in holdout:
            raise XPromptError(f"--source {name} is marked held out (--holdout): it can only be evaluated")
        task = SUITE_TASK.get(name)
        if task and task in excluded:
            raise XPromptError(f"--source {name} is {task}, held out of this split (X-Prompt Table 4); "
                               f"build with --split full or a no_<task> split that keeps {task}")  # fmt: skip
        ds = open_dataset(name, path, columns=columns, depth_scale=depth_scale)
        if not ds.train_split:
            raise XPromptError(f"--source {name} {path}: no training split (a test-only copy); training on it "
                               "would contaminate its evaluation")  # fmt: skip
        out.append(ds)
    if len({d.name for d in out}) != len(out):
        raise XPromptError(f"a dataset is given twice in --source: {[d.name for d in out]}")
    return out


def _is_add_remove(instruction: str) -> bool:
    s = " ".join(instruction.lower().replace(",", " ").split())
    return s.startswith(ADD_REMOVE)


def _fit(img: np.ndarray, size: int) -> np.ndarray:
    from xprompt.tokenizer.image_io import fit_image

    return fit_image(img, size)


def load_pairs(ds, size: int, limit: int, excluded: list[str]) -> tuple[list, int]:
    """([(key, input, target, instruction)], rows dropped by the add/remove rule) of the training split."""
    keys = ds.keys(ds.train_split)
    keys = keys[:limit] if limit else keys
    drop_edits = ds.task == "edit" and any(t in excluded for t in EDIT_HELDOUT)
    out, dropped = [], 0
    for k in keys:
        p = ds.load(ds.train_split, k)
        if drop_edits and _is_add_remove(p.instruction):
            dropped += 1
            continue
        out.append((k, _fit(p.input, size), _fit(p.target, size), p.instruction))
    if len(out) < 2:
        raise XPromptError(f"--source {ds.name}: {len(out)} usable training pair(s); an in-context sample needs "
                           "at least two (one as the example)")  # fmt: skip
    return out, dropped


def real_samples(ds, pairs: list, *, seed: int, first_index: int, instruction_drop: float,
                 encoder=None) -> list[RawSample]:  # fmt: skip
    """Forward, reversed and difference samples of one dataset's pairs (see the module docstring)."""
    rng = np.random.default_rng([seed, 7, sum(map(ord, ds.name))])
    n = len(pairs)
    fam = "edit" if ds.task == "edit" else "real"
    params = lambda k: {"dataset": ds.name, "split": ds.train_split, "key": k}
    fwd = [Pair([x], y, source=ds.name) for _, x, y, _ in pairs]
    ex_idx = [(i + 1 + int(rng.integers(n - 1))) % n for i in range(n)]  # another pair, never itself
    out = []
    for i, (k, _, _, instr) in enumerate(pairs):
        shown = instr
        if instruction_drop and rng.random() < instruction_drop:
            shown = SAME_AS_EXAMPLE if rng.random() < 0.5 else ""
        out.append(RawSample(first_index + len(out), ds.name, fam, "i2i", shown, instr, params(k),
                             example=fwd[ex_idx[i]], query=fwd[i], example_task=ds.name,
                             example_instruction=pairs[ex_idx[i]][3]))  # fmt: skip
    forward = list(out)
    if fam == "edit":
        raie_pair(forward, encoder, seed=seed)  # each edit's example: the nearest other instruction's pair
    rev_instr = REVERSE.get(ds.task)
    rev_instr = rev_instr.get(ds.name) if isinstance(rev_instr, dict) else rev_instr
    for s in forward:
        ex = s.example
        rev = RawSample(first_index + len(out), f"{ds.name}_reverse", fam, "i2i", rev_instr or SAME_AS_EXAMPLE,
                        rev_instr or "", s.params, example=Pair([ex.output], ex.inputs[0], source=ds.name),
                        query=Pair([s.query.output], s.query.inputs[0], source=ds.name))  # fmt: skip
        out.append(rev)
    if fam == "edit" or ds.name in DIFFERENCE:
        for s in forward:
            text = DIFFERENCE.get(ds.name) or s.true_instruction
            ex_text = DIFFERENCE.get(ds.name) or s.example_instruction
            out.append(RawSample(first_index + len(out), f"{ds.name}_difference", "difference", "ii2t",
                                 DIFF_INSTRUCTION, DIFF_INSTRUCTION, s.params,
                                 example=Pair([s.example.inputs[0], s.example.output], ex_text, source=ds.name),
                                 query=Pair([s.query.inputs[0], s.query.output], text, source=ds.name)))  # fmt: skip
    return out


def build_real(
    cfg, vq, text_tok, vocab, encoder=None, first_index: int = 0
) -> tuple[list[dict], dict, list[dict]]:
    """(dataset rows, statistics like ``build._work``'s, one card entry per source) of ``cfg.sources``."""
    from xprompt.train.build import _row, new_stats, tokenize_chunk
    from xprompt.train.heldout import excluded_tasks

    excluded = excluded_tasks(cfg.split, cfg.keep_heldout_reverses, cfg.include_unseen)
    sets = open_sources(cfg.sources, cfg.holdout, excluded, cfg.columns, cfg.depth_scale)
    drop = cfg.data_mix().instruction_drop
    rows, info = [], []
    stats = new_stats()
    for ds in sets:
        pairs, dropped = load_pairs(ds, cfg.size, cfg.source_limit, excluded)
        raw = real_samples(ds, pairs, seed=cfg.seed, first_index=first_index + len(rows), instruction_drop=drop,
                           encoder=encoder)  # fmt: skip
        seqs, n_img = tokenize_chunk(raw, vq, vocab, text_tok)
        rows += [_row(s, q, cfg.seed, False) for s, q in zip(raw, seqs, strict=True)]
        stats["tasks"].update(s.task for s in raw)
        stats["families"].update(s.family for s in raw)
        stats["n_tok"] += [len(q) for q in seqs]
        stats["images"] += n_img
        info.append({**ds.describe(), "split": ds.train_split, "pairs": len(pairs), "samples": len(raw),
                     "dropped_add_remove": dropped})  # fmt: skip
    return rows, stats, info

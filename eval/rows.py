"""How a benchmark row's outputs are made: batched prompts, batched decoding, the RAIE row and the baselines.

Design choices
* Split from ``benchmarks.py``: everything that runs the model for a row lives here (the runner only decides
  which rows run with which examples). Instances go in batches of ``batch_size`` through
  ``xprompt.generation.generate_images`` (rows padded, one prefill per batch); each batch's sampling seed is
  derived from (run seed, task, row, batch) with ``SeedSequence``, so a row's outputs do not depend on which
  other rows or tasks run.
* Prompts are built like the pipeline's (``build_sample`` over ``XPrompt.encode`` / ``encode_examples``), so a
  benchmark row measures what a user of ``XPrompt`` gets; the ``raie`` row goes through ``XPrompt.edit`` itself.
* The masked rows (``xp-mask`` / ``xp-paste`` / ``xp-automask``) are ``eval/masked.py``'s; this module dispatches to them.
"""

from __future__ import annotations

import numpy as np

from xprompt.eval.eval_config import MASK_ROWS, EvalConfig
from xprompt.eval.items import Item
from xprompt.eval.masked import AUTO_ROW, CHANGED_ROW, PASTE_ROW, masked_batch, masked_raie


def batch_ranges(n: int, size: int) -> list[range]:
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


def row_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] % (2**31 - 1))


def build_prompts(pipe, items: list[Item], row_mode: str, examples: list, *, t2i: bool = False):
    """The generation prompts (``TokenSequence`` without the answer) and answer sizes in codes for ``items``."""
    from xprompt.sequence import build_sample

    seqs, sizes = [], []
    side = max(1, pipe.image_size // int(pipe.image_tok.factor))
    for item, ex in zip(items, examples, strict=True):
        if t2i:
            from xprompt.pipeline import T2I_INSTRUCTION

            seqs.append(build_sample(pipe.vocab, pipe.text_tok, mode="none", instruction=T2I_INSTRUCTION,
                                     query=item.query))  # fmt: skip
            sizes.append((side, side))
            continue
        codes_ex = pipe.encode_examples([ex]) if row_mode != "none" else []
        q = pipe.encode(item.query)  # (h, w)
        seqs.append(build_sample(pipe.vocab, pipe.text_tok, mode=row_mode, instruction=item.instruction,
                                 examples=codes_ex, query=q))  # fmt: skip
        sizes.append(tuple(q.shape))
    return seqs, sizes


def guidance(cfg: EvalConfig) -> dict:
    """The generated rows' guidance (``XPrompt.generate``'s ``cfg_scale`` / ``cfg_ref``)."""
    return {"cfg_scale": cfg.cfg_scale, "cfg_ref": cfg.cfg_ref}


def query_refs(pipe, items: list[Item], cfg_ref: str) -> list | None:
    """``generate_images``' ``uncond`` for ``cfg_ref`` (``XPrompt._refs``) from the items' queries."""
    if cfg_ref == "empty":
        return None
    return pipe._refs(cfg_ref, [pipe.encode(it.query) for it in items], [it.instruction for it in items])


def generate_batch(pipe, items: list[Item], row_mode: str, examples: list, *, seed: int, greedy: bool,
                   t2i: bool = False, cfg_scale: float = 1.0, cfg_ref: str = "empty") -> list[np.ndarray]:  # fmt: skip
    """One batched decode for ``items`` under ``row_mode`` (none / full / xp) with per-item ``examples``."""
    from xprompt.generation import generate_images

    seqs, sizes = build_prompts(pipe, items, row_mode, examples, t2i=t2i)
    sampling = pipe.sampling_config(seed, greedy, None, 1.0, cfg_scale, 2000 if t2i else 200)
    codes = generate_images(pipe.model, pipe.vocab, seqs, sizes, sampling, progress=False,
                            uncond=query_refs(pipe, items, cfg_ref))  # fmt: skip
    return [pipe.decode(c) for c in codes]


def generated_row(pipe, cfg: EvalConfig, row: str, items: list[Item], examples: list, mode: str, at: tuple,
                  greedy: bool, t2i: bool, store, bar) -> list[np.ndarray]:  # fmt: skip
    """One generated row of a task, batch by batch (seeded by task/row/batch ``at + (bi,)``)."""
    out: list[np.ndarray] = []
    for bi, rng_ in enumerate(batch_ranges(len(items), cfg.batch_size)):
        batch, ex, sd = [items[i] for i in rng_], [examples[i] for i in rng_], row_seed(cfg.seed, *at, bi)
        how = {
            "paste": row == PASTE_ROW,
            "auto": row == AUTO_ROW,
            "blend": "changed" if row == CHANGED_ROW else "mask",
        }
        if row in MASK_ROWS and cfg.benchmark == "raie":
            out += masked_raie(pipe, store, batch, mode, seed=sd, greedy=greedy, **how, **guidance(cfg))
        elif row in MASK_ROWS:
            out += masked_batch(pipe, batch, mode, ex, seed=sd, greedy=greedy, **how, **guidance(cfg))
        else:
            out += generate_batch(pipe, batch, mode, ex, seed=sd, greedy=greedy, t2i=t2i, **guidance(cfg))
        bar.update(1)
    return out


def raie_row(
    pipe, store, items: list[Item], mode: str, batch_size: int, seeds: list[int], greedy: bool, bar,
    guide: dict | None = None,
) -> tuple[list[np.ndarray], list[dict], list]:  # fmt: skip
    """The ``raie`` row through ``XPrompt.edit`` (k=1), one batch per seed: the outputs, what was retrieved for
    each item (instruction, task, score) and the retrieved pairs."""
    res = []
    for bi, rng_ in enumerate(batch_ranges(len(items), batch_size)):
        res += pipe.edit(
            [items[i].query for i in rng_],
            [items[i].instruction for i in rng_],
            store=store,
            k=1,
            mode=mode,
            seed=seeds[bi],
            greedy=greedy,
            keep_model_size=True,  # scored against items at the model's size
            **(guide or {}),
        )
        bar.update(1)
    retrieved = [{"instruction": r.retrieved[0].instruction, "task": r.retrieved[0].task,
                  "score": r.retrieved[0].score} for r in res]  # fmt: skip
    return [r.image for r in res], retrieved, [r.pairs[0] for r in res]


def baseline_preds(pipe, items: list[Item], t2i: bool) -> dict[str, list[np.ndarray]]:
    """The rows every benchmark adds: ``copy`` (the query; ``gt``, the render, for t2i) and ``vq``."""
    preds = {"gt": [it.target for it in items]} if t2i else {"copy": [it.query for it in items]}
    preds["vq"] = [pipe.decode(pipe.encode(it.target)) for it in items]
    return preds

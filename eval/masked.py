"""The masked evaluation row ``xp-mask`` (issue 17: mask-guided editing) and its in/out-of-mask metrics.

Design choices
* **The mask** of an item is the ground-truth change region, which the procedural suite knows exactly: the
  pixels where query and ground truth differ (``metrics.changed_mask``, the same tolerance as
  ``changed_psnr``), as a box around them grown by ``margin`` px (default size/16, clipped to the image): a
  user's box, not a pixel-exact cut-out. An item whose ground truth changes nothing gets the whole image.
* **The row**: ``raie`` runs ``XPrompt.edit(..., mask=)`` (retrieved example, as the ``raie`` row); ``unseen`` /
  ``seen`` run the item's own example pair in the example mode (as ``xp``), through the same mask-constrained
  decoding and blending (``xprompt.edit_mask``, ``MaskedGrid``). Only the masked tokens are decoded.
* ``xp-paste`` is what the issue proposes to beat: the same example, decoded without the constraint, then
  blended with the same mask and feather (regenerate-and-paste, as BrushEdit composites). Both rows keep every
  pixel outside the mask; only the inside differs.
* ``xp-automask`` is ``xp-mask`` with the mask a user gets without drawing one: ``xprompt.instruction_mask``
  reads the instruction, finds the named object in the query with the scene detector and masks the region the
  edit changes (``XPrompt.edit(..., mask_from_instruction=True)``). Next to the oracle row it shows what the
  ground-truth box is worth over the instruction's own. An item whose instruction gives no mask (not a scene
  edit, object not found) is decoded whole, with a warning naming how many.
* ``xp-changed`` is ``xp-mask`` (same decode, same mask) blended with ``blend="changed"``: the decoded pixels
  only where the model changed the query's tokens (grown by one token), the query's exact pixels where it
  kept them (``xprompt.edit_mask``). Next to ``xp-mask`` it shows what the VQ round trip of kept tokens costs.
* **Metrics** (added to every task's list when the row is requested, for every row, so the baselines are
  comparable): ``psnr_in`` / ``psnr_out`` (PSNR against the ground truth inside / outside that mask; outside it
  the ground truth is the query, so ``psnr_out`` measures damage to what should stay) and ``out_same`` (the
  fraction of outside pixels bit-identical to the query: 1.0 is the issue's "outside equals the input").
"""

from __future__ import annotations

import numpy as np

from xprompt.errors import XPromptError
from xprompt.eval import metrics as M

MASK_ROW = "xp-mask"
PASTE_ROW = (
    "xp-paste"  # the regenerate-and-paste comparison: unconstrained decoding, blended with the same mask
)
AUTO_ROW = "xp-automask"  # the mask from the instruction's named object (xprompt.instruction_mask)
CHANGED_ROW = "xp-changed"  # xp-mask with the "changed" blend (only the tokens the model changed)
MASK_ROWS = (MASK_ROW, PASTE_ROW, AUTO_ROW, CHANGED_ROW)
MASK_METRICS = ("psnr_in", "psnr_out", "out_same")


def change_box_mask(query: np.ndarray, target: np.ndarray, margin: int | None = None) -> np.ndarray:
    """bool (H, W): the bounding box of the query -> target change, grown by ``margin`` px (whole image if none)."""
    changed = M.changed_mask(query, target)  # (H, W)
    h, w = changed.shape
    if not changed.any():
        return np.ones((h, w), bool)
    margin = max(1, max(h, w) // 16) if margin is None else int(margin)
    ys, xs = np.nonzero(changed)
    m = np.zeros((h, w), bool)
    m[
        max(0, ys.min() - margin) : ys.max() + 1 + margin, max(0, xs.min() - margin) : xs.max() + 1 + margin
    ] = True
    return m


def item_mask(item) -> np.ndarray:
    return change_box_mask(item.query, item.target)


def auto_masks(items) -> list[np.ndarray]:
    """The ``xp-automask`` masks: each item's instruction mask, the whole image where there is none."""
    from xprompt.errors import xprompt_warn
    from xprompt.instruction_mask import instruction_mask

    out, miss = [], 0
    for it in items:
        try:
            out.append(instruction_mask(it.query, it.instruction))
        except XPromptError:
            out.append(np.ones(it.query.shape[:2], bool))
            miss += 1
    if miss:
        xprompt_warn(
            f"{AUTO_ROW}: no instruction mask for {miss} of {len(items)} {items[0].task} items (not a scene edit "
            "or the object not found); they are decoded whole"
        )
    return out


def automask_coverage(task: str, n: int, size: int = 64, seed: int = 0) -> dict:
    """How the instruction masks of ``n`` task-suite evaluation instances (``make_eval_instances``, the eval's
    own) compare with the ground truth: ``found`` (fraction with a mask), ``coverage`` (mean fraction of the
    changed pixels inside the mask; a miss counts 0), ``full`` (fraction of instances covered completely),
    ``min_coverage``, ``iou_oracle`` (IoU with ``xp-mask``'s change box), ``area`` and ``oracle_area`` (mean
    fraction of the image masked)."""
    from xprompt.instruction_mask import instruction_mask
    from xprompt.train.tasks import make_eval_instances

    cover, iou, area, oracle_area = [], [], [], []
    for inst in make_eval_instances(task, n, size, seed):
        changed = M.changed_mask(inst.query, inst.target)  # (H, W)
        oracle = change_box_mask(inst.query, inst.target)
        oracle_area.append(float(oracle.mean()))
        try:
            m = instruction_mask(inst.query, inst.instruction)
        except XPromptError:
            cover.append(0.0)
            iou.append(0.0)
            continue
        cover.append(float((m & changed).sum() / changed.sum()) if changed.any() else 1.0)
        iou.append(float((m & oracle).sum() / (m | oracle).sum()))
        area.append(float(m.mean()))
    c = np.asarray(cover)
    return {
        "task": task, "n": n, "size": size, "seed": seed, "found": len(area) / max(1, n),
        "coverage": float(c.mean()), "full": float((c >= 1.0).mean()), "min_coverage": float(c.min()),
        "iou_oracle": float(np.mean(iou)), "area": float(np.mean(area)) if area else 0.0,
        "oracle_area": float(np.mean(oracle_area)),
    }  # fmt: skip


def _in_out(s, inside: bool):
    m = item_mask(s.item)
    if m.shape != s.gt.shape[:2]:
        return M.Unavailable("mask size differs")
    return M.psnr(s.pred, s.gt, m if inside else ~m)


def _out_same(s):
    m = ~item_mask(s.item)
    if not m.any():
        return M.EMPTY_REGION
    return float((s.pred[m] == s.query[m]).all(axis=-1).mean())


METRIC_FUNCS = {
    "psnr_in": lambda s: _in_out(s, True),
    "psnr_out": lambda s: _in_out(s, False),
    "out_same": _out_same,
}


def masked_batch(
    pipe,
    items,
    mode: str,
    examples: list,
    *,
    seed: int,
    greedy: bool,
    paste: bool = False,
    auto: bool = False,
    blend: str = "mask",
    cfg_scale: float = 1.0,
    cfg_ref: str = "empty",
) -> list[np.ndarray]:
    """One batched mask-constrained decode of ``items`` (their own ``examples``, context ``mode``), blended;
    ``paste``: decode without the constraint, then blend (the regenerate-and-paste comparison); ``auto``: the
    instruction masks (``xp-automask``) instead of the change boxes; ``blend``, ``cfg_scale``, ``cfg_ref``: as
    ``XPrompt.generate``'s."""
    from xprompt.eval.rows import build_prompts
    from xprompt.generation import generate_images

    seqs, sizes = build_prompts(pipe, items, mode, examples)
    masks = auto_masks(items) if auto else [item_mask(it) for it in items]
    q = pipe._queries([it.query for it in items], masks)  # the pipeline's own masks, keep and blend
    for f, m in zip(q.fitted, masks, strict=True):
        if f.shape[:2] != m.shape:
            raise XPromptError(
                f"the masked row needs items at the model's image size ({f.shape[:2]}, {m.shape})"
            )
    sampling = pipe.sampling_config(seed, greedy, None, 1.0, cfg_scale, 200)
    refs = pipe._refs(cfg_ref, q.codes, [it.instruction for it in items])
    codes = generate_images(pipe.model, pipe.vocab, seqs, sizes, sampling, progress=False,
                            keep=None if paste else q.keep(), uncond=refs)  # fmt: skip
    return pipe._finish(codes, q, 2, keep_model_size=True, blend=blend)


def masked_raie(
    pipe, store, items, mode: str, *, seed: int, greedy: bool, paste: bool = False, auto: bool = False,
    blend: str = "mask", cfg_scale: float = 1.0, cfg_ref: str = "empty",
) -> list[np.ndarray]:  # fmt: skip
    """The RAIE flow (k=1 retrieval) with each item's change-box mask (``paste``: decoded without the
    constraint, then blended with the mask; ``auto``: with the instruction masks; ``blend``, ``cfg_scale``,
    ``cfg_ref``: as ``edit``'s)."""
    from xprompt.edit_mask import blend as composite

    guide = {"cfg_scale": cfg_scale, "cfg_ref": cfg_ref}

    if paste:
        res = pipe.edit([it.query for it in items], [it.instruction for it in items], store=store, k=1,
                        mode=mode, seed=seed, greedy=greedy, keep_model_size=True, **guide)  # fmt: skip
        return [
            composite(pipe.fit(it.query), r.image, item_mask(it)) for it, r in zip(items, res, strict=True)
        ]
    res = pipe.edit(
        [it.query for it in items],
        [it.instruction for it in items],
        store=store,
        k=1,
        mode=mode,
        seed=seed,
        greedy=greedy,
        mask=auto_masks(items) if auto else [item_mask(it) for it in items],
        blend=blend,
        keep_model_size=True,
        **guide,
    )
    return [r.image for r in res]

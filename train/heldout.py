"""The held-out protocol (X-Prompt Table 4 and Table 5): which tasks a training split may produce.

Design choices (documented in one place: docs/tasks.md "Held-out protocol"):
- ``HELDOUT_FORWARD``: the forward directions removed from training in the paper's novel-task study: derain,
  low-light enhancement, object addition, object removal, depth in the reserved palette.
- ``NEVER_TRAIN``: inpainting and colorization (Table 5) are excluded from every training split, "full"
  included, unless ``include_unseen=True`` is asked for explicitly.
- Reverses of held-out tasks (add rain, darken, depth-reserved -> image) are **also removed by default**
  (``keep_heldout_reverses=False``): a reverse pair is the same image pair swapped, so keeping it shows the
  model every (clean, rainy) correspondence and the reserved palette itself, which would make the "novel
  task" claim hollow. ``keep_heldout_reverses=True`` restores them (the paper's wording, "remove the training
  of generating derained images", is compatible with either). add_object and remove_object are each other's
  reverse and both held out, so they stay out either way.
- Split names: ``train`` (all five held out), ``full`` (upper bound: nothing held out), ``no_<task>`` (only that
  one held out, for per-task ablations), ``eval`` (every task, evaluation photographs only).
- The difference-description task only describes tasks of the split, and RAIE pairing only pairs within the
  split's samples, so a held-out task cannot leak in through them.
"""

from __future__ import annotations

from xprompt.errors import XPromptError

HELDOUT_FORWARD: tuple[str, ...] = (
    "derain",
    "low_light_enhance",
    "add_object",
    "remove_object",
    "depth_reserved",
)
NEVER_TRAIN: tuple[str, ...] = ("inpainting", "colorization")
SPLITS: dict[str, tuple[str, ...]] = {
    "train": HELDOUT_FORWARD,
    "full": (),
    **{f"no_{t}": (t,) for t in HELDOUT_FORWARD},
    "eval": (),
}
TRAINING_SPLITS = tuple(s for s in SPLITS if s != "eval")


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise XPromptError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def excluded_tasks(
    split: str, keep_heldout_reverses: bool = False, include_unseen: bool = False
) -> list[str]:
    """Task names a split must never produce (as a sample's task, its example's task or a described source)."""
    from xprompt.train.tasks import all_tasks

    check_split(split)
    if split == "eval":
        return []
    tasks = all_tasks()
    out = set(SPLITS[split])
    if not keep_heldout_reverses:
        out |= {tasks[t].reverse for t in SPLITS[split] if tasks[t].reverse}
    if not include_unseen:
        out |= {n for n, t in tasks.items() if t.never_train}
    return sorted(out)


def split_tasks(split: str, keep_heldout_reverses: bool = False, include_unseen: bool = False) -> list[str]:
    """Task names a split may produce, sorted."""
    from xprompt.train.tasks import all_tasks

    ex = set(excluded_tasks(split, keep_heldout_reverses, include_unseen))
    return sorted(n for n in all_tasks() if n not in ex)

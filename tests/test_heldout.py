"""The held-out protocol: no training split can produce a held-out task, in any role."""

import numpy as np
import pytest

from xprompt.errors import XPromptError
from xprompt.train import sources
from xprompt.train.build import BuildConfig, draw_group_at, task_table
from xprompt.train.heldout import (
    HELDOUT_FORWARD,
    NEVER_TRAIN,
    SPLITS,
    TRAINING_SPLITS,
    excluded_tasks,
    split_tasks,
)
from xprompt.train.tasks import all_tasks, get_task


def test_table4_and_table5_tasks_exist():
    tasks = all_tasks()
    assert set(HELDOUT_FORWARD) <= set(tasks) and set(NEVER_TRAIN) <= set(tasks)
    assert set(excluded_tasks("train")) >= set(HELDOUT_FORWARD) | set(NEVER_TRAIN)


@pytest.mark.parametrize("split", TRAINING_SPLITS)
@pytest.mark.parametrize("keep", [False, True])
def test_split_structurally_held_out(split, keep):
    ex = set(excluded_tasks(split, keep_heldout_reverses=keep))
    assert set(SPLITS[split]) <= ex and set(NEVER_TRAIN) <= ex
    allowed, cands, probs = task_table(BuildConfig(split=split, keep_heldout_reverses=keep))
    assert not set(cands) & ex and not set(allowed) & ex
    assert len(cands) == len(probs) and np.isclose(probs.sum(), 1)
    # the difference task only ever describes allowed tasks
    diff = get_task("difference").sample_params(np.random.default_rng(0), allowed)
    assert diff["sources"] and not set(diff["sources"]) & ex


def test_reverse_flag():
    tasks = all_tasks()
    strict, loose = set(excluded_tasks("train")), set(excluded_tasks("train", keep_heldout_reverses=True))
    for t in HELDOUT_FORWARD:
        assert tasks[t].reverse in strict  # default: reverses removed too
    assert {"add_rain", "darken", "depth_reserved_to_image"} <= strict - loose
    assert {"add_object", "remove_object"} <= loose  # each other's reverse, both held out


def test_full_and_unseen():
    assert set(excluded_tasks("full")) == set(NEVER_TRAIN)
    assert excluded_tasks("full", include_unseen=True) == []
    assert set(HELDOUT_FORWARD) <= set(split_tasks("full"))
    assert excluded_tasks("eval") == []
    with pytest.raises(XPromptError, match="unknown split"):
        excluded_tasks("holdout")


def test_requesting_a_held_out_task_is_refused():
    with pytest.raises(XPromptError, match="held out"):
        task_table(BuildConfig(split="train", tasks=["derain"]))
    with pytest.raises(XPromptError, match="held out"):
        task_table(BuildConfig(split="full", tasks=["colorization"]))
    with pytest.raises(XPromptError, match="unknown task"):
        task_table(BuildConfig(split="train", tasks=["nope"]))


def test_sampled_training_data_never_contains_held_out(monkeypatch):
    seen = []
    real = sources._load_rgb
    monkeypatch.setattr(sources, "_load_rgb", lambda p, cap=False: seen.append(p) or real(p, cap))
    cfg = BuildConfig(split="train", n=600, seed=3)
    ex = set(excluded_tasks("train"))
    table = task_table(cfg)
    produced = set()
    for g in range(cfg.n // cfg.group_size):
        for s in draw_group_at(cfg, g, table):
            roles = {s.task, s.example_task, *s.described}
            assert not roles & ex, roles
            produced |= roles
    assert len(produced) > 20  # the check covered most of the suite
    assert not set(seen) & set(sources.photo_names("eval"))  # evaluation photographs never used

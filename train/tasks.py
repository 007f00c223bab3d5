"""The Omni task suite: task objects, the registry, content sources and eval instances.

Design choices:
- A ``Task`` turns (rng, instance params, size, split) into one ``Pair`` (inputs -> output). The *instance
  params* (a palette map, a noise level, the object to add ...) are drawn once per sample with
  ``sample_params`` and shared by the in-context example and the query, so only the example reveals which
  instance is meant; the *content* (which scene or photo crop) is drawn per pair.
- Kinds: ``i2i`` (image -> image), ``t2i`` (caption -> image), ``i2t`` (image -> caption), ``ii2t`` ((before,
  after) -> difference text).
- Every task has >= 5 instruction templates (formatted with ``template_values(params)``), a ``difference``
  text (what changed, used by the difference-description task), ``reverse`` (the task with input and output
  swapped, a task of its own in the registry, or itself when the family is closed under inversion, e.g. recolour)
  and ``base`` (the forward task it is a direction of), which the held-out protocol uses.
- ``never_train`` tasks (inpainting, colorization) exist for evaluation only; ``train/heldout.py`` excludes them.
- Family modules (``tasks_dense``, ``tasks_lowlevel``, ``tasks_edit``, ``tasks_style``, ``tasks_text``) register
  their tasks on import; ``all_tasks()`` imports them all.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xprompt.errors import XPromptError

KINDS = ("i2i", "t2i", "i2t", "ii2t")
FAMILIES = (
    "dense", "controllable", "lowlevel", "degrade", "edit", "style", "geometric", "t2i", "caption",
    "difference", "unseen",
)  # fmt: skip
SAME_AS_EXAMPLE = "Do the same to this image."


@dataclass
class Pair:
    """One (inputs -> output) pair. Images are uint8 (size, size, 3); text is str."""

    inputs: list[Any]
    output: Any
    scene_before: dict | None = None  # scene graph of the input (procedural content), if any
    scene_after: dict | None = None  # scene graph of the output, if any
    source: str = ""  # "scene" | "photo" | "field"


@dataclass
class Instance:
    """A fixed evaluation instance: one example pair, a query and its ground-truth target."""

    task: str
    family: str
    kind: str
    instruction: str
    params: dict
    example_inputs: list[Any]
    example_output: Any
    query_inputs: list[Any]
    target: Any  # uint8 image or text
    scene_before: dict | None = None  # query's scene graph (for edit-success checks)
    scene_after: dict | None = None  # target's scene graph
    example_scene_before: dict | None = None
    example_scene_after: dict | None = None
    seed: int = 0

    @property
    def example_input(self):
        return self.example_inputs[0]

    @property
    def query(self):
        return self.query_inputs[0]


@dataclass
class Task:
    name: str
    family: str
    kind: str
    instructions: tuple[str, ...]
    difference_text: str  # template, formatted like the instructions
    gen: Callable[..., Pair]  # gen(rng, params, size, split) -> Pair (forward direction)
    params_fn: Callable[[np.random.Generator], dict] = field(default=lambda rng: {})
    values_fn: Callable[[dict], dict] = field(default=lambda p: {})
    reverse: str | None = None
    base: str = ""  # forward task this is a direction of ("" = itself)
    never_train: bool = False
    needs_allowed: bool = False  # params_fn(rng, allowed_task_names) (the difference task draws its sources)
    swap: bool = False  # produce gen's output -> input (the reverse direction of an i2i generator)

    def __post_init__(self):
        if self.kind not in KINDS or self.family not in FAMILIES:
            raise ValueError(f"task {self.name}: bad kind {self.kind!r} or family {self.family!r}")
        if len(self.instructions) < 5:
            raise ValueError(f"task {self.name}: needs >= 5 instruction paraphrases")
        if not self.base:
            self.base = self.name

    def sample_params(self, rng: np.random.Generator, allowed: list[str] | None = None) -> dict:
        """Draw the instance parameters; ``allowed`` (task names of the split) matters only for
        ``needs_allowed`` tasks, default: every task that is not ``never_train``."""
        if self.needs_allowed:
            if allowed is None:
                allowed = [n for n, t in all_tasks().items() if not t.never_train]
            return self.params_fn(rng, allowed)
        return self.params_fn(rng)

    def template_values(self, params: dict) -> dict:
        return self.values_fn(params)

    def make_pair(self, rng: np.random.Generator, params: dict, size: int, split: str = "train") -> Pair:
        check_size(size)
        pair = self.gen(rng, params, size, split)
        if self.swap:
            if len(pair.inputs) != 1 or isinstance(pair.output, str):
                raise ValueError(f"task {self.name}: only single-image i2i generators can be swapped")
            pair = Pair([pair.output], pair.inputs[0], pair.scene_after, pair.scene_before, pair.source)
        return pair

    def instruction(
        self, params: dict, rng: np.random.Generator | None = None, index: int | None = None
    ) -> str:
        """One instruction paraphrase (random with ``rng``, else ``index`` or the first)."""
        i = int(rng.integers(len(self.instructions))) if rng is not None else (index or 0)
        return self.instructions[i % len(self.instructions)].format(**self.template_values(params))

    def all_instructions(self, params: dict) -> list[str]:
        vals = self.template_values(params)
        return [t.format(**vals) for t in self.instructions]

    def difference(self, params: dict) -> str:
        return self.difference_text.format(**self.template_values(params))

    def info(self) -> dict:
        return {
            "name": self.name, "family": self.family, "kind": self.kind, "reverse": self.reverse,
            "base": self.base, "never_train": self.never_train, "instructions": list(self.instructions),
            "difference": self.difference_text,
        }  # fmt: skip


_REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    if task.name in _REGISTRY:
        raise ValueError(f"task {task.name} registered twice")
    _REGISTRY[task.name] = task
    return task


def register_pair(
    forward: Task, reverse_name: str | None, reverse_family: str, reverse_instructions, reverse_difference
) -> tuple[Task, Task | None]:
    """Register an i2i task and (optionally) its swapped reverse, which shares the generator and params."""
    register(forward)
    if reverse_name is None:
        return forward, None
    forward.reverse = reverse_name
    rev = dataclasses.replace(
        forward, name=reverse_name, family=reverse_family, instructions=tuple(reverse_instructions),
        difference_text=reverse_difference, reverse=forward.name, base=forward.name, swap=not forward.swap,
    )  # fmt: skip
    return forward, register(rev)


def _load_families() -> None:
    from xprompt.train import tasks_dense, tasks_edit, tasks_lowlevel, tasks_style, tasks_text  # noqa: F401


def all_tasks() -> dict[str, Task]:
    _load_families()
    return dict(_REGISTRY)


def get_task(name: str) -> Task:
    tasks = all_tasks()
    if name not in tasks:
        raise XPromptError(f"unknown task {name!r}; known tasks: {', '.join(sorted(tasks))}")
    return tasks[name]


def check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or size < 16 or size % 8:
        raise XPromptError(f"image size must be a multiple of 8 and >= 16, got {size!r}")


# ------------------------------------------------------------------------------------------ content


def content_image(
    rng: np.random.Generator, size: int, split: str, source: str = "any"
) -> tuple[np.ndarray, dict | None, str]:
    """A content image: a procedural scene or a photo crop (``split`` picks train/eval photos).
    Returns (uint8 (size, size, 3), scene dict or None, source name)."""
    from xprompt.train import scenes, sources

    if source == "any":
        source = "scene" if rng.random() < 0.5 else "photo"
    if source == "scene":
        sc = scenes.random_scene(rng)
        return scenes.render(sc, size), sc.to_dict(), "scene"
    return sources.photo_crop(rng, size, split="eval" if split == "eval" else "train"), None, "photo"


def choice(rng: np.random.Generator, seq):
    return seq[int(rng.integers(len(seq)))]


def params_json(params: dict) -> str:
    return json.dumps(
        params, sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)
    )


# ------------------------------------------------------------------------------------ eval instances


def make_instance(task: Task, rng: np.random.Generator, size: int, split: str, seed: int = 0) -> Instance:
    """One instance: params drawn once, example and query drawn with different content."""
    params = task.sample_params(rng)
    ex = task.make_pair(rng, params, size, split)
    q = task.make_pair(rng, params, size, split)
    return Instance(
        task=task.name, family=task.family, kind=task.kind, instruction=task.instruction(params, rng),
        params=params, example_inputs=ex.inputs, example_output=ex.output, query_inputs=q.inputs, target=q.output,
        scene_before=q.scene_before, scene_after=q.scene_after, example_scene_before=ex.scene_before,
        example_scene_after=ex.scene_after, seed=seed,
    )  # fmt: skip


def make_eval_instances(task_name: str, n: int, size: int, seed: int = 0) -> list[Instance]:
    """A fixed, seeded list of ``n`` evaluation instances of ``task_name`` at ``size`` px.

    Content comes from the eval photographs (never used in training) and from scenes drawn from a seed stream
    disjoint from the build's (``SeedSequence([seed, 1, i])``). Deterministic: same arguments, same instances.
    """
    task = get_task(task_name)
    check_size(size)
    if n < 0:
        raise XPromptError(f"n must be >= 0, got {n}")
    out = []
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1, i]))
        out.append(make_instance(task, rng, size, "eval", seed=seed))
    return out

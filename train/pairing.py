"""In-context pairing: turn a task into one raw training sample (example pair + query pair), and the optional
RAIE pairing of edit samples by instruction similarity.

Design choices:
- ``draw_sample`` draws the instance parameters ONCE and two pairs with them: the example and the query use
  the same task instance on different content (the rng stream moves on between them). So only the example
  reveals a random palette map, a noise level or the object to add.
- ``draw_group`` makes k samples of one instance from k pairs, rotating roles (sample j: query pair j,
  example pair j+1). Every pair is a loss target exactly once and an example once, and image encoding --
  the dominant build cost -- halves, because each pair is encoded once for two samples.
- The instruction is dropped with probability ``instruction_drop``: half of the dropped samples say
  ``"Do the same to this image."``, the other half have no instruction at all. The true instruction is kept
  (``true_instruction``) for RAIE retrieval and for the eval split.
- ``n_examples > 1`` (the data mix's ``multi_example``): a sample shows 2-3 examples of its instance before the
  query (X-Prompt allows several); with the loss on the examples' outputs (``loss_on_examples``) every later
  example is itself a target that the earlier ones explain, which rewards reading them.
- ``draw_contrast_group`` (the data mix's ``contrast``): two samples with the SAME query image but two
  different instances of the task (two palettes, two flips, two noise levels), each with its own example and
  no instruction. Their answers differ, and only the example tells them apart: the model cannot lower its loss
  on these without reading the example (DESIGN.md, "what makes in-context learning learnable").
- RAIE (X-Prompt Sec. 3.3 / 4.3): with ``raie_pairing`` an edit sample's example becomes the query pair of the
  sample whose instruction is its nearest neighbour (cosine of text embeddings, excluding itself and exact
  duplicates; ``xprompt.retrieval.pairing.nearest_neighbours``). The search runs within one build chunk (a few
  hundred samples of the same split), so it can never pair across splits; samples with no neighbour keep
  their same-instance example. The hook is optional: builds without it need no retrieval code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from xprompt.train.tasks import SAME_AS_EXAMPLE, Pair, Task, params_json

RAIE_FAMILIES = ("edit",)
# changes a drawn task instance's parameters (e.g. a random depth palette)
Remap = Callable[[Task, dict], dict]


@dataclass
class RawSample:
    """One sample before tokenization."""

    index: int
    task: str
    family: str
    kind: str
    instruction: str  # what goes into the sequence ("" = none)
    true_instruction: str
    params: dict
    example: Pair
    query: Pair
    example_task: str = ""
    example_instruction: str = ""
    described: list[str] = field(default_factory=list)  # tasks shown inside the pairs (difference sources)
    more_examples: list[Pair] = field(default_factory=list)  # further examples of the same instance, in order

    def __post_init__(self):
        self.example_task = self.example_task or self.task
        self.example_instruction = self.example_instruction or self.true_instruction
        self.described = [p.source for p in (self.example, self.query) if self.kind == "ii2t"]


def _instruction(task: Task, params: dict, rng: np.random.Generator, drop: float) -> tuple[str, str]:
    """(instruction used in the sequence, true instruction)."""
    true = task.instruction(params, rng)
    if drop > 0 and rng.random() < drop:
        return (SAME_AS_EXAMPLE if rng.random() < 0.5 else ""), true
    return true, true


def draw_sample(
    task: Task,
    rng: np.random.Generator,
    size: int,
    split: str,
    *,
    index: int = 0,
    allowed: list[str] | None = None,
    instruction_drop: float = 0.0,
) -> RawSample:
    """Draw one instance of ``task`` and an (example, query) pair of it on different content."""
    return draw_group(task, rng, size, split, k=1, first_index=index, allowed=allowed,
                      instruction_drop=instruction_drop)[0]  # fmt: skip


def draw_group(
    task: Task,
    rng: np.random.Generator,
    size: int,
    split: str,
    *,
    k: int = 2,
    first_index: int = 0,
    allowed: list[str] | None = None,
    instruction_drop: float = 0.0,
    sample_rngs: list[np.random.Generator] | None = None,
    n_examples: int = 1,
    remap: Remap | None = None,
) -> list[RawSample]:
    """``k`` samples of ONE task instance from n = max(k, n_examples + 1) pairs on different content: sample j
    queries pair j with pairs (j + 1) .. (j + n_examples) mod n as its examples. Each pair is the query (with
    the loss) of at most one sample and an example of others, so a group of k costs n pairs (and n pairs of
    image encodings) instead of k (n_examples + 1). ``sample_rngs[j]`` (default: ``rng``) draws sample j's
    instruction paraphrase and instruction drop. ``n_examples = 1`` draws exactly what it always drew.
    ``remap(task, params)`` may change the drawn instance (with its own rng, so ``rng`` draws the same pairs)."""
    if n_examples < 1:
        raise ValueError(f"n_examples must be >= 1, got {n_examples}")
    params = task.sample_params(rng, allowed)
    if remap is not None:
        params = remap(task, params)
    pairs = [task.make_pair(rng, params, size, split) for _ in range(max(k, 2, n_examples + 1))]
    out = []
    for j in range(k):
        r = sample_rngs[j] if sample_rngs is not None else rng
        instr, true = _instruction(task, params, r, instruction_drop)
        examples = [pairs[(j + e) % len(pairs)] for e in range(1, n_examples + 1)]
        out.append(RawSample(first_index + j, task.name, task.family, task.kind, instr, true, params,
                             example=examples[0], query=pairs[j], more_examples=examples[1:]))  # fmt: skip
    return out


def _same_inputs(a: Pair, b: Pair) -> bool:
    return len(a.inputs) == len(b.inputs) and all(
        isinstance(x, np.ndarray) and isinstance(y, np.ndarray) and np.array_equal(x, y)
        for x, y in zip(a.inputs, b.inputs, strict=True)
    )


def draw_contrast_group(
    task: Task,
    rng: np.random.Generator,
    size: int,
    split: str,
    *,
    first_index: int = 0,
    allowed: list[str] | None = None,
    sample_rngs: list[np.random.Generator] | None = None,
    tries: int = 8,
    remap: Remap | None = None,
) -> list[RawSample] | None:
    """Two samples of two instances of ``task`` that share one query image (see the module docstring), or
    None when the task cannot make one (no instance parameters, or the content depends on the instance).
    ``remap`` as in ``draw_group``, applied to each instance drawn."""
    if task.kind != "i2i":
        return None

    def draw():
        params = task.sample_params(rng, allowed)
        return params if remap is None else remap(task, params)

    pa = draw()
    pb = next((p for p in (draw() for _ in range(tries)) if params_json(p) != params_json(pa)), None)
    if pb is None:
        return None
    state = rng.bit_generator.state  # the query content is drawn twice from one state
    qa = task.make_pair(rng, pa, size, split)
    rng.bit_generator.state = state
    qb = task.make_pair(rng, pb, size, split)
    if not _same_inputs(qa, qb) or np.array_equal(qa.output, qb.output):
        return None
    out = []
    for j, (params, query) in enumerate(((pa, qa), (pb, qb))):
        example = task.make_pair(rng, params, size, split)
        r = sample_rngs[j] if sample_rngs is not None else rng
        _, true = _instruction(task, params, r, 0.0)
        instr = SAME_AS_EXAMPLE if r.random() < 0.5 else ""
        out.append(RawSample(first_index + j, task.name, task.family, task.kind, instr, true, params,
                             example=example, query=query))  # fmt: skip
    return out


def raie_pair(samples: list[RawSample], encoder=None, seed: int = 0) -> int:
    """Re-pair the edit samples of ``samples`` (in place) with their nearest neighbour by instruction.

    Returns how many samples were re-paired. ``encoder`` is passed to
    ``xprompt.retrieval.pairing.nearest_neighbours`` (None = its default, ``minilm-edit``; pass ``"minilm"`` for
    the pairing of datasets built before issue #6).
    """
    from xprompt.retrieval.pairing import nearest_neighbours

    idx = [i for i, s in enumerate(samples) if s.family in RAIE_FAMILIES and s.kind == "i2i"]
    if len(idx) < 2:
        return 0
    nn = np.asarray(
        nearest_neighbours([samples[i].true_instruction for i in idx], encoder, seed=seed)
    )  # (M,)
    queries = [samples[i].query for i in idx]  # neighbours' pairs, read before any sample is changed
    n = 0
    for j, i in enumerate(idx):
        k = int(nn[j])
        if k < 0 or k == j:
            continue
        s, other = samples[i], samples[idx[k]]
        s.example = queries[k]
        s.example_task = other.task
        s.example_instruction = other.true_instruction
        n += 1
    return n

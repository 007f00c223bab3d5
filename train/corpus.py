"""The task suite's text, for training the BPE text tokenizer.

``iter_texts()`` yields every instruction paraphrase of every task (formatted with many random instance
parameters), the "same as the example" phrase, the exact captions of many random scenes, the difference
descriptions of many random task instances, and the task and family names. Deterministic from ``seed``.
The suite's text is small and templated, so a 2,048-entry BPE covers it with short sequences.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def iter_texts(n_scenes: int = 20_000, n_params: int = 40, seed: int = 0) -> Iterator[str]:
    """Yield the suite's text: instructions, captions, difference descriptions, task names."""
    from xprompt.train import scenes
    from xprompt.train.tasks import FAMILIES, SAME_AS_EXAMPLE, all_tasks

    rng = np.random.default_rng(seed)
    tasks = all_tasks()
    yield SAME_AS_EXAMPLE
    for name, task in sorted(tasks.items()):
        yield name.replace("_", " ")
        for _ in range(n_params):
            params = task.sample_params(rng)
            yield from task.all_instructions(params)
            yield task.difference(params)
    yield from (f.replace("_", " ") for f in FAMILIES)
    for _ in range(n_scenes):
        yield scenes.caption(scenes.random_scene(rng))


def main() -> None:  # pragma: no cover - a convenience for `python -m xprompt.train.corpus`
    n = 0
    chars = 0
    for t in iter_texts():
        n += 1
        chars += len(t)
    print(f"{n} texts, {chars} characters")


if __name__ == "__main__":
    main()

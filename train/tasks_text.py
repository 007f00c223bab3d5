"""Text tasks: text-to-image (caption -> scene), captioning (scene -> caption) and difference description
((before, after) -> the exact text of what changed).

Design choices:
- Captions are exact (``scenes.caption``), so captioning and text-to-image have a single right answer up to
  rendering. The in-context example of these tasks is another (caption, scene) pair: it teaches the format,
  not the content.
- Difference description draws a *fresh* source task for every pair (from the split's allowed i2i tasks, so a
  held-out task is never described in training), applies it and answers with that task's difference text. A
  fixed source per sample would let the model copy the example's answer.
"""

from __future__ import annotations

from xprompt.train import scenes
from xprompt.train.tasks import Pair, Task, all_tasks, choice, register


def _caption_gen(rng, params, size, split) -> Pair:
    sc = scenes.random_scene(rng)
    return Pair([scenes.render(sc, size)], scenes.caption(sc), sc.to_dict(), None, "scene")


def _t2i_gen(rng, params, size, split) -> Pair:
    sc = scenes.random_scene(rng)
    return Pair([scenes.caption(sc)], scenes.render(sc, size), None, sc.to_dict(), "scene")


register(Task(
    "caption", "caption", "i2t",
    ("Describe this image.", "Write a caption for the picture.", "What is in this image?",
     "List the objects, their colours and positions, and the background.", "Caption the scene.",
     "Give a precise description of the picture."),
    "the image was described in words", _caption_gen, reverse="text_to_image",
))  # fmt: skip
register(Task(
    "text_to_image", "t2i", "t2i",
    ("Generate an image of: ", "Draw the scene described here.", "Render this description.",
     "Create the picture from the caption.", "Paint what the text says.", "Text to image."),
    "a picture was drawn from its description", _t2i_gen, reverse="caption",
))  # fmt: skip


def _difference_sources(allowed: list[str]) -> list[str]:
    tasks = all_tasks()
    return sorted(n for n in allowed if n in tasks and tasks[n].kind == "i2i" and not tasks[n].never_train)


def _difference_params(rng, allowed) -> dict:
    return {"sources": _difference_sources(allowed)}


def _difference_gen(rng, params, size, split) -> Pair:
    tasks = all_tasks()
    src = tasks[choice(rng, params["sources"])]
    sp = src.sample_params(rng)
    pair = src.make_pair(rng, sp, size, split)
    return Pair(
        [pair.inputs[0], pair.output], src.difference(sp), pair.scene_before, pair.scene_after, src.name
    )


register(Task(
    "difference", "difference", "ii2t",
    ("What changed between these two images?", "Describe the difference between the first and the second image.",
     "Explain how the second picture differs from the first.", "What edit turns the first image into the second?",
     "Describe the transformation from the first image to the second.", "Spot the difference."),
    "the change between two images was described", _difference_gen, params_fn=_difference_params,
    needs_allowed=True,
))  # fmt: skip

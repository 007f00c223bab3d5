"""Style / tone tasks (random palette maps, channel permutations, sepia, invert, posterize) and geometric
transforms.

Design choices:
- ``palette_map`` is the main "infer the mapping from the example" task: the instance is a random list of k
  (2-5) output colours; an image is split into k equal-population luminance bands (per-image quantiles) and
  band i is painted colour i. Because the bands are per-image quantiles, every image -- example and query
  alike -- shows every band, so the example always reveals the whole mapping (the query never needs a colour
  the example does not show).
- ``channel_swap`` (a random non-identity RGB permutation) and ``flip_rotate`` (one of six dihedral
  transforms) are further randomly parameterised instances that only the example identifies; both are
  closed under inversion, so they are their own reverse.
- ``sepia`` and ``posterize`` have no reverse: their inverses are not functions (sepia -> colour would be
  colorization, which must never be trained). ``invert`` is its own reverse.
"""

from __future__ import annotations

import numpy as np

from xprompt.train.tasks import Pair, Task, choice, content_image, register

NAMED_COLORS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0), "white": (255, 255, 255), "red": (220, 30, 30), "green": (40, 170, 50),
    "blue": (30, 70, 220), "yellow": (245, 225, 30), "orange": (245, 140, 20), "purple": (140, 50, 190),
    "cyan": (40, 210, 220), "pink": (245, 120, 190), "brown": (115, 75, 40), "navy": (25, 35, 90),
    "olive": (128, 128, 0), "teal": (0, 128, 128), "maroon": (128, 0, 0), "grey": (128, 128, 128),
}  # fmt: skip
PERM_NAMES = {
    (0, 1, 2): "RGB",
    (0, 2, 1): "RBG",
    (1, 0, 2): "GRB",
    (1, 2, 0): "GBR",
    (2, 0, 1): "BRG",
    (2, 1, 0): "BGR",
}
GEOMETRIC = ("flip horizontally", "flip vertically", "rotate 90 degrees left", "rotate 180 degrees",
             "rotate 90 degrees right", "transpose")  # fmt: skip


def luminance(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # (H, W)


def palette_map(img: np.ndarray, colors: list[str]) -> np.ndarray:
    """Paint k equal-population luminance bands with ``colors`` (dark to bright): uint8 (H, W, 3)."""
    k = len(colors)
    lum = luminance(img).reshape(-1)  # (N,)
    order = np.argsort(lum, kind="stable")
    band = np.empty(len(lum), np.int64)
    band[order] = np.arange(len(lum)) * k // len(lum)  # rank -> band
    table = np.asarray([NAMED_COLORS[c] for c in colors], np.uint8)
    return table[band].reshape(img.shape)


def _img_gen(fn):
    def gen(rng, params, size, split) -> Pair:
        img, sc, src = content_image(rng, size, split)
        return Pair([img], fn(img, params), sc, None, src)

    return gen


def sepia(img: np.ndarray) -> np.ndarray:
    m = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)
    return np.clip(np.rint(img.astype(np.float32) @ m.T), 0, 255).astype(np.uint8)


def posterize(img: np.ndarray, levels: int) -> np.ndarray:
    step = 255.0 / (levels - 1)
    return (np.rint(np.rint(img.astype(np.float32) / step) * step)).clip(0, 255).astype(np.uint8)


def geometric(img: np.ndarray, op: str) -> np.ndarray:
    f = {
        "flip horizontally": lambda a: a[:, ::-1],
        "flip vertically": lambda a: a[::-1],
        "rotate 90 degrees left": lambda a: np.rot90(a, 1),
        "rotate 180 degrees": lambda a: np.rot90(a, 2),
        "rotate 90 degrees right": lambda a: np.rot90(a, 3),
        "transpose": lambda a: a.transpose(1, 0, 2),
    }[op]
    return np.ascontiguousarray(f(img))


def _palette_params(rng) -> dict:
    k = int(rng.integers(2, 6))
    names = list(NAMED_COLORS)
    return {"colors": [names[i] for i in rng.permutation(len(names))[:k]]}


register(Task(
    "palette_map", "style", "i2i",
    ("Recolour the image with the palette {colors}, from dark to bright.", "Map the tones of the picture to {colors}.",
     "Apply the same colour mapping as in the example.", "Repaint the image in {k} flat colours: {colors}.",
     "Quantise the tones and recolour them as {colors}.", "Use this palette, shadows to highlights: {colors}."),
    "the tones were mapped to {colors}", _img_gen(lambda img, p: palette_map(img, p["colors"])),
    params_fn=_palette_params, values_fn=lambda p: {"colors": ", ".join(p["colors"]), "k": len(p["colors"])},
))  # fmt: skip


def _perm_params(rng) -> dict:
    perms = [p for p in PERM_NAMES if p != (0, 1, 2)]
    return {"perm": list(choice(rng, perms))}


register(Task(
    "channel_swap", "style", "i2i",
    ("Reorder the colour channels to {perm}.", "Swap the colour channels like in the example.",
     "Permute the RGB channels as {perm}.", "Shuffle the colours: output channels are {perm}.",
     "Exchange the colour channels the same way."),
    "the colour channels were permuted to {perm}",
    _img_gen(lambda img, p: np.ascontiguousarray(img[..., list(p["perm"])])),
    params_fn=_perm_params, values_fn=lambda p: {"perm": PERM_NAMES[tuple(p["perm"])]}, reverse="channel_swap",
))  # fmt: skip
register(Task(
    "sepia", "style", "i2i",
    ("Give this image a sepia tone.", "Make the picture look like an old sepia photograph.", "Apply a sepia filter.",
     "Turn the colours into warm brown sepia.", "Age the photo with sepia toning."),
    "a sepia tone was applied", _img_gen(lambda img, p: sepia(img)),
))  # fmt: skip
register(Task(
    "invert", "style", "i2i",
    ("Invert the colours.", "Make a negative of this image.", "Turn the picture into its photographic negative.",
     "Flip every colour to its opposite.", "Colour inversion."),
    "the colours were inverted", _img_gen(lambda img, p: 255 - img), reverse="invert",
))  # fmt: skip
register(Task(
    "posterize", "style", "i2i",
    ("Posterize the image to {levels} levels per channel.", "Reduce the number of colours, poster style.",
     "Apply a posterize effect.", "Quantise every channel to {levels} values.", "Make it look like a flat poster."),
    "the image was posterized to {levels} levels", _img_gen(lambda img, p: posterize(img, p["levels"])),
    params_fn=lambda rng: {"levels": int(rng.integers(2, 5))}, values_fn=lambda p: {"levels": p["levels"]},
))  # fmt: skip
register(Task(
    "flip_rotate", "geometric", "i2i",
    ("{op_cap} the image.", "Transform the picture: {op}.", "Apply the same geometric transform as the example.",
     "Please {op} this picture.", "Reorient the image ({op})."),
    "the image was transformed: {op}", _img_gen(lambda img, p: geometric(img, p["op"])),
    params_fn=lambda rng: {"op": choice(rng, GEOMETRIC)},
    values_fn=lambda p: {"op": p["op"], "op_cap": p["op"][0].upper() + p["op"][1:]}, reverse="flip_rotate",
))  # fmt: skip

"""Image sources for the task suite: procedural scenes and crops of packaged real photographs.

Design choices:
- Nothing is downloaded. Training photographs come from a named pool (``photo_pool.py``): ``packaged`` is the
  colour images that ship inside installed Python packages (scikit-image's ``data`` folder, scikit-learn's
  sample images, matplotlib's sample data); ``debian`` adds the checksummed manifest of Debian photographs
  and wallpapers (``make photos``). A build selects its pool once per process (``set_photo_pool``, from the
  data mix); nothing is used merely because it happens to be installed.
- A FIXED list of photographs (``EVAL_PHOTOS``) is reserved for evaluation and never cropped for training;
  ``photo_crop(split="train")`` can only reach ``TRAIN_PHOTOS`` (a test checks the two are disjoint).
- Grey-scale texture images (brick, grass, gravel, ...) are exposed separately (``texture_crop``) for scene
  backgrounds; they are tinted by the caller.
- Crops are random in position and scale (between the requested size and the photo's short side) and
  resized with anti-aliasing (PIL LANCZOS), so one photo yields many distinct crops.
- Everything is a pure function of the ``np.random.Generator`` passed in and the pool (decoded photos are
  cached; a pool file's short side is capped at ``MAX_SHORT_SIDE`` so multi-megapixel wallpapers cost what
  the packaged photographs cost and give crops at a similar scale; packaged photographs decode unchanged, so
  builds from the ``packaged`` pool draw exactly what they drew before the pools existed).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import numpy as np
from PIL import Image

from xprompt.errors import XPromptError
from xprompt.train import photo_pool


def _skimage_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


def _sklearn_dir() -> Path:
    import sklearn.datasets

    return Path(sklearn.datasets.__file__).parent / "images"


def _mpl_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data"


# name -> (locator, file name). Locators are resolved lazily so importing this module stays cheap.
_PHOTO_FILES: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "astronaut.png"),
    "coffee": ("skimage", "coffee.png"),
    "chelsea": ("skimage", "chelsea.png"),
    "rocket": ("skimage", "rocket.jpg"),
    "hubble_deep_field": ("skimage", "hubble_deep_field.jpg"),
    "immunohistochemistry": ("skimage", "ihc.png"),
    "retina": ("skimage", "retina.jpg"),
    "motorcycle_left": ("skimage", "motorcycle_left.png"),
    "motorcycle_right": ("skimage", "motorcycle_right.png"),
    "china": ("sklearn", "china.jpg"),
    "flower": ("sklearn", "flower.jpg"),
    "grace_hopper": ("mpl", "grace_hopper.jpg"),
}

# Reserved for evaluation only: never reachable from split="train". Different content from every train photo.
EVAL_PHOTOS: tuple[str, ...] = ("chelsea", "rocket", "grace_hopper")
TRAIN_PHOTOS: tuple[str, ...] = tuple(n for n in _PHOTO_FILES if n not in EVAL_PHOTOS)

# Grey-scale textures for scene backgrounds (tinted by the scene renderer).
_TEXTURE_FILES: tuple[str, ...] = ("brick.png", "grass.png", "gravel.png")

MAX_SHORT_SIDE = 512
_POOL = {"name": "packaged"}  # per process: set by the dataset builder before it draws samples


def _resolve(locator: str, name: str) -> Path:
    base = {"skimage": _skimage_dir, "sklearn": _sklearn_dir, "mpl": _mpl_dir}[locator]()
    return base / name


def set_photo_pool(name: str) -> None:
    """Select this process's training photograph pool (``photo_pool.POOLS``); checks a ``debian`` pool now."""
    photo_pool.check_pool(name)
    _POOL["name"] = name
    _photo_paths("train")  # a missing or changed file fails here, before any sample is drawn


def current_photo_pool() -> str:
    return _POOL["name"]


@functools.lru_cache(maxsize=512)
def _load_rgb(path: str, cap: bool = False) -> np.ndarray:
    with Image.open(path) as im:
        short = min(im.size)
        if cap and short > MAX_SHORT_SIDE:
            w, h = (round(s * MAX_SHORT_SIDE / short) for s in im.size)
            im.draft("RGB", (w, h))  # JPEG: decode at a reduced DCT scale (no-op for PNG)
            im = im.convert("RGB").resize((w, h), Image.LANCZOS, reducing_gap=3.0)
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)  # (H, W, 3)
    return arr


@functools.lru_cache(maxsize=4)
def _packaged_paths(split: str) -> tuple[str, ...]:
    names = TRAIN_PHOTOS if split == "train" else EVAL_PHOTOS
    found = tuple(str(p) for p in (_resolve(*_PHOTO_FILES[n]) for n in names) if p.exists())
    if not found:
        raise XPromptError(f"no packaged photographs found for split {split!r}; reinstall scikit-image")
    return found


def _photo_paths(split: str) -> tuple[str, ...]:
    paths = _packaged_paths(split)
    if split == "train" and _POOL["name"] == "debian":
        paths += photo_pool.debian_paths()
    return paths


def photo_names(split: str = "train") -> tuple[str, ...]:
    """File paths of the photographs a split draws from in this process's pool (for documentation and tests)."""
    _check_split(split)
    return _photo_paths(split)


def pool_card(name: str) -> dict:
    """A training pool's name, size and fingerprint, for dataset cards."""
    return photo_pool.pool_card(name, _packaged_paths("train"))


@contextlib.contextmanager
def photo_pool_scope():
    """Restore this process's pool on exit (an in-process build selects its own pool)."""
    before = _POOL["name"]
    try:
        yield
    finally:
        _POOL["name"] = before


def _check_split(split: str) -> None:
    if split not in ("train", "eval"):
        raise XPromptError(f"unknown photo split {split!r}; use 'train' or 'eval'")


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or size < 8:
        raise XPromptError(f"image size must be an integer >= 8, got {size!r}")


def random_crop(rng: np.random.Generator, img: np.ndarray, size: int, min_frac: float = 0.25) -> np.ndarray:
    """A random square crop of ``img`` (H, W, C) with side in [max(size, min_frac*short), short], resized to
    ``size`` with LANCZOS; random horizontal flip."""
    h, w = img.shape[:2]
    short = min(h, w)
    lo = min(short, max(size, int(min_frac * short)))
    side = int(rng.integers(lo, short + 1))
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    crop = img[y : y + side, x : x + side]  # (side, side, C)
    flip = rng.random() < 0.5
    if side != size:
        crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.LANCZOS, reducing_gap=3.0))
    if flip:  # after the resize: flipping the small crop is cheaper
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop, dtype=np.uint8)


def photo_crop(rng: np.random.Generator, size: int, split: str = "train") -> np.ndarray:
    """A random crop of a packaged real photograph: uint8 (size, size, 3). ``split="eval"`` draws only from
    ``EVAL_PHOTOS``; ``split="train"`` never does."""
    _check_split(split)
    _check_size(size)
    paths = _photo_paths(split)
    i = int(rng.integers(len(paths)))
    img = _load_rgb(paths[i], cap=i >= len(_packaged_paths(split)))
    return random_crop(rng, img, size)


def texture_crop(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random crop of a packaged grey-scale texture (brick, grass, gravel): float32 (size, size) in [0, 1]."""
    _check_size(size)
    name = _TEXTURE_FILES[int(rng.integers(len(_TEXTURE_FILES)))]
    img = _load_rgb(str(_resolve("skimage", name)))
    crop = random_crop(rng, img, size, min_frac=0.15)
    return crop[..., 0].astype(np.float32) / 255.0


def scene_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random procedural scene (1-5 shapes on a flat/gradient/texture background): uint8 (size, size, 3)."""
    _check_size(size)
    from xprompt.train.scenes import random_scene, render

    return render(random_scene(rng), size)

"""Low-level restoration tasks and their reverses (degradations), plus the never-trained inpainting and
colorization tasks.

Design choices:
- Each restoration shares one generator with its degradation: ``gen`` draws a clean content image (scene or
  photo) and degrades it; the restoration task is the swapped direction (degraded -> clean), the degradation
  task (add rain, darken, ...) the plain one. Degradation *strengths* are instance parameters (same for
  example and query); the random parts (noise samples, rain streak positions) are per content.
- Strengths are resolution-relative (blur sigma and streak length scale with ``size / 64``), so a task looks
  the same at 64 and 128 px.
- Haze uses the scene's exact depth map when the content is a scene, else a smooth vertical depth ramp.
- Inpainting (a grey box over a random region) and colorization (grey -> colour) are ``never_train``.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

from xprompt.train import scenes
from xprompt.train.tasks import Pair, Task, content_image, register, register_pair


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def add_noise(rng, img, sigma: float) -> np.ndarray:
    return _u8(img.astype(np.float32) + rng.normal(0.0, sigma, img.shape))


def blur(img, sigma: float) -> np.ndarray:
    s = sigma * img.shape[0] / 64.0
    return _u8(ndimage.gaussian_filter(img.astype(np.float32), sigma=(s, s, 0)))


def add_rain(rng, img, angle: float, density: float, length: float, strength: float) -> np.ndarray:
    """Synthetic rain: sparse drops smeared along ``angle`` (degrees from vertical) into streaks, screen-blended."""
    size = img.shape[0]
    drops = (rng.random((size, size)) < density).astype(np.float32)  # (H, W)
    drops *= rng.uniform(0.6, 1.0, (size, size))
    n = max(3, round(length * size / 64.0))
    k = np.zeros((n, n), np.float32)  # line kernel through the centre
    a = np.deg2rad(angle)
    for t in np.linspace(-0.5, 0.5, 2 * n):
        y, x = (n - 1) / 2 + t * (n - 1) * np.cos(a), (n - 1) / 2 + t * (n - 1) * np.sin(a)
        k[round(y), round(x)] = 1.0
    streaks = ndimage.convolve(drops, k / k.sum() * 2.5, mode="wrap")  # (H, W)
    streaks = np.clip(ndimage.gaussian_filter(streaks, 0.5 * size / 64.0) * strength, 0, 1)[..., None]
    x = img.astype(np.float32) / 255.0
    return _u8((1.0 - (1.0 - x) * (1.0 - 0.9 * streaks)) * 255)


def darken(img, factor: float, gamma: float) -> np.ndarray:
    x = img.astype(np.float32) / 255.0
    return _u8((x**gamma) * factor * 255)


def add_haze(img, depth: np.ndarray, beta: float, airlight: tuple[float, float, float]) -> np.ndarray:
    t = np.exp(-beta * depth)[..., None]  # (H, W, 1) transmission
    a = np.asarray(airlight, np.float32) * 255
    return _u8(img.astype(np.float32) * t + a * (1.0 - t))


def downsample(img, factor: int) -> np.ndarray:
    size = img.shape[0]
    small = Image.fromarray(img).resize((size // factor, size // factor), Image.BOX)
    return np.asarray(small.resize((size, size), Image.BICUBIC), np.uint8)


def jpeg(img, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return np.asarray(im.convert("RGB"), np.uint8)


def _r(rng, lo, hi, nd=3) -> float:
    return round(float(rng.uniform(lo, hi)), nd)


def _gen(degrade):
    """Generator clean -> degraded from ``degrade(rng, img, params, scene_dict)``."""

    def gen(rng, params, size, split) -> Pair:
        img, sc, src = content_image(rng, size, split)
        return Pair([img], degrade(rng, img, params, sc), sc, sc, src)

    return gen


def _haze(rng, img, p, sc):
    size = img.shape[0]
    if sc is not None:
        depth = scenes.render_maps(scenes.Scene.from_dict(sc), size)["depth"]
    else:
        depth = np.repeat(np.linspace(1.0, 0.4, size, dtype=np.float32)[:, None], size, axis=1)
    return add_haze(img, depth, p["beta"], tuple(p["airlight"]))


# name, reverse name, degrade fn, params fn, values fn, (restore instructions), (degrade instructions), diff texts
_SPECS = [
    ("denoise", "add_noise", lambda rng, img, p, sc: add_noise(rng, img, p["sigma"]),
     lambda rng: {"sigma": _r(rng, 8, 45, 1)}, lambda p: {"level": "strong" if p["sigma"] > 25 else "light"},
     ("Remove the noise from this image.", "Denoise the picture.", "Clean up the grain in this photo.",
      "Make this noisy image clean.", "Restore the image by removing the {level} noise.", "Image denoising."),
     ("Add {level} noise to this image.", "Make the picture grainy.", "Corrupt the image with Gaussian noise.",
      "Add sensor noise like in the example.", "Apply {level} random noise."),
     ("the noise was removed", "{level} noise was added")),
    ("deblur", "blur", lambda rng, img, p, sc: blur(img, p["sigma"]),
     lambda rng: {"sigma": _r(rng, 0.8, 2.5, 2)}, lambda p: {"level": "strong" if p["sigma"] > 1.6 else "slight"},
     ("Deblur this image.", "Make the picture sharp again.", "Remove the {level} blur.",
      "Restore the sharp details of this blurry photo.", "Sharpen the image.", "Image deblurring."),
     ("Blur this image.", "Apply a {level} Gaussian blur.", "Make the picture soft and out of focus.",
      "Defocus the image.", "Smooth the image like in the example."),
     ("the blur was removed", "a {level} blur was applied")),
    ("derain", "add_rain", lambda rng, img, p, sc: add_rain(rng, img, p["angle"], p["density"], p["length"], p["strength"]),
     lambda rng: {"angle": _r(rng, -30, 30, 1), "density": _r(rng, 0.01, 0.04, 4), "length": _r(rng, 5, 13, 1),
                  "strength": _r(rng, 0.6, 1.0, 2)},
     lambda p: {"dir": "slanted" if abs(p["angle"]) > 12 else "vertical"},
     ("Remove the rain from this image.", "Derain the picture.", "Take away the rain streaks.",
      "Make it look like it is not raining.", "Clean the {dir} rain streaks off this photo.", "Image deraining."),
     ("Add rain to this image.", "Make it rain in the picture.", "Overlay {dir} rain streaks.",
      "Add falling rain like in the example.", "Simulate a rainy day."),
     ("the rain streaks were removed", "{dir} rain streaks were added")),
    ("low_light_enhance", "darken", lambda rng, img, p, sc: darken(img, p["factor"], p["gamma"]),
     lambda rng: {"factor": _r(rng, 0.2, 0.5, 3), "gamma": _r(rng, 1.2, 2.2, 2)}, lambda p: {},
     ("Brighten this dark image.", "Enhance the low-light photo.", "Make the picture well exposed.",
      "Restore the lighting of this underexposed image.", "Low-light enhancement.", "Lift the shadows."),
     ("Darken this image.", "Make the photo look underexposed.", "Simulate low light.",
      "Turn the lights down in this picture.", "Make it look like it was taken at night."),
     ("the image was brightened", "the image was darkened")),
    ("dehaze", "add_haze", _haze,
     lambda rng: {"beta": _r(rng, 0.8, 2.2, 2), "airlight": [_r(rng, 0.75, 0.95, 3) for _ in range(3)]},
     lambda p: {"level": "thick" if p["beta"] > 1.5 else "light"},
     ("Remove the haze from this image.", "Dehaze the picture.", "Clear the fog.",
      "Make the scene crisp, without the {level} haze.", "Image dehazing.", "Restore contrast lost to fog."),
     ("Add {level} haze to this image.", "Make it foggy.", "Cover the scene in mist.",
      "Add atmospheric haze like in the example.", "Simulate fog."),
     ("the haze was removed", "{level} haze was added")),
    ("super_resolution", "downsample", lambda rng, img, p, sc: downsample(img, p["factor"]),
     lambda rng: {"factor": int(rng.choice([2, 4]))}, lambda p: {"factor": p["factor"]},
     ("Upscale this image {factor}x.", "Super-resolve the picture.", "Recover the fine detail of this low-resolution image.",
      "Make the pixelated image high resolution.", "Image super-resolution.", "Enhance the resolution."),
     ("Downsample this image {factor}x.", "Lower the resolution of the picture.", "Make the image low resolution.",
      "Reduce the detail by a factor of {factor}.", "Simulate a low-resolution camera."),
     ("the resolution was increased {factor}x", "the resolution was reduced {factor}x")),
    ("jpeg_restore", "jpeg_compress", lambda rng, img, p, sc: jpeg(img, p["quality"]),
     lambda rng: {"quality": int(rng.integers(5, 26))}, lambda p: {"quality": p["quality"]},
     ("Remove the JPEG artefacts.", "Restore this compressed image.", "Clean up the blocky compression artefacts.",
      "Undo the heavy JPEG compression.", "JPEG artefact removal.", "Make the compressed photo clean."),
     ("Compress this image as JPEG.", "Add JPEG artefacts at quality {quality}.", "Save the picture at low quality.",
      "Make the image blocky like a heavily compressed JPEG.", "Apply strong JPEG compression."),
     ("the JPEG artefacts were removed", "JPEG compression artefacts were added")),
]  # fmt: skip

for _name, _rev, _deg, _pf, _vf, _ri, _di, (_rd, _dd) in _SPECS:
    register_pair(
        Task(_name, "lowlevel", "i2i", _ri, _rd, _gen(_deg), params_fn=_pf, values_fn=_vf, swap=True),
        _rev, "degrade", _di, _dd,
    )  # fmt: skip


# ------------------------------------------------------------------------------- never trained (Table 5)


def mask_box(img: np.ndarray, box: tuple[float, float, float, float], fill: int = 128) -> np.ndarray:
    """Fill the box (y0, x0, y1, x1 as fractions) with grey."""
    size = img.shape[0]
    y0, x0, y1, x1 = (round(v * size) for v in box)
    out = img.copy()
    out[y0:y1, x0:x1] = fill
    return out


def _inpaint_gen(rng, params, size, split) -> Pair:
    img, sc, src = content_image(rng, size, split)
    h, w = rng.uniform(0.25, 0.45, size=2)
    y0, x0 = rng.uniform(0.05, 0.95 - h), rng.uniform(0.05, 0.95 - w)
    return Pair([mask_box(img, (y0, x0, y0 + h, x0 + w))], img, sc, sc, src)


def to_gray(img: np.ndarray) -> np.ndarray:
    g = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)  # (H, W)
    return np.repeat(_u8(g)[..., None], 3, axis=-1)


def _colorize_gen(rng, params, size, split) -> Pair:
    img, sc, src = content_image(rng, size, split)
    return Pair([to_gray(img)], img, sc, sc, src)


register(Task(
    "inpainting", "unseen", "i2i",
    ("Fill in the grey box.", "Inpaint the missing region.", "Complete the masked part of the image.",
     "Restore what is hidden under the grey rectangle.", "Image inpainting."),
    "the masked region was filled in", _inpaint_gen, never_train=True,
))  # fmt: skip
register(Task(
    "colorization", "unseen", "i2i",
    ("Colorize this black and white image.", "Add colour to the grey picture.", "Restore the colours.",
     "Turn this greyscale photo into colour.", "Image colorization."),
    "the grey image was colorized", _colorize_gen, never_train=True,
))  # fmt: skip

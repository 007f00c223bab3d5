"""Dense prediction tasks (depth, segmentation, surface normals, edges) and their controllable-generation
reverses.

Design choices:
- Depth and segmentation use procedural scenes, whose depth and label maps are exact (``scenes.render_maps``).
  Depth is rendered through a 256-entry colour palette (matplotlib colormaps, near = high end); the palette is
  an instance parameter of ``depth``. ``RESERVED_PALETTE`` is never drawn by ``depth``: it only appears in the
  held-out task ``depth_reserved`` (Table 4's "unseen colour spectrum"). ``decode_depth`` inverts a palette
  image back to depth by nearest palette entry (exact up to 8-bit quantisation).
- Random colour ramps (the data mix's ``ramp_palettes``, off by default): a share of ``depth`` instances, and of
  its reverse, use a random 3-4 stop ramp (instruction: the "custom" palette), so that the palette can only be
  read from the example; the ramps are kept farther from ``RESERVED_PALETTE`` than any seen palette is.
- Segmentation paints each pixel with the class colour of its shape (``SEG_COLORS``), background black.
- Surface normals come from procedural height fields (a sum of Gaussian bumps): the input is the Lambertian
  shading of the field (albedo and light direction are instance parameters), the output the normal map
  ``(n + 1) / 2 * 255``.
- Edges are Canny edges (``skimage.feature.canny``, per colour channel, OR-ed) of scenes or photos; sigma is an instance parameter
  (scaled with the image size so an edge map looks the same at 64 and 128 px).
"""

from __future__ import annotations

import functools

import numpy as np

from xprompt.train import scenes
from xprompt.train.tasks import Pair, Task, choice, content_image, register_pair

SEEN_PALETTES: tuple[str, ...] = ("viridis", "magma", "gray", "cividis", "plasma")
RESERVED_PALETTE = "turbo"
SEG_COLORS: dict[str, tuple[int, int, int]] = {
    "background": (0, 0, 0),
    "circle": (230, 25, 75),
    "square": (60, 180, 75),
    "triangle": (255, 225, 25),
    "diamond": (0, 130, 200),
    "cross": (145, 30, 180),
}


# a random colour ramp's name: "ramp-" + its stops as hex, e.g. "ramp-1f77b4-ff7f0e-2ca02c"
RAMP_PREFIX = "ramp-"
# RGB distance between any two stops, so that the ramp never comes back on itself
RAMP_MIN_STOP_DISTANCE = 100.0
# No ramp is closer to the reserved palette (mean RGB distance per entry, either direction) than the nearest
# seen palette is (cividis, 145.2): training on ramps teaches reading a palette from the example without
# showing anything like the held-out one.
RAMP_MIN_RESERVED_DISTANCE = 145.0


@functools.lru_cache(maxsize=64)
def palette_lut(name: str) -> np.ndarray:
    """uint8 (256, 3): palette entry i encodes nearness i / 255 (a matplotlib colormap or a ``ramp-`` name)."""
    if name.startswith(RAMP_PREFIX):
        stops = ramp_stops(name)  # (S, 3)
        x = np.linspace(0.0, 1.0, 256)
        at = np.linspace(0.0, 1.0, len(stops))
        lut = np.stack([np.interp(x, at, stops[:, c]) for c in range(3)], axis=1)  # (256, 3)
        return np.rint(lut).astype(np.uint8)
    import matplotlib

    cmap = matplotlib.colormaps[name]
    return np.rint(cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)


def ramp_stops(name: str) -> np.ndarray:
    """float (S, 3) RGB stops of a ``ramp-`` palette name (S >= 2, evenly spaced from far to near)."""
    parts = name[len(RAMP_PREFIX) :].split("-")
    if len(parts) < 2 or any(len(h) != 6 for h in parts):
        raise ValueError(f"bad ramp palette {name!r}: expected 'ramp-' and >= 2 six-digit hex colours")
    return np.array([[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in parts], dtype=np.float64)


def random_ramp(rng: np.random.Generator, tries: int = 64) -> str:
    """A random 3- or 4-stop colour ramp, far from the reserved palette (``RAMP_MIN_RESERVED_DISTANCE``) and
    with well separated stops; deterministic from ``rng``."""
    reserved = palette_lut(RESERVED_PALETTE).astype(np.float64)
    for _ in range(tries):
        stops = rng.integers(0, 256, size=(int(rng.integers(3, 5)), 3))
        gaps = np.linalg.norm(stops[:, None, :] - stops[None, :, :], axis=-1)[np.triu_indices(len(stops), 1)]
        if gaps.min() < RAMP_MIN_STOP_DISTANCE:
            continue
        name = RAMP_PREFIX + "-".join(f"{r:02x}{g:02x}{b:02x}" for r, g, b in stops)
        lut = palette_lut(name).astype(np.float64)
        near = min(
            np.linalg.norm(lut - reserved, axis=1).mean(), np.linalg.norm(lut[::-1] - reserved, axis=1).mean()
        )
        if near >= RAMP_MIN_RESERVED_DISTANCE:
            return name
    raise RuntimeError(f"no colour ramp passed the distance checks in {tries} draws")


def with_ramp_palette(task, params: dict, rng: np.random.Generator, share: float) -> dict:
    """``params`` of a ``depth`` instance (either direction) with its palette replaced, with probability
    ``share``, by a random colour ramp (the data mix's ``ramp_palettes``); any other task's unchanged."""
    if task.base != "depth" or share <= 0 or rng.random() >= share:
        return params
    return {**params, "palette": random_ramp(rng)}


def encode_depth(depth: np.ndarray, palette: str) -> np.ndarray:
    """depth float (H, W) in [0, 1] (1 = far) -> uint8 (H, W, 3) palette image (near = palette end)."""
    idx = np.clip(np.rint((1.0 - depth) * 255), 0, 255).astype(np.int64)  # (H, W)
    return palette_lut(palette)[idx]


def decode_depth(img: np.ndarray, palette: str) -> np.ndarray:
    """Inverse of ``encode_depth`` by nearest palette entry: uint8 (H, W, 3) -> float32 (H, W) depth."""
    lut = palette_lut(palette).astype(np.int32)  # (256, 3)
    flat = img.reshape(-1, 3).astype(np.int32)  # (N, 3)
    d2 = ((flat[:, None, :] - lut[None, :, :]) ** 2).sum(-1)  # (N, 256)
    idx = d2.argmin(1).reshape(img.shape[:2])
    return (1.0 - idx / 255.0).astype(np.float32)


def _depth_gen(rng, params, size, split) -> Pair:
    sc = scenes.random_scene(rng)
    maps = scenes.render_maps(sc, size)
    return Pair(
        [maps["rgb"]], encode_depth(maps["depth"], params["palette"]), sc.to_dict(), sc.to_dict(), "scene"
    )


def segmentation_map(scene: scenes.Scene, label: np.ndarray) -> np.ndarray:
    """label int (H, W) (-1 background) -> uint8 (H, W, 3) class colours."""
    table = np.asarray([SEG_COLORS["background"]] + [SEG_COLORS[o.shape] for o in scene.objects], np.uint8)
    return table[label.astype(np.int64) + 1]


def _seg_gen(rng, params, size, split) -> Pair:
    sc = scenes.random_scene(rng)
    maps = scenes.render_maps(sc, size)
    return Pair([maps["rgb"]], segmentation_map(sc, maps["label"]), sc.to_dict(), sc.to_dict(), "scene")


def height_field(rng: np.random.Generator, size: int) -> np.ndarray:
    """float32 (size, size) height in normalised units: a sum of 3-8 Gaussian bumps and dents."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    x, y = np.meshgrid(t, t)
    h = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(3, 9))):
        cx, cy = rng.uniform(0.1, 0.9, size=2)
        s = rng.uniform(0.06, 0.2)
        a = rng.uniform(0.05, 0.15) * rng.choice([-1.0, 1.0])
        h += a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s))
    return h


def normals_from_height(h: np.ndarray) -> np.ndarray:
    """float (H, W) height (units of the image side) -> unit normals float32 (H, W, 3)."""
    size = h.shape[0]
    gy, gx = np.gradient(h, 1.0 / size)  # (H, W) each, slope per unit length
    n = np.stack([-gx, -gy, np.ones_like(h)], axis=-1)
    return (n / np.linalg.norm(n, axis=-1, keepdims=True)).astype(np.float32)


def _normals_params(rng) -> dict:
    """Instance: the surface colour and the light direction of the shaded input (so the reverse task,
    normals -> shaded image, is determined by the example)."""
    light = [round(float(rng.uniform(-0.6, 0.6)), 3), round(float(rng.uniform(-0.6, 0.6)), 3), 1.0]
    return {"albedo": choice(rng, list(scenes.OBJ_COLORS)[:8]), "light": light}


def shade(n: np.ndarray, albedo: str, light) -> np.ndarray:
    """Lambertian shading of unit normals (H, W, 3): uint8 (H, W, 3)."""
    ld = np.asarray(light, np.float32)
    ld /= np.linalg.norm(ld)
    lum = np.clip(n @ ld, 0, 1)[..., None]  # (H, W, 1)
    return np.clip(np.asarray(scenes.OBJ_COLORS[albedo], np.float32) * (0.25 + 0.75 * lum), 0, 255).astype(
        np.uint8
    )


def _normals_gen(rng, params, size, split) -> Pair:
    n = normals_from_height(height_field(rng, size))  # (size, size, 3)
    nmap = np.clip(np.rint((n + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return Pair([shade(n, params["albedo"], params["light"])], nmap, None, None, "field")


def edge_map(img: np.ndarray, sigma: float) -> np.ndarray:
    """Canny edges of an RGB image, white on black: uint8 (H, W, 3). ``sigma`` is relative to 64 px.
    Canny runs per colour channel and the edges are OR-ed: a grey-level Canny misses isoluminant edges (a red
    shape on dark grey)."""
    from skimage.feature import canny

    x = img.astype(np.float32) / 255.0
    s = sigma * img.shape[0] / 64.0
    e = np.zeros(img.shape[:2], bool)  # (H, W)
    for c in range(3):
        e |= canny(x[..., c], sigma=s, low_threshold=0.04, high_threshold=0.08)
    return np.repeat((e * 255).astype(np.uint8)[..., None], 3, axis=-1)


def _edges_gen(rng, params, size, split) -> Pair:
    img, sc, src = content_image(rng, size, split)
    return Pair([img], edge_map(img, params["sigma"]), sc, sc, src)


_DEPTH_I = (
    "Estimate the depth of this image using the {palette} colour map.",
    "Predict a depth map in the {palette} palette.",
    "Show how far each pixel is, coloured with {palette}.",
    "Turn this picture into a {palette} depth map.",
    "Render the depth of the scene in {palette} colours, near objects at the bright end.",
    "Depth estimation, {palette} palette.",
)
_DEPTH_R = (
    "Generate an image that matches this {palette} depth map.",
    "Render a scene from the given depth map ({palette} palette).",
    "Create a picture with the depth shown in this {palette} map.",
    "Turn this {palette} depth map into a realistic image.",
    "Depth to image: synthesise a scene for this depth map.",
)
_SEG_I = (
    "Segment the objects in this image by shape class.",
    "Produce a semantic segmentation map of the shapes.",
    "Colour every pixel by the class of the object it belongs to.",
    "Semantic segmentation: label the circles, squares, triangles, diamonds and crosses.",
    "Draw the segmentation mask of this scene.",
    "Give me the class map of the shapes in the picture.",
)
_SEG_R = (
    "Generate an image from this segmentation map.",
    "Render a scene whose shapes follow this class map.",
    "Turn the segmentation mask into a picture.",
    "Paint real objects into the regions of this semantic map.",
    "Segmentation to image: fill the layout with coloured shapes.",
)
_NORM_I = (
    "Estimate the surface normals of this image.",
    "Predict a normal map of the surface.",
    "Show the orientation of the surface as a normal map.",
    "Compute surface normals, encoded as RGB.",
    "Turn this shaded surface into its normal map.",
)
_NORM_R = (
    "Shade the surface described by this normal map.",
    "Render a lit surface from these normals.",
    "Turn this normal map into a shaded image.",
    "Generate the picture of a surface with these normals.",
    "Normals to image: light the surface.",
)
_EDGE_I = (
    "Detect the edges in this image.",
    "Draw the Canny edges of the picture.",
    "Extract an edge map, white lines on black.",
    "Find the outlines in this image.",
    "Edge detection at the same level of detail.",
    "Trace the contours of everything in the picture.",
)
_EDGE_R = (
    "Generate an image that follows these edges.",
    "Fill in this edge map with a realistic picture.",
    "Turn the line drawing into an image.",
    "Create a picture whose outlines match the edge map.",
    "Edges to image: paint the scene.",
)


def _pal_values(p):
    # a ramp has no name a reader would know: the instruction says "custom", and only the example shows it
    return {"palette": "custom" if p["palette"].startswith(RAMP_PREFIX) else p["palette"]}


register_pair(
    Task("depth", "dense", "i2i", _DEPTH_I, "the image was turned into a depth map in the {palette} palette",
         _depth_gen, params_fn=lambda rng: {"palette": choice(rng, SEEN_PALETTES)}, values_fn=_pal_values),
    "depth_to_image", "controllable", _DEPTH_R, "a {palette} depth map was turned into an image",
)  # fmt: skip
register_pair(
    Task("depth_reserved", "dense", "i2i", _DEPTH_I, "the image was turned into a depth map in the {palette} palette",
         _depth_gen, params_fn=lambda rng: {"palette": RESERVED_PALETTE}, values_fn=_pal_values),
    "depth_reserved_to_image", "controllable", _DEPTH_R, "a {palette} depth map was turned into an image",
)  # fmt: skip
register_pair(
    Task("segmentation", "dense", "i2i", _SEG_I, "the objects were replaced by their class colours", _seg_gen),
    "segmentation_to_image", "controllable", _SEG_R, "a segmentation map was turned into an image",
)  # fmt: skip
register_pair(
    Task("normals", "dense", "i2i", _NORM_I, "the surface was turned into its normal map", _normals_gen,
         params_fn=_normals_params),
    "normals_to_image", "controllable", _NORM_R, "a normal map was turned into a shaded surface",
)  # fmt: skip
register_pair(
    Task("edges", "dense", "i2i", _EDGE_I, "the image was reduced to its edges", _edges_gen,
         params_fn=lambda rng: {"sigma": float(choice(rng, (1.0, 1.5, 2.0, 3.0)))}),
    "edges_to_image", "controllable", _EDGE_R, "an edge map was filled in to a full image",
)  # fmt: skip

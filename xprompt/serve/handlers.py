"""The web app's handlers: plain functions from page values (file paths, strings, numbers) to results, each a
thin layer over the ``XPrompt`` API (``generate``/``generate_from``/``compile_prompt``/``edit``/``describe``/
``text_to_image``) and ``EditSession``. No Gradio here: ``xprompt.serve.app`` wires them to the page.

Design choices
* Uploaded images arrive as file paths and are read with ``load_image`` under the page's own pixel limit
  (``MAX_PIXELS``, far below the library's decompression-bomb guard: the model works at 64 px), so a text
  file, a broken file or a huge image is one ``XPromptError`` line naming the field, never a traceback.
* Example pairs come as a flat list ``[in1, out1, in2, out2, ...]`` of the page's pair slots; empty slots
  are skipped and a half-filled pair is an error (``example_pairs``).
* Decoding settings from the page go through ``sampling_kwargs`` (greedy, or seed/top-k/temperature/CFG).
* Stores: ``StoreCache`` opens each store once (FAISS index + text encoder) and shares it between users.
* ``progress`` is a ``callback(done, total)`` handed to the pipeline, which calls it per decoded token.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from xprompt.edit_mask import parse_box
from xprompt.errors import ImageInputError, XPromptError
from xprompt.pipeline import EditResult

MAX_PIXELS = 16_777_216  # 4096 x 4096: larger uploads are refused with a message (the model works at 64 px)
MAX_PAIRS = 4  # example-pair slots on the in-context tab
DEFAULT_STORE = "default"  # the store name that means ``open_store(None)`` (built on first use)


def read_image(path, what: str) -> np.ndarray | None:
    """An uploaded file (path) -> uint8 (H, W, 3); None when nothing was uploaded."""
    from xprompt.tokenizer.image_io import load_image

    if path is None or (isinstance(path, str) and not path):
        return None
    if isinstance(path, np.ndarray):
        return path
    try:
        return load_image(path, max_pixels=MAX_PIXELS)
    except ImageInputError as e:  # the message names the server-side temp path: show the file name instead
        msg = str(e).replace(str(path), Path(str(path)).name)
        raise XPromptError(f"{what}: {msg}") from None


def need_image(path, what: str) -> np.ndarray:
    img = read_image(path, what)
    if img is None:
        raise XPromptError(f"{what}: no image uploaded; upload one first")
    return img


def editor_value(value, what: str = "image") -> tuple[np.ndarray | None, np.ndarray | None]:
    """An image editor's value ``{"background": RGBA, "layers": [RGBA, ...], ...}`` (or a plain image / path)
    -> (uint8 (H, W, 3) image, bool (H, W) mask of everything painted on the layers, or None if nothing was)."""
    from PIL import Image

    from xprompt.tokenizer.image_io import load_image

    if not isinstance(value, dict):
        return read_image(value, what), None
    bg = value.get("background")
    if bg is None:
        return None, None
    bg = np.asarray(bg)
    if bg.ndim != 3 or bg.shape[2] not in (3, 4) or bg.shape[0] * bg.shape[1] > MAX_PIXELS:
        raise XPromptError(
            f"{what}: a {bg.shape[1]}x{bg.shape[0]} image is more than the page takes; downscale it"
        )
    img = load_image(Image.fromarray(bg.astype(np.uint8)))  # RGBA composited over white
    painted = [np.asarray(layer)[..., 3] > 0 for layer in value.get("layers") or [] if layer is not None]
    painted = [m for m in painted if m.any()]
    if not painted:
        return img, None
    mask = np.logical_or.reduce(painted)  # (H, W)
    if mask.shape != img.shape[:2]:
        raise XPromptError(
            f"{what}: the painted region is {mask.shape[1]}x{mask.shape[0]} but the image is "
            f"{img.shape[1]}x{img.shape[0]}; undo the crop/resize or clear the strokes"
        )
    return img, mask


def example_pairs(slots) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[in1, out1, in2, out2, ...]`` (paths or None) -> the complete pairs; a half-filled pair is an error."""
    slots = list(slots or [])
    if len(slots) % 2:
        raise XPromptError("example slots must come in (input, output) pairs")
    pairs = []
    for i in range(0, len(slots), 2):
        n = i // 2 + 1
        a, b = read_image(slots[i], f"example {n} input"), read_image(slots[i + 1], f"example {n} output")
        if (a is None) != (b is None):
            missing = "output" if b is None else "input"
            raise XPromptError(f"example pair {n} has no {missing} image; upload it or clear the pair")
        if a is not None:
            pairs.append((a, b))
    return pairs


def sampling_kwargs(greedy=True, seed=0, top_k=0, temperature=1.0, cfg=1.0, cfg_ref=None) -> dict:
    """The page's decoding settings -> ``XPrompt`` keyword arguments (``top_k`` 0 = the task's default;
    ``cfg_ref``, for the image-to-image tabs: what CFG guides against, ``XPrompt.generate``'s)."""
    try:
        seed, top_k = int(seed or 0), int(top_k or 0)
        temperature, cfg = float(temperature), float(cfg)
    except (TypeError, ValueError):
        raise XPromptError("seed and top-k must be integers, temperature and CFG numbers") from None
    if top_k < 0 or temperature <= 0 or cfg < 0:
        raise XPromptError(
            f"need top-k >= 0 (0 = default), temperature > 0 and CFG >= 0; got {top_k}, {temperature}, {cfg}"
        )
    kw = {
        "greedy": bool(greedy),
        "seed": seed,
        "top_k": top_k or None,
        "temperature": temperature,
        "cfg_scale": cfg,
    }
    if cfg_ref is not None:
        from xprompt.pipeline_inputs import check_cfg_ref

        kw["cfg_ref"] = check_cfg_ref(cfg_ref or "empty")
    return kw


def parse_box_text(text) -> tuple[int, int, int, int] | None:
    """``"x0,y0,x1,y1"`` -> a box; empty -> None."""
    if text is None or not str(text).strip():
        return None
    return parse_box(text, what="the box (or leave it empty)")


def _instruction(text, required: bool, what: str = "the instruction") -> str | None:
    text = (text or "").strip()
    if not text and required:
        raise XPromptError(f"{what} is empty; type what the edit should do, e.g. 'Remove the red square'")
    return text or None


# ---------------------------------------------------------------------------------------------- tabs
def in_context(
    xp, slots, query, instruction=None, mode="xp", task=None, sampling=None, progress=None
) -> tuple[np.ndarray, str]:
    """In-context generation from example pairs (or a compiled ``.xpt`` task) -> (image, status line)."""
    q = need_image(query, "query")
    kw = sampling or sampling_kwargs()
    pairs = example_pairs(slots)
    t0 = time.perf_counter()
    if task:
        if pairs:
            raise XPromptError("give either example pairs or a compiled task (.xpt), not both: clear one")
        if _instruction(instruction, False):
            raise XPromptError("a compiled task holds its own instruction; clear the instruction field")
        if not str(task).lower().endswith(".xpt"):
            raise XPromptError(f"{Path(str(task)).name} is not a compiled task; upload a .xpt file")
        img = xp.generate_from(task, q, progress=progress, **kw)
        how = f"compiled task {Path(str(task)).name}"
    else:
        if mode not in ("xp", "full", "none"):
            raise XPromptError(f"unknown mode {mode!r}; choose xp, full or none")
        if mode != "none" and not pairs:
            raise XPromptError(
                f"mode {mode} needs at least one example pair (input and output), or mode none"
            )
        img = xp.generate(
            pairs if mode != "none" else [],
            q,
            instruction=_instruction(instruction, False),
            mode=mode,
            progress=progress,
            **kw,
        )
        how = f"mode {mode}, {len(pairs) if mode != 'none' else 0} example pair(s)"
    return img, _status(how, img, t0)


def compile_task(xp, slots, instruction=None, mode="xp", out_dir=None) -> tuple[str, str]:
    """Compile the example pairs into a task prompt file -> (path of the .xpt, status line)."""
    pairs = example_pairs(slots)
    if not pairs:
        raise XPromptError("compiling a task needs at least one example pair (input and output)")
    if mode not in ("xp", "full"):
        raise XPromptError("a compiled task needs examples: choose mode xp (compressed) or full")
    task = xp.compile_prompt(pairs, instruction=_instruction(instruction, False), mode=mode)
    out = Path(tempfile.mkdtemp(prefix="xprompt-task-", dir=out_dir)) / f"task-{mode}-{len(pairs)}ex.xpt"
    task.save(out)
    kib = task.cache.nbytes() / 1024
    return str(
        out
    ), f"compiled {len(pairs)} pair(s), mode {mode}: {task.length} cached positions ({kib:.0f} KiB)"


class StoreCache:
    """Named RAIE stores, each opened once and shared (``None`` = the default store, built on first use)."""

    def __init__(self, stores: dict | None = None):
        self.specs = dict(stores) if stores else {DEFAULT_STORE: None}
        self._open: dict = {}
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    def get(self, name):
        from xprompt.retrieval.default_store import open_store
        from xprompt.retrieval.store import InstructionStore

        name = name or self.names[0]
        if name not in self.specs:
            raise XPromptError(f"unknown store {name!r}; choose one of {', '.join(self.names)}")
        with self._lock:
            if name not in self._open:
                spec = self.specs[name]
                st = spec if isinstance(spec, InstructionStore) else open_store(spec, quiet=True)
                self._open[name] = st
            return self._open[name]


def edit(
    xp,
    image,
    instruction,
    stores: StoreCache,
    store=None,
    k=1,
    box=None,
    sampling=None,
    progress=None,
    *,
    from_instruction: bool = False,
) -> tuple[EditResult, str]:
    """RAIE: retrieve the ``k`` nearest stored instructions, use their pairs as examples, edit -> (result, status).

    ``image``: a path, an array, or an image editor's value (what is painted on it is the region to edit);
    ``from_instruction``: the region is the instruction's named object (procedural scenes), instead of strokes
    or a box."""
    img, mask = editor_value(image, "image")
    if img is None:
        raise XPromptError("image: no image uploaded; upload one first")
    text = _instruction(instruction, True)
    k = _k(k)
    bx = parse_box_text(box)
    if mask is not None and bx is not None:
        raise XPromptError("give either painted strokes or a box, not both: clear one")
    if from_instruction and (mask is not None or bx is not None):
        raise XPromptError(
            "'mask from the instruction's object' is on: clear the painted strokes and the box, or untick it"
        )
    t0 = time.perf_counter()
    st = stores.get(store) if k > 0 else None
    kw = sampling or sampling_kwargs()
    res = xp.edit(img, text, store=st, k=k, box=bx, mask=mask, mask_from_instruction=bool(from_instruction),
                  progress=progress, **kw)  # fmt: skip
    where = ", only the instruction's object" if from_instruction else ""
    where = where or ("" if mask is None and bx is None else ", only the marked region")
    return res, _status(f"mode {res.mode}, {len(res.retrieved)} retrieved{where}", res.image, t0)


def _k(k) -> int:
    try:
        k = int(k)
    except (TypeError, ValueError):
        raise XPromptError(f"k must be an integer >= 0, got {k!r}") from None
    if not 0 <= k <= 8:
        raise XPromptError(f"k must be between 0 (no retrieval) and 8, got {k}")
    return k


def retrieved_table(res: EditResult) -> str:
    """Markdown table of what RAIE retrieved (best first)."""
    if not res.retrieved:
        return "No retrieval (k = 0): edited from the instruction alone."
    rows = ["| # | retrieved instruction | task | cosine |", "|---|---|---|---|"]
    for i, r in enumerate(res.retrieved, 1):
        rows.append(f"| {i} | {_md(r.instruction)} | {_md(r.task)} | {r.score:.3f} |")
    return "\n".join(rows)


def retrieved_gallery(res: EditResult) -> list[tuple[np.ndarray, str]]:
    """(image, caption) items: every retrieved pair's source and target."""
    out = []
    for i, r in enumerate(res.retrieved, 1):
        out.append((r.pair[0], f"{i}. {r.instruction} ({r.score:.3f}): before"))
        out.append((r.pair[1], f"{i}. {r.instruction} ({r.score:.3f}): after"))
    return out


def describe(xp, before, after, instruction=None, max_tokens=64, progress=None) -> str:
    a, b = need_image(before, "before"), need_image(after, "after")
    question = _instruction(instruction, False)
    kw = {"instruction": question} if question else {}  # else the question the model was trained with
    n = int(max_tokens or 64)
    if not 1 <= n <= 256:
        raise XPromptError(f"max tokens must be between 1 and 256, got {n}")
    return xp.describe(a, b, max_new_tokens=n, progress=progress, **kw)


def text_to_image(xp, prompt, sampling=None, progress=None) -> tuple[np.ndarray, str]:
    text = _instruction(prompt, True, "the prompt")
    t0 = time.perf_counter()
    img = xp.text_to_image(text, progress=progress, **(sampling or sampling_kwargs()))
    return img, _status("text to image", img, t0)


# ------------------------------------------------------------------------------------ multi-turn editing
def session_start(xp, image, stores: StoreCache, store=None, k=1):
    """A new ``EditSession`` on the uploaded image (its store taken from ``stores``)."""
    from xprompt.session import EditSession

    img = need_image(image, "start image")
    k = _k(k)
    return EditSession(xp, img, store=stores.get(store) if k > 0 else None, k=k)


def session_edit(session, instruction, k=1, box=None, sampling=None, progress=None, stores=None, store=None):
    """One more turn on ``session`` (the last result is the input) -> the new ``EditResult``."""
    if session is None:
        raise XPromptError("no editing session yet: upload a start image first")
    text = _instruction(instruction, True)
    k = _k(k)
    st = stores.get(store) if k > 0 and stores is not None else None
    kw = {"box": parse_box_text(box), **(sampling or sampling_kwargs())}
    return session.edit(text, k=k, store=st, progress=progress, **kw)


def session_table(session) -> str:
    """Markdown: one row per turn (instruction, mode, retrieved instructions with scores)."""
    if session is None or not session.turns:
        return "No edits yet."
    rows = ["| turn | instruction | mode | retrieved (cosine) |", "|---|---|---|---|"]
    for i, t in enumerate(session.turns, 1):
        got = "; ".join(f"{_md(r.instruction)} ({r.score:.3f})" for r in t.result.retrieved) or "none"
        rows.append(f"| {i} | {_md(t.instruction)} | {t.result.mode} | {got} |")
    return "\n".join(rows)


def session_gallery(session) -> list[tuple[np.ndarray, str]]:
    """Thumbnails: the start image, then every turn's output captioned with its instruction."""
    if session is None:
        return []
    items = [(session.start, "start")]
    items += [(t.output, f"turn {i}: {t.instruction}") for i, t in enumerate(session.turns, 1)]
    return items


def session_zip(session, out_dir=None) -> str:
    """Write the session's zip to a fresh temp folder -> its path (for a download)."""
    if session is None:
        raise XPromptError("no editing session yet: upload a start image and edit it first")
    out = Path(tempfile.mkdtemp(prefix="xprompt-session-", dir=out_dir)) / f"edits-{len(session)}turns.zip"
    return str(session.export_zip(out))


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _status(how: str, img: np.ndarray, t0: float) -> str:
    return f"{how}: {img.shape[1]}x{img.shape[0]} in {time.perf_counter() - t0:.1f} s"

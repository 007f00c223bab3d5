"""Multi-turn editing: ``EditSession`` chains retrieval-augmented edits, each turn editing the last result.

Design choices
* A turn is one ``XPrompt.edit`` call on the session's current image (the start image, then each turn's
  output), so a session is only bookkeeping around the one RAIE flow: no second implementation.
* The history keeps every turn's input, instruction, settings and ``EditResult`` (output, context mode,
  retrieved instructions, scores and pairs). ``undo`` drops the last turn and the image before it becomes
  current again; nothing else is recomputed.
* The store is opened once per session (``open_store``; the default store when none is given) and reused for
  every turn: opening one loads a FAISS index and a text encoder, far slower than a search.
* ``export_zip`` writes the whole history as one zip (start image, every turn's output and retrieved pairs,
  ``history.json``), atomically; ``zip_bytes`` gives the same bytes for a download button.
* Usable without the web app: ``EditSession(XPrompt.from_pretrained(), "in.png").edit("Remove the square")``.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from xprompt.errors import XPromptError
from xprompt.images import png_bytes
from xprompt.io_utils import atomic_write_bytes
from xprompt.pipeline import EditResult


@dataclass
class Turn:
    """One edit of a session: what went in, how, and what came out."""

    instruction: str
    input: np.ndarray  # uint8 (H, W, 3): the image this turn edited
    result: EditResult  # .image is the output, .retrieved what RAIE used
    settings: dict = field(default_factory=dict)  # k, box, seed, greedy, ... as passed to XPrompt.edit

    @property
    def output(self) -> np.ndarray:
        return self.result.image

    def summary(self) -> dict:
        """JSON-able description of the turn (no pixels)."""
        return {
            "instruction": self.instruction,
            "mode": self.result.mode,
            "settings": {k: v for k, v in self.settings.items() if k != "mask"},
            "masked": self.settings.get("mask") is not None,
            "retrieved": [
                {"instruction": r.instruction, "task": r.task, "score": round(float(r.score), 4)}
                for r in self.result.retrieved
            ],
        }


class EditSession:
    """The editing history of one image. ``edit`` adds a turn, ``undo`` removes the last one."""

    def __init__(self, xp, image, *, store=None, k: int = 1, **edit_defaults):
        self.xp = xp
        self.start = xp.load(image)  # uint8 (H, W, 3) as given (edit fits it to the model's size)
        self.k = int(k)
        self.edit_defaults = dict(edit_defaults)  # e.g. greedy=True, seed=0, mode="xp"
        self._store_spec = store
        self._store = None
        self.turns: list[Turn] = []

    def __len__(self) -> int:
        return len(self.turns)

    @property
    def current(self) -> np.ndarray:
        """The image the next turn edits: the last output, or the start image before any turn."""
        return self.turns[-1].output if self.turns else self.start

    def store(self):
        """The session's ``InstructionStore``, opened on first use and then reused."""
        if self._store is None:
            from xprompt.retrieval.default_store import open_store
            from xprompt.retrieval.store import InstructionStore

            spec = self._store_spec
            self._store = spec if isinstance(spec, InstructionStore) else open_store(spec, quiet=True)
        return self._store

    def edit(self, instruction: str, *, k: int | None = None, store=None, **kw) -> EditResult:
        """Edit the current image by ``instruction`` (``kw``: any ``XPrompt.edit`` option, e.g. ``box=``,
        ``mask=``, ``seed=``); the result becomes the current image. ``k`` and ``store`` (a store or its
        directory) change the session's retrieval from this turn on."""
        if store is not None and store is not self._store_spec:
            self._store_spec, self._store = store, None
        k = self.k if k is None else int(k)
        progress = kw.pop("progress", False)  # how to report, not part of the turn's settings
        settings = {**self.edit_defaults, **kw, "k": k}
        if isinstance(instruction, str):
            instruction = instruction.strip()
        st = self.store() if k > 0 else None
        res = self.xp.edit(self.current, instruction, store=st, progress=progress, **settings)
        self.turns.append(Turn(instruction, self.current, res, settings))
        return res

    def undo(self) -> Turn:
        """Drop the last turn (its input becomes current again) and return it."""
        if not self.turns:
            raise XPromptError("nothing to undo: the session has no edits yet")
        return self.turns.pop()

    def history(self) -> list[dict]:
        """Every turn's ``Turn.summary()``, first turn first."""
        return [t.summary() for t in self.turns]

    def zip_bytes(self) -> bytes:
        """The whole session as a zip: ``start.png``, ``turn_NN/{input,output}.png``, every retrieved pair as
        ``turn_NN/retrieved_M_{source,target}.png``, and ``history.json``."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("start.png", png_bytes(self.start))
            for i, t in enumerate(self.turns, 1):
                d = f"turn_{i:02d}"
                z.writestr(f"{d}/input.png", png_bytes(t.input))
                z.writestr(f"{d}/output.png", png_bytes(t.output))
                for j, r in enumerate(t.result.retrieved, 1):
                    z.writestr(f"{d}/retrieved_{j}_source.png", png_bytes(r.pair[0]))
                    z.writestr(f"{d}/retrieved_{j}_target.png", png_bytes(r.pair[1]))
            meta = {"checkpoint": self.xp.checkpoint, "turns": self.history()}
            z.writestr("history.json", json.dumps(meta, indent=2, default=_jsonable))
        return buf.getvalue()

    def export_zip(self, path) -> Path:
        """Write ``zip_bytes()`` to ``path`` (atomically) and return it."""
        path = Path(path)
        if path.suffix.lower() != ".zip":
            raise XPromptError(f"the session export {path} must end in .zip")
        atomic_write_bytes(path, self.zip_bytes())
        return path


def _jsonable(x):
    """numpy scalars / arrays and tuples in settings -> JSON values."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")

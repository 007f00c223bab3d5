"""The unified vocabulary: one object that owns every id range.

Design choices
* Ranges are stored as explicit id arrays (code -> token id), not as offsets, so the same object describes
  our compact layout and Chameleon's 65,536-entry layout, whose image tokens are scattered and named
  ``IMGIMG<letters>Z`` (digits spelled A=0 ... J=9) and must be mapped by *name*.
* Our layout (``Vocabulary.build``): specials | text BPE | <h_1..h_max> | <w_1..w_max> | XP tokens | image
  codes. Text token ``b`` of the BPE tokenizer is vocabulary id ``text_offset + b``.
* Every lookup validates: an out-of-range code, an id of the wrong kind, a grid size above ``max_grid`` or
  an unknown special raises ``VocabularyError`` with a message that names the value and the valid range.
* ``fingerprint()`` hashes the canonical JSON; compiled prompts and checkpoints use it to refuse mismatches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xprompt.errors import VocabularyError
from xprompt.io_utils import atomic_write_text

SPECIALS = ("<pad>", "<bos>", "<eos>", "<eot>", "<boi>", "<eoi>", "<eol>")

# Chameleon / Lumina-mGPT names for our specials (overridable in ``from_chameleon``).
CHAMELEON_SPECIALS = {
    "<pad>": "<pad>",
    "<bos>": "<s>",
    "<eos>": "</s>",
    "<eot>": "<reserved08706>",
    "<boi>": "<racm3:break>",
    "<eoi>": "<eoss>",
    "<eol>": "<reserved08803>",
}
_IMG_PREFIX = "IMGIMG"
_LETTER_DIGITS = {chr(ord("A") + i): str(i) for i in range(10)}


def chameleon_image_code(name: str) -> int:
    """``IMGIMGBAZ`` -> 10: strip the prefix and the trailing letter, read the letters as digits."""
    if not name.startswith(_IMG_PREFIX) or len(name) < len(_IMG_PREFIX) + 2:
        raise VocabularyError(f"{name!r} is not a Chameleon image token name (IMGIMG<letters>Z)")
    body = name[len(_IMG_PREFIX) : -1]
    try:
        return int("".join(_LETTER_DIGITS[c] for c in body))
    except KeyError:
        raise VocabularyError(f"{name!r}: image token digits must be letters A-J") from None


def chameleon_image_name(code: int) -> str:
    return _IMG_PREFIX + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def _pack(ids: np.ndarray) -> Any:
    """Contiguous id arrays serialise as {start, count}; others as a list."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) == 0 or np.array_equal(ids, np.arange(ids[0], ids[0] + len(ids))):
        return {"start": int(ids[0]) if len(ids) else 0, "count": len(ids)}
    return ids.tolist()


def _unpack(obj: Any) -> np.ndarray:
    if isinstance(obj, dict):
        return np.arange(obj["start"], obj["start"] + obj["count"], dtype=np.int64)
    return np.asarray(obj, dtype=np.int64)


@dataclass(frozen=True)
class _Ranges:
    size: int
    specials: dict[str, int]
    text_offset: int
    text_size: int
    h_ids: np.ndarray  # (max_grid,) id of <h_n> at index n-1
    w_ids: np.ndarray  # (max_grid,)
    xp_ids: np.ndarray  # (S,)
    image_ids: np.ndarray  # (K,) id of image code k at index k
    layout: str


class Vocabulary:
    """All token id ranges of one model. Build with ``build`` (ours) or ``from_chameleon``."""

    def __init__(self, r: _Ranges):
        self._r = r
        self._check_disjoint()
        # id -> image code (-1 if not an image token); id -> kind for fast classification
        self._code_of = np.full(r.size, -1, dtype=np.int64)
        self._code_of[r.image_ids] = np.arange(len(r.image_ids))
        self._h_of = {int(t): n + 1 for n, t in enumerate(r.h_ids)}
        self._w_of = {int(t): n + 1 for n, t in enumerate(r.w_ids)}
        self._special_name = {v: k for k, v in r.specials.items()}
        self._torch_cache: dict = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, text_size: int, num_image_codes: int = 8192, num_xp: int = 32, max_grid: int = 64):
        """Our compact layout: specials | text | <h_n> | <w_n> | XP | image codes."""
        for name, v, lo in (
            ("text_size", text_size, 1),
            ("num_image_codes", num_image_codes, 2),
            ("num_xp", num_xp, 0),
            ("max_grid", max_grid, 1),
        ):
            if not isinstance(v, int) or v < lo:
                raise VocabularyError(f"{name} must be an integer >= {lo}, got {v!r}")
        n_sp = len(SPECIALS)
        t0 = n_sp
        h0 = t0 + text_size
        w0 = h0 + max_grid
        x0 = w0 + max_grid
        i0 = x0 + num_xp
        return cls(
            _Ranges(
                size=i0 + num_image_codes,
                specials={name: i for i, name in enumerate(SPECIALS)},
                text_offset=t0,
                text_size=text_size,
                h_ids=np.arange(h0, h0 + max_grid),
                w_ids=np.arange(w0, w0 + max_grid),
                xp_ids=np.arange(x0, x0 + num_xp),
                image_ids=np.arange(i0, i0 + num_image_codes),
                layout="xprompt",
            )
        )

    @classmethod
    def from_chameleon(
        cls,
        vocabulary_map: Mapping[str, int],
        *,
        num_xp: int = 32,
        xp_start: int | None = 9000,
        max_grid: int = 64,
        grid_start: int = 8804,
        reserved_format: str = "<reserved{:05d}>",
        specials: Mapping[str, str] | None = None,
    ) -> Vocabulary:
        """Describe Chameleon's vocabulary from its ``vocabulary_map`` (token name -> id).

        Image codes are found by name (``IMGIMG...``), specials by the names in ``specials`` (default:
        ``CHAMELEON_SPECIALS``). Grid tokens follow Lumina-mGPT's convention: ``<h_n>`` and ``<w_n>`` are the
        reserved tokens ``grid_start + n`` (shared by h and w, as there); XP tokens take reserved tokens from
        ``xp_start``, or, with ``xp_start=None``, ``num_xp`` new ids appended after the map (the model's embedding
        and head are then resized, ``xprompt.published.add_xp_rows``). Every name must exist in the map.
        """
        vmap = dict(vocabulary_map)
        text_size = max(vmap.values()) + 1
        size = text_size + (num_xp if xp_start is None else 0)
        names = dict(CHAMELEON_SPECIALS, **(specials or {}))

        def need(name: str) -> int:
            if name not in vmap:
                raise VocabularyError(f"token {name!r} is not in the Chameleon vocabulary map")
            return int(vmap[name])

        sp = {ours: need(theirs) for ours, theirs in names.items()}
        img = sorted((chameleon_image_code(n), i) for n, i in vmap.items() if n.startswith(_IMG_PREFIX))
        if not img:
            raise VocabularyError("the vocabulary map holds no IMGIMG... image tokens")
        codes = [c for c, _ in img]
        if codes != list(range(len(codes))):
            raise VocabularyError(f"Chameleon image codes are not 0..{len(codes) - 1} without gaps")
        grid = np.array([need(reserved_format.format(grid_start + n)) for n in range(1, max_grid + 1)])
        if xp_start is None:
            xp = np.arange(text_size, size, dtype=np.int64)
        else:
            xp = np.array([need(reserved_format.format(xp_start + s)) for s in range(num_xp)], dtype=np.int64)
        return cls(
            _Ranges(
                size=size,
                specials=sp,
                text_offset=0,
                text_size=text_size,
                h_ids=grid,
                w_ids=grid.copy(),
                xp_ids=xp,
                image_ids=np.array([i for _, i in img], dtype=np.int64),
                layout="chameleon",
            )
        )

    def _check_disjoint(self) -> None:
        r = self._r
        if r.layout == "chameleon":  # text covers everything there; only structural ranges must be disjoint
            groups = [np.array(list(r.specials.values())), r.h_ids, r.xp_ids, r.image_ids]
        else:
            groups = [
                np.array(list(r.specials.values())),
                np.arange(r.text_offset, r.text_offset + r.text_size),
                r.h_ids,
                r.w_ids,
                r.xp_ids,
                r.image_ids,
            ]
        allids = np.concatenate(groups)
        if allids.min() < 0 or allids.max() >= r.size:
            raise VocabularyError(f"vocabulary ids must lie in [0, {r.size})")
        if len(np.unique(allids)) != len(allids):
            raise VocabularyError("vocabulary ranges overlap (an id is used twice)")

    # ------------------------------------------------------------------ sizes and specials
    @property
    def size(self) -> int:
        return self._r.size

    @property
    def layout(self) -> str:
        return self._r.layout

    @property
    def num_image_codes(self) -> int:
        return len(self._r.image_ids)

    @property
    def num_xp(self) -> int:
        return len(self._r.xp_ids)

    @property
    def max_grid(self) -> int:
        return len(self._r.h_ids)

    @property
    def text_size(self) -> int:
        return self._r.text_size

    def special(self, name: str) -> int:
        try:
            return self._r.specials[name]
        except KeyError:
            raise VocabularyError(
                f"unknown special token {name!r}; known: {list(self._r.specials)}"
            ) from None

    pad_id = property(lambda self: self._r.specials["<pad>"])
    bos_id = property(lambda self: self._r.specials["<bos>"])
    eos_id = property(lambda self: self._r.specials["<eos>"])
    eot_id = property(lambda self: self._r.specials["<eot>"])
    boi_id = property(lambda self: self._r.specials["<boi>"])
    eoi_id = property(lambda self: self._r.specials["<eoi>"])
    eol_id = property(lambda self: self._r.specials["<eol>"])

    @property
    def xp_ids(self) -> np.ndarray:
        return self._r.xp_ids.copy()

    @property
    def image_ids(self) -> np.ndarray:
        """(K,) token id of every image code, in code order."""
        return self._r.image_ids.copy()

    # ------------------------------------------------------------------ text
    def text_to_ids(self, bpe_ids: Iterable[int]) -> list[int]:
        out = []
        for b in bpe_ids:
            if not 0 <= b < self._r.text_size:
                raise VocabularyError(f"text token {b} outside the text range [0, {self._r.text_size})")
            out.append(self._r.text_offset + int(b))
        return out

    def ids_to_text(self, ids: Iterable[int]) -> list[int]:
        out = []
        for i in ids:
            if not self.is_text(i):
                raise VocabularyError(f"id {i} is not a text token")
            out.append(int(i) - self._r.text_offset)
        return out

    def is_text(self, i: int) -> bool:
        r = self._r
        if not r.text_offset <= i < r.text_offset + r.text_size:
            return False
        if r.layout == "chameleon":
            return bool(self._code_of[i] < 0) and i not in self._special_name
        return True

    # ------------------------------------------------------------------ image codes
    def codes_to_ids(self, codes):
        """Image codes (any shape, numpy or torch) -> token ids of the same shape."""
        if _is_torch(codes):
            lo, hi = (int(codes.min()), int(codes.max())) if codes.numel() else (0, 0)
            self._check_codes(lo, hi)
            return self._torch("image_ids", codes.device)[codes.long()]
        codes = np.asarray(codes)
        if codes.size:
            self._check_codes(int(codes.min()), int(codes.max()))
        return self._r.image_ids[codes.astype(np.int64)]

    def ids_to_codes(self, ids):
        """Token ids (numpy or torch) -> image codes; any id that is not an image token raises."""
        if _is_torch(ids):
            self._check_id_bounds(ids)
            codes = self._torch("code_of", ids.device)[ids.long()]
            if codes.numel() and int(codes.min()) < 0:
                bad = int(ids.reshape(-1)[(codes.reshape(-1) < 0).nonzero()[0, 0]])
                raise VocabularyError(f"id {bad} is not an image token")
            return codes
        ids = np.asarray(ids, dtype=np.int64)
        self._check_id_bounds(ids)
        codes = self._code_of[ids]
        if codes.size and codes.min() < 0:
            raise VocabularyError(
                f"id {int(ids.reshape(-1)[np.argmax(codes.reshape(-1) < 0)])} is not an image token"
            )
        return codes

    def is_image(self, ids):
        """Boolean mask of image-code ids (numpy or torch)."""
        if _is_torch(ids):
            return self._torch("code_of", ids.device)[ids.long()] >= 0
        return self._code_of[np.asarray(ids, dtype=np.int64)] >= 0

    def image_token_mask(self, device=None):
        """(V,) bool torch tensor, True at image-code ids (for logits processors)."""
        return self._torch("code_of", device) >= 0

    def _check_codes(self, lo: int, hi: int) -> None:
        if lo < 0 or hi >= self.num_image_codes:
            raise VocabularyError(
                f"image code {lo if lo < 0 else hi} outside [0, {self.num_image_codes}): the image tokenizer "
                "and the vocabulary disagree on the codebook size"
            )

    def _check_id_bounds(self, ids) -> None:
        if ids.size if isinstance(ids, np.ndarray) else ids.numel():
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= self.size:
                raise VocabularyError(
                    f"token id {lo if lo < 0 else hi} outside the vocabulary [0, {self.size})"
                )

    def _torch(self, what: str, device):
        import torch

        key = (what, str(device))
        if key not in self._torch_cache:
            arr = self._r.image_ids if what == "image_ids" else self._code_of
            self._torch_cache[key] = torch.as_tensor(arr, dtype=torch.long, device=device)
        return self._torch_cache[key]

    # ------------------------------------------------------------------ grid tokens
    def h_token(self, n: int) -> int:
        self._check_grid(n, "height")
        return int(self._r.h_ids[n - 1])

    def w_token(self, n: int) -> int:
        self._check_grid(n, "width")
        return int(self._r.w_ids[n - 1])

    def grid_height(self, token_id: int) -> int:
        try:
            return self._h_of[int(token_id)]
        except KeyError:
            raise VocabularyError(f"id {token_id} is not a <h_n> grid token") from None

    def grid_width(self, token_id: int) -> int:
        try:
            return self._w_of[int(token_id)]
        except KeyError:
            raise VocabularyError(f"id {token_id} is not a <w_n> grid token") from None

    def _check_grid(self, n: int, what: str) -> None:
        if not isinstance(n, (int, np.integer)) or not 1 <= n <= self.max_grid:
            raise VocabularyError(
                f"grid {what} {n!r} outside [1, {self.max_grid}]: the image is too large for this vocabulary "
                "(resize it, or build the vocabulary with a larger max_grid)"
            )

    # ------------------------------------------------------------------ names (debugging, display)
    def token_name(self, i: int) -> str:
        i = int(i)
        if not 0 <= i < self.size:
            raise VocabularyError(f"token id {i} outside the vocabulary [0, {self.size})")
        if i in self._special_name:
            return self._special_name[i]
        if self._code_of[i] >= 0:
            return f"<img_{self._code_of[i]}>"
        if i in self._h_of and (self.layout != "chameleon"):
            return f"<h_{self._h_of[i]}>"
        if i in self._w_of:
            return f"<w_{self._w_of[i]}>" if self.layout != "chameleon" else f"<hw_{self._w_of[i]}>"
        xp = np.nonzero(self._r.xp_ids == i)[0]
        if len(xp):
            return f"<xp_{int(xp[0])}>"
        return f"<text_{i - self._r.text_offset}>"

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        r = self._r
        return {
            "format": "xprompt-vocabulary/1",
            "layout": r.layout,
            "size": r.size,
            "specials": dict(r.specials),
            "text": {"offset": r.text_offset, "size": r.text_size},
            "h_ids": _pack(r.h_ids),
            "w_ids": _pack(r.w_ids),
            "xp_ids": _pack(r.xp_ids),
            "image_ids": _pack(r.image_ids),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Vocabulary:
        if not isinstance(d, dict) or d.get("format") != "xprompt-vocabulary/1":
            raise VocabularyError("not an xprompt vocabulary file (expected format 'xprompt-vocabulary/1')")
        try:
            specials = {k: int(v) for k, v in d["specials"].items()}
            missing = [s for s in SPECIALS if s not in specials]
            if missing:
                raise VocabularyError(f"vocabulary file lacks specials {missing}")
            return cls(
                _Ranges(
                    size=int(d["size"]),
                    specials=specials,
                    text_offset=int(d["text"]["offset"]),
                    text_size=int(d["text"]["size"]),
                    h_ids=_unpack(d["h_ids"]),
                    w_ids=_unpack(d["w_ids"]),
                    xp_ids=_unpack(d["xp_ids"]),
                    image_ids=_unpack(d["image_ids"]),
                    layout=str(d["layout"]),
                )
            )
        except (KeyError, TypeError, ValueError) as e:
            raise VocabularyError(f"malformed vocabulary file: {e!r}") from None

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        if not path.is_file():
            raise VocabularyError(f"vocabulary file not found: {path}")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise VocabularyError(f"{path} is not valid JSON ({e.msg})") from None

    def fingerprint(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.fingerprint())

    def __repr__(self) -> str:
        return (
            f"Vocabulary(layout={self.layout}, size={self.size}, text={self.text_size}, "
            f"image_codes={self.num_image_codes}, xp={self.num_xp}, max_grid={self.max_grid})"
        )

    def require_same(self, other: Vocabulary, what: str = "the model") -> None:
        """Raise ``VocabularyError`` unless ``other`` is the same vocabulary."""
        if self != other:
            raise VocabularyError(
                f"vocabulary mismatch with {what}: {self!r} vs {other!r} (fingerprints "
                f"{self.fingerprint()} vs {other.fingerprint()})"
            )


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")

"""Token sequences: the image layout, segments, and the in-context sample format.

Design choices
* Image layout (Lumina-mGPT): ``<boi> <h_H> <w_W> row_1 <eol> ... row_H <eol> <eoi>``. The grid tokens make
  any resolution decodable and let a logits processor force the structure.
* Every token carries a segment tag (PREFIX, IE, XP, TD) and a loss flag. ``loss[t]`` means token ``t`` is a
  prediction *target* (predicted from position ``t-1``).
* One sample layout for training, inference and the ablation (``mode``):
    PREFIX  <bos> [instruction <eot>]
    IE      example_1 inputs, example_1 output, ... example_k ...       (modes xp, full; k >= 1)
    XP      <xp_0> ... <xp_{S-1}>                                       (mode xp, only when there are examples)
    TD      query inputs, answer, <eos>
  Mode ``none`` drops IE and XP. Text items end with ``<eot>``. The answer (and optionally the example
  outputs) carry the loss.
* Everything here is pure (numpy in, numpy out) and small enough to unit-test exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from xprompt.errors import VocabularyError, XPromptError

Item = str | np.ndarray  # text, or an image as a (h, w) array of codes
MODES = ("xp", "full", "none")


class Seg(IntEnum):
    PREFIX = 0
    IE = 1
    XP = 2
    TD = 3


@dataclass
class TokenSequence:
    ids: np.ndarray  # (T,) int64
    segs: np.ndarray  # (T,) int8, Seg values
    loss: np.ndarray  # (T,) bool, token t is a target

    def __len__(self) -> int:
        return len(self.ids)

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=np.int64)
        self.segs = np.asarray(self.segs, dtype=np.int8)
        self.loss = np.asarray(self.loss, dtype=bool)
        if not (self.ids.shape == self.segs.shape == self.loss.shape) or self.ids.ndim != 1:
            raise ValueError("ids, segs and loss must be 1-D arrays of one length")

    @staticmethod
    def concat(parts: Sequence[TokenSequence]) -> TokenSequence:
        return TokenSequence(
            np.concatenate([p.ids for p in parts]) if parts else np.zeros(0, np.int64),
            np.concatenate([p.segs for p in parts]) if parts else np.zeros(0, np.int8),
            np.concatenate([p.loss for p in parts]) if parts else np.zeros(0, bool),
        )


# ---------------------------------------------------------------------- images
def image_tokens(vocab, codes: np.ndarray) -> np.ndarray:
    """(h, w) codes -> (h*(w+1)+4,) token ids in the image layout."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] < 1 or codes.shape[1] < 1:
        raise XPromptError(f"image codes must be a non-empty (h, w) array, got shape {codes.shape}")
    h, w = codes.shape
    body = np.concatenate([vocab.codes_to_ids(codes), np.full((h, 1), vocab.eol_id)], axis=1)  # (h, w+1)
    head = [vocab.boi_id, vocab.h_token(h), vocab.w_token(w)]
    return np.concatenate([head, body.reshape(-1), [vocab.eoi_id]]).astype(np.int64)


def image_token_count(h: int, w: int) -> int:
    return h * (w + 1) + 4


def parse_image(vocab, ids: Sequence[int]) -> np.ndarray:
    """Inverse of ``image_tokens``; raises ``VocabularyError`` on any structural error."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) < 4 or ids[0] != vocab.boi_id:
        raise VocabularyError("image tokens must start with <boi> <h_H> <w_W>")
    h, w = vocab.grid_height(ids[1]), vocab.grid_width(ids[2])
    if len(ids) != image_token_count(h, w) or ids[-1] != vocab.eoi_id:
        raise VocabularyError(
            f"an {h}x{w} image needs {image_token_count(h, w)} tokens ending in <eoi>, got {len(ids)}"
        )
    body = ids[3:-1].reshape(h, w + 1)
    if not np.all(body[:, -1] == vocab.eol_id):
        raise VocabularyError("every image row must end with <eol>")
    return vocab.ids_to_codes(body[:, :-1])


def split_items(vocab, text_tok, ids: Sequence[int]) -> list[Item]:
    """Decode a token sequence into its text and image items (specials, XP tokens and <bos> dropped).

    Decoding stops at ``<eos>``. Text runs end at ``<eot>`` or at the next image.
    """
    ids = [int(i) for i in ids]
    items: list[Item] = []
    text: list[int] = []
    xp = {int(x) for x in vocab.xp_ids}

    def flush():
        if text:
            items.append(text_tok.decode(vocab.ids_to_text(text)))
            text.clear()

    i = 0
    while i < len(ids):
        t = ids[i]
        if t == vocab.eos_id:
            break
        if t == vocab.boi_id:
            flush()
            h, w = vocab.grid_height(ids[i + 1]), vocab.grid_width(ids[i + 2])
            n = image_token_count(h, w)
            items.append(parse_image(vocab, ids[i : i + n]))
            i += n
            continue
        if t == vocab.eot_id:
            flush()
        elif t in (vocab.bos_id, vocab.pad_id) or t in xp:
            pass
        else:
            text.append(t)
        i += 1
    flush()
    return items


# ---------------------------------------------------------------------- builders
class SequenceBuilder:
    """Append text, images and XP tokens with their segment tags and loss flags."""

    def __init__(self, vocab, text_tok=None):
        self.vocab, self.text_tok = vocab, text_tok
        self._ids: list[np.ndarray] = []
        self._segs: list[np.ndarray] = []
        self._loss: list[np.ndarray] = []

    def add(self, ids, seg: Seg, loss: bool = False) -> SequenceBuilder:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        self._ids.append(ids)
        self._segs.append(np.full(len(ids), int(seg), np.int8))
        self._loss.append(np.full(len(ids), bool(loss)))
        return self

    def text(self, s: str, seg: Seg, loss: bool = False, end: bool = True) -> SequenceBuilder:
        if self.text_tok is None:
            raise XPromptError("this sequence has text but no text tokenizer was given")
        ids = self.vocab.text_to_ids(self.text_tok.encode(s))
        return self.add(ids + ([self.vocab.eot_id] if end else []), seg, loss)

    def image(self, codes: np.ndarray, seg: Seg, loss: bool = False) -> SequenceBuilder:
        return self.add(image_tokens(self.vocab, codes), seg, loss)

    def item(self, it: Item, seg: Seg, loss: bool = False) -> SequenceBuilder:
        return self.text(it, seg, loss) if isinstance(it, str) else self.image(it, seg, loss)

    def xp(self) -> SequenceBuilder:
        return self.add(self.vocab.xp_ids, Seg.XP, False)

    def build(self) -> TokenSequence:
        if not self._ids:
            return TokenSequence(np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros(0, bool))
        return TokenSequence(
            np.concatenate(self._ids), np.concatenate(self._segs), np.concatenate(self._loss)
        )


def _as_list(x) -> list[Item]:
    if x is None:
        return []
    if isinstance(x, (str, np.ndarray)):
        return [x]
    return list(x)


def build_sample(
    vocab,
    text_tok,
    *,
    mode: str = "xp",
    instruction: str | None = None,
    examples: Sequence[tuple] = (),
    query: Item | Sequence[Item] = (),
    answer: Item | None = None,
    loss_on_examples: bool = False,
) -> TokenSequence:
    """Build one sample (see the module docstring for the layout).

    ``examples`` is a list of ``(inputs, output)`` where inputs is an item or a list of items (a difference
    description example has two input images and a text output). ``answer=None`` builds a prompt for
    generation: the sequence ends after the query, ready for the answer.
    """
    if mode not in MODES:
        raise XPromptError(f"unknown context mode {mode!r}; choose one of {', '.join(MODES)}")
    b = SequenceBuilder(vocab, text_tok)
    b.add([vocab.bos_id], Seg.PREFIX)
    if instruction:
        b.text(instruction, Seg.PREFIX)
    use_examples = mode in ("xp", "full") and len(examples) > 0
    if use_examples:
        for ex in examples:
            if len(ex) != 2:
                raise XPromptError("each in-context example must be an (input, output) pair")
            inputs, output = ex
            for it in _as_list(inputs):
                b.item(it, Seg.IE)
            b.item(output, Seg.IE, loss=loss_on_examples)
        if mode == "xp":
            b.xp()
    for it in _as_list(query):
        b.item(it, Seg.TD)
    if answer is not None:
        b.item(answer, Seg.TD, loss=True)
        b.add([vocab.eos_id], Seg.TD, loss=True)
    return b.build()


def with_example_loss(seq: TokenSequence, eoi_id: int, eot_id: int) -> TokenSequence:
    """``seq`` with the loss also on each in-context example's output (pure; training's ``loss_on_examples``).

    The IE segment is a run of items (images closed by ``<eoi>``, texts by ``<eot>``), each example its
    inputs then its output. An example has one input, except a difference description (two images, then
    text). Nothing outside the IE segment changes."""
    ie = np.flatnonzero(seq.segs == Seg.IE)
    if len(ie) == 0:
        return seq
    ends = ie[np.isin(seq.ids[ie], [eoi_id, eot_id])]  # last token of every IE item
    starts = np.concatenate([[ie[0]], ends[:-1] + 1])
    is_img = seq.ids[ends] == eoi_id
    loss = seq.loss.copy()
    k = 0
    while k < len(ends):
        two_in = k + 2 < len(ends) and is_img[k] and is_img[k + 1] and not is_img[k + 2]
        out = k + (2 if two_in else 1)
        if out < len(ends):
            loss[starts[out] : ends[out] + 1] = True
        k = out + 1
    return TokenSequence(seq.ids, seq.segs, loss)


def convert_mode(seq: TokenSequence, mode: str) -> TokenSequence:
    """Re-lay an ``xp``-layout sample for another context mode (pure; datasets are stored in ``xp`` layout).

    ``full`` drops the XP tokens; ``none`` drops IE and XP. ``xp`` returns the sample unchanged.
    """
    if mode not in MODES:
        raise XPromptError(f"unknown context mode {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "xp":
        return seq
    drop = {Seg.XP} if mode == "full" else {Seg.XP, Seg.IE}
    keep = ~np.isin(seq.segs, [int(s) for s in drop])
    return TokenSequence(seq.ids[keep], seq.segs[keep], seq.loss[keep])

"""Byte-level BPE text tokenizer (HF ``tokenizers``), saved as ``tokenizer.json``.

Design choices
* Byte-level pre-tokenisation and decoding, so every Unicode string round-trips exactly (no unknown token).
* The BPE tokenizer holds no model specials: ``<bos>``, ``<eot>`` ... belong to the ``Vocabulary``, which
  places text ids at an offset. This keeps one owner for every id range.
* ``save`` also writes ``tokenizer.json.integrity.json`` (size + SHA-256, ``xprompt.integrity``); ``load``
  refuses a file that no longer matches it. Text that is not valid Unicode (lone surrogates, as Python makes
  of undecodable bytes) is refused by ``encode`` with a one-line error instead of a Rust panic message.
* Training reads an iterator of strings (the task suite's instructions, captions and difference texts, plus
  any text file the user passes).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from xprompt.errors import XPromptError
from xprompt.io_utils import atomic_write_text

BPE_FORMAT = "xprompt-bpe/1"


def _verify(path: Path) -> bool:
    """Check ``tokenizer.json`` against its sidecar record (False: none, e.g. a tokenizer from elsewhere)."""
    from xprompt.integrity import read_record, sidecar, verify

    what, fix = f"BPE tokenizer {path}", "retrain it with `xprompt train bpe` or copy it again"
    record = read_record(path.parent, what, fix, name=sidecar(path).name)
    return verify(path.parent, record, what, fix)


class TextTokenizer:
    def __init__(self, tok):
        self._tok = tok

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        try:
            return self._tok.encode(text, add_special_tokens=False).ids
        except (UnicodeEncodeError, TypeError) as e:
            raise XPromptError(
                f"text is not valid Unicode ({type(e).__name__}: e.g. undecodable bytes); pass UTF-8 text"
            ) from None

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    # ------------------------------------------------------------------ training and files
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 4096, min_frequency: int = 2) -> TextTokenizer:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if vocab_size < 257:
            raise XPromptError(f"BPE vocab_size must be at least 257 (256 bytes + merges), got {vocab_size}")
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    def save(self, path: str | Path) -> None:
        """Write ``tokenizer.json`` atomically, then its size + SHA-256 in ``tokenizer.json.integrity.json``
        (the old sidecar is removed first, so an interrupted save is never checked against stale hashes)."""
        from xprompt.integrity import record_files, sidecar

        path = Path(path)
        sidecar(path).unlink(missing_ok=True)
        atomic_write_text(path, self._tok.to_str(pretty=False))
        record = dict(record_files(path.parent, [path.name]), format=BPE_FORMAT)
        atomic_write_text(sidecar(path), json.dumps(record, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        from tokenizers import Tokenizer

        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise XPromptError(f"text tokenizer not found: {path} (train one with `xprompt train bpe`)")
        _verify(path)
        try:
            return cls(Tokenizer.from_str(path.read_text()))
        except Exception as e:  # noqa: BLE001 (tokenizers raises a bare Exception on malformed files)
            raise XPromptError(f"{path} is not a valid tokenizer.json: {str(e).splitlines()[0]}") from None

    def to_json(self) -> dict:
        return json.loads(self._tok.to_str())

"""``XPrompt.from_pretrained`` refuses tokenizers other than the ones the training data was tokenized with."""

import pytest
from gen_helpers import tiny_model

from xprompt.checkpoint import save_pretrained
from xprompt.errors import XPromptError
from xprompt.paths import shipped
from xprompt.pipeline import XPrompt
from xprompt.tokenizer.loading import tokenizer_fingerprint
from xprompt.tokenizer.vocab import Vocabulary


def _checkpoint(path, bpe_fingerprint):
    bpe = shipped("bpe") / "tokenizer.json"
    vocab = Vocabulary.build(text_size=4096, num_image_codes=512, num_xp=4, max_grid=16)
    data_meta = {
        "tokenizers.json": {
            "image_tokenizer": {"path": "grid:8", "fingerprint": "grid:8"},
            "bpe": {"path": str(bpe), "fingerprint": bpe_fingerprint},
        }
    }
    extra = {
        "tokenizers": {"vq": "grid:8", "bpe": str(bpe)},
        "image_size": 32,
        "training": {"data": {"meta": data_meta}},
    }
    return save_pretrained(path, tiny_model(vocab), vocab, extra=extra)


def test_recorded_fingerprint_must_match(tmp_path):
    real = tokenizer_fingerprint("bpe", shipped("bpe"))
    XPrompt.from_pretrained(_checkpoint(tmp_path / "ok", real))  # the BPE it was trained with: loads
    bad = _checkpoint(tmp_path / "bad", "0123456789abcdef")
    with pytest.raises(
        XPromptError, match="trained with the text .BPE. tokenizer of fingerprint 0123456789abcdef"
    ):
        XPrompt.from_pretrained(bad)
    with pytest.raises(XPromptError, match="pass the tokenizer it was trained with"):
        XPrompt.from_pretrained(bad, bpe=shipped("bpe"))  # an explicit path is checked too

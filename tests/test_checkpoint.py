"""save_pretrained / load_pretrained: round trip, bf16, strictness and one-line errors."""

import json

import pytest
import torch

from xprompt.checkpoint import load_pretrained, save_pretrained
from xprompt.errors import CheckpointError
from xprompt.model import XPromptModel
from xprompt.model_config import ModelConfig
from xprompt.tokenizer.vocab import Vocabulary


@pytest.fixture
def saved(tmp_path):
    vocab = Vocabulary.build(text_size=40, num_image_codes=16, num_xp=4, max_grid=8)
    torch.manual_seed(0)
    model = XPromptModel(
        ModelConfig(vocab_size=vocab.size, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=48)
    ).eval()
    path = save_pretrained(tmp_path / "ck", model, vocab, extra={"tokenizers": {"bpe": "checkpoints/bpe"}})
    return path, model, vocab


def _legacy(path):
    """Drop meta.json's checksums, as in a checkpoint written before them: the deeper checks below then run
    (with checksums the altered files are refused earlier, as tampering; see tests/test_integrity.py)."""
    meta = json.loads((path / "meta.json").read_text())
    del meta["integrity"]
    (path / "meta.json").write_text(json.dumps(meta))


def test_round_trip_exact(saved):
    path, model, vocab = saved
    loaded, v2 = load_pretrained(path)
    assert v2 == vocab and loaded.cfg == model.cfg and not loaded.training
    x = torch.randint(0, vocab.size, (2, 7))
    torch.testing.assert_close(loaded(x), model(x), atol=0, rtol=0)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["extra"]["tokenizers"]["bpe"] == "checkpoints/bpe" and meta["dtype"] == "float32"


def test_bf16_file_and_overwrite(saved, tmp_path):
    path, model, vocab = saved
    p2 = save_pretrained(tmp_path / "bf", model, vocab, dtype=torch.bfloat16)
    assert (p2 / "model.safetensors").stat().st_size < 0.6 * (path / "model.safetensors").stat().st_size
    m2, _ = load_pretrained(p2, dtype=torch.float32)
    x = torch.randint(0, vocab.size, (1, 6))
    torch.testing.assert_close(m2(x), model(x), atol=0.05, rtol=0.05)
    save_pretrained(p2, model, vocab)  # replacing our own checkpoint is allowed
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(Exception, match="not an xprompt output"):
        save_pretrained(tmp_path / "other", model, vocab)


def test_vocab_disagreeing_with_weights(saved):
    path = saved[0]
    Vocabulary.build(text_size=41, num_image_codes=16, num_xp=4, max_grid=8).save(path / "vocab.json")
    with pytest.raises(CheckpointError, match="vocab"):
        load_pretrained(path)


def test_same_size_other_vocab_refused(saved):
    path, _, vocab = saved
    other = Vocabulary.build(
        text_size=39, num_image_codes=17, num_xp=4, max_grid=8
    )  # same size, other layout
    assert other.size == vocab.size
    _legacy(path)
    other.save(path / "vocab.json")
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_pretrained(path)


def test_weights_disagreeing_with_config(saved):
    path = saved[0]
    _legacy(path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["n_layers"] = 3
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="missing"):
        load_pretrained(path)
    cfg["n_layers"], cfg["ffn_dim"] = 2, 64
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="shape"):
        load_pretrained(path)
    cfg["ffn_dim"], cfg["bogus"] = 48, 1
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="bogus"):
        load_pretrained(path)


def test_missing_and_corrupt_files(saved, tmp_path):
    path, _, _ = saved
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(tmp_path / "nope")
    _legacy(path)
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_pretrained(path)
    (path / "vocab.json").unlink()
    with pytest.raises(CheckpointError, match="missing vocab.json"):
        load_pretrained(path)

"""``minilm-edit`` machinery: strict loading of the shipped layers, versioning by their fingerprint, training
end to end on a tiny corpus (CLI), the corpus generator's properties, and that the shipped training corpus
holds no paraphrase test sentence. Retrieval quality is measured in ``test_encoders.py``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_encoders import ALL_SETS, F_SET

from xprompt.errors import XPromptError
from xprompt.retrieval.encoders import get_encoder


@pytest.fixture(scope="module")
def minilm_edit():
    return get_encoder("minilm-edit")


def _copy_edit_ckpt(dst):
    import shutil

    from xprompt.retrieval.encoders import edit_checkpoint

    shutil.copytree(edit_checkpoint(), dst)
    # these tests rewrite the weights to exercise the strict loader behind the integrity check
    (dst / "integrity.json").unlink()
    return dst


def test_minilm_edit_loads_strictly_and_versions_by_weights(tmp_path, minilm_edit):
    import torch
    from safetensors.torch import load_file, save_file

    from xprompt.errors import ConfigError
    from xprompt.retrieval.encoders import MiniLMEncoder

    ck = _copy_edit_ckpt(tmp_path / "ok")
    state = load_file(str(ck / "model.safetensors"))
    assert set(json.loads((ck / "config.json").read_text())["layers"]) == {
        int(k.split(".")[2]) for k in state
    }  # exactly the recorded layers
    enc = MiniLMEncoder(edit_dir=ck)
    assert enc.version == minilm_edit.version  # same bytes -> same version
    np.testing.assert_allclose(enc.encode(["Flip it"]), minilm_edit.encode(["Flip it"]), atol=1e-6)
    key = next(k for k in sorted(state) if k.endswith("output.dense.bias"))
    changed = dict(state, **{key: state[key] + 0.01})
    save_file(changed, str(ck / "model.safetensors"))
    assert MiniLMEncoder(edit_dir=ck).version != minilm_edit.version  # retrained weights -> new version
    for name, bad in (
        ("extra", dict(state, **{"pooler.dense.bias": torch.zeros(384)})),
        ("missing", {k: v for k, v in state.items() if k != key}),
        ("shape", dict(state, **{key: torch.zeros(3)})),
    ):
        d = _copy_edit_ckpt(tmp_path / name)
        save_file(bad, str(d / "model.safetensors"))
        with pytest.raises(XPromptError, match="does not hold exactly|has shape"):
            MiniLMEncoder(edit_dir=d)
    d = _copy_edit_ckpt(tmp_path / "base")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(dict(cfg, base_fingerprint="0" * 16)))
    with pytest.raises(XPromptError, match="was trained on MiniLM weights 0000"):
        MiniLMEncoder(edit_dir=d)
    (d / "config.json").write_text(json.dumps(dict(cfg, surprise=1)))
    with pytest.raises(ConfigError):
        MiniLMEncoder(edit_dir=d)
    (d / "model.safetensors").write_bytes(b"garbage")
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(XPromptError, match="cannot read"):
        MiniLMEncoder(edit_dir=d)
    with pytest.raises(XPromptError, match="not a minilm-edit checkpoint"):
        MiniLMEncoder(edit_dir=tmp_path / "nowhere")


def test_train_encoder_end_to_end_tiny(tmp_path, minilm_edit, capsys):
    """`xprompt index train-encoder` on a tiny corpus (2 steps): writes strict, loadable weights + config."""
    from xprompt.cli import main
    from xprompt.retrieval.encoders import MiniLMEncoder

    ex = tmp_path / "ex.json"
    ex.write_text(json.dumps([["Remove the rain from this image.", "Derain the picture."]]))
    out = tmp_path / "enc"
    assert (
        main(
            [
                "index",
                "train-encoder",
                "--out",
                str(out),
                "--corpus-size",
                "40",
                "--batch-size",
                "8",
                "--max-steps",
                "2",
                "--exclude",
                str(ex),
            ]
        )
        == 0
    )
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["layers"] == [4, 5] and cfg["excluded_texts"] == 2 and cfg["corpus_size"] == 40
    assert json.loads((out / "train_log.json").read_text())["steps"] == 2
    enc = MiniLMEncoder(edit_dir=out)
    assert enc.version != minilm_edit.version and enc.encode(["Add rain"]).shape == (1, 384)
    capsys.readouterr()
    assert (
        main(["index", "train-encoder", "--out", str(out), "--max-steps", "1"]) == 2
    )  # exists, no --overwrite
    assert "exists and is not empty" in capsys.readouterr().err
    assert (
        main(["index", "train-encoder", "--out", str(tmp_path / "x"), "--exclude", str(tmp_path / "no.json")])
        == 2
    )
    assert "file not found" in capsys.readouterr().err
    assert main(["index", "train-encoder", "--out", str(tmp_path / "x"), "--batch-size", "1"]) == 2
    assert "batch_size must be >= 2" in capsys.readouterr().err


def test_edit_corpus_properties():
    from xprompt.retrieval.edit_corpus import batches, build_corpus, canon

    a, b, c = build_corpus(300, 0), build_corpus(300, 0), build_corpus(300, 1)
    assert a == b and a != c  # deterministic in the seed
    assert all(canon(t.anchor) != canon(t.positive) and t.key != t.neg_key for t in a)
    banned = [t.anchor for t in a[:20]]
    assert not {canon(x) for x in banned} & {
        canon(x) for t in build_corpus(300, 0, exclude=banned) for x in (t.anchor, t.positive, t.negative)
    }
    for batch in batches(a, 16):
        keys = [t.key for t in batch]
        assert len(set(keys)) == len(keys) and not {t.neg_key for t in batch} & set(keys)
    assert sorted(map(id, (t for bt in batches(a, 16) for t in bt))) == sorted(map(id, a))
    kinds = {t.key.split(":")[0] for t in a}
    assert kinds == {"ll", "op", "geo", "suite"}, kinds


# F was unknown at training time; checked afterwards, three of its sentences are also generated by the grammar
# (up to filler words): one whole pair (a 90-degree counterclockwise rotation, phrased as the grammar does) and
# one text of another pair. On the 62 other pairs minilm-edit scores 0.919 (docs/retrieval.md).
KNOWN_F_OVERLAP = {
    "Rotate the photo 90 degrees counterclockwise.",
    "turn the picture a quarter turn to the left",
    "Turn the photo into pixel art.",
}


def test_shipped_corpus_has_no_test_sentences():
    """The corpus the shipped weights were trained on (reproduced from their config, A..E excluded as at
    training) contains none of the paraphrase test sentences A..E, and of F only the known three."""
    from xprompt.retrieval.edit_corpus import CORPUS_VERSION, build_corpus, build_order_corpus, canon
    from xprompt.retrieval.encoders import edit_checkpoint

    cfg = json.loads((edit_checkpoint() / "config.json").read_text())
    ae = [t for p in ALL_SETS for t in p]
    assert cfg["corpus_version"] == CORPUS_VERSION and cfg["excluded_texts"] == len(ae)
    corpus = build_corpus(cfg["corpus_size"], cfg["corpus_seed"], exclude=ae)
    texts = {canon(x) for t in corpus for x in (t.anchor, t.positive, t.negative)}
    assert not [t for t in ae if canon(t) in texts]
    assert {t for p in F_SET for t in p if canon(t) in texts} == KNOWN_F_OVERLAP
    steps = json.loads((edit_checkpoint() / "train_log.json").read_text())["steps"]  # the margin-loss triples
    order = build_order_corpus(steps * cfg["order_batch"], cfg["corpus_seed"], exclude=ae)
    assert not {canon(x) for t in order for x in t} & {canon(t) for t in ae + [t for p in F_SET for t in p]}


def test_encoder_checkpoint_is_checked_against_its_integrity_record(tmp_path):
    import shutil

    from xprompt.errors import IntegrityError
    from xprompt.paths import shipped
    from xprompt.retrieval.train_encoder import WEIGHTS, load_edit_config

    ckpt = tmp_path / "enc"
    shutil.copytree(shipped("minilm-edit"), ckpt)
    assert (ckpt / "integrity.json").is_file() and load_edit_config(ckpt).layers
    with open(ckpt / WEIGHTS, "r+b") as f:  # same size, one byte altered
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(IntegrityError, match="modified or corrupted"):
        load_edit_config(ckpt)

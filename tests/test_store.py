"""InstructionStore: build/add/search, atomic save, checked load (encoder, truncation, corruption, counts)."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from xprompt.errors import XPromptError
from xprompt.retrieval.encoders import TextEncoder
from xprompt.retrieval.store import InstructionStore, StoreConfig


class HashEncoder(TextEncoder):
    """Fast deterministic bag-of-words encoder for tests (hashed word counts, L2-normalised)."""

    def __init__(self, dim: int = 32, name: str = "hash-bow", version: str = "1"):
        self.dim, self.name, self.version, self.spec = dim, name, version, name

    def _encode_batch(self, texts):
        import torch

        out = torch.zeros(len(texts), self.dim)  # (B, D)
        for i, t in enumerate(texts):
            for w in t.lower().strip(".").split():
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
        return out


INSTR = [
    "Remove the red circle",
    "Make the sky blue",
    "Add rain to the image",
    "Brighten this dark photo",
    "Move the square to the left",
    "Turn the cat into a dog",
]


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    src = [rng.integers(0, 256, (8 + i, 12, 3), dtype=np.uint8) for i in range(n)]
    return src, [255 - s for s in src]


@pytest.fixture()
def store():
    src, tgt = _images(len(INSTR))
    return InstructionStore.build(
        INSTR,
        src,
        tgt,
        tasks=[f"t{i}" for i in range(len(INSTR))],
        descriptions=[f"d{i}" for i in range(len(INSTR))],
        encoder=HashEncoder(),
    )


def _digest(path):
    return {
        p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_search_ranks_and_records(store):
    enc = store.encoder
    res = store.search(["remove the red circle", "the sky blue"], k=3)
    assert [len(r) for r in res] == [3, 3]
    assert (
        res[0][0][1].instruction == "Remove the red circle"
        and res[1][0][1].instruction == "Make the sky blue"
    )
    # scores are cosines of the encoder's vectors, best first
    q = enc.encode(["remove the red circle"])[0]
    want = np.sort(enc.encode(INSTR) @ q)[::-1][:3]
    np.testing.assert_allclose([s for s, _ in res[0]], want, atol=1e-5)
    rec = res[0][0][1]
    src, tgt = _images(len(INSTR))
    assert rec.id == 0 and rec.task == "t0" and rec.description == "d0"
    np.testing.assert_array_equal(rec.source_image(), src[0])
    np.testing.assert_array_equal(rec.pair()[1], tgt[0])
    assert len(store.search(["rain"], k=50)[0]) == len(INSTR)  # k larger than the store is clamped
    assert store.search("rain", k=1)[0][0][1].instruction == "Add rain to the image"


@pytest.mark.parametrize("bad", [[""], ["  \t"], ["fine", ""]])
def test_bad_queries(store, bad):
    with pytest.raises(XPromptError, match="empty"):
        store.search(bad, k=1)
    with pytest.raises(XPromptError, match="k must be"):
        store.search(["rain"], k=0)


def test_save_load_add_roundtrip(store, tmp_path):
    path = store.save(tmp_path / "st")
    man = json.loads((path / "manifest.json").read_text())
    assert man["count"] == 6 and man["encoder"]["name"] == "hash-bow" and man["factory"] == "Flat"
    assert man["created_by"].startswith("xprompt ") and man["tasks"]["t3"] == 1
    loaded = InstructionStore.load(path, HashEncoder())
    assert len(loaded) == 6
    assert loaded.search(["add rain"], 1)[0][0][1].instruction == "Add rain to the image"
    src, tgt = _images(2, seed=1)
    loaded.add(["Paint the door green", "Erase the tree"], src, tgt, tasks=["recolor", "remove"])
    with pytest.raises(XPromptError, match="exists and is not empty"):
        loaded.save(path)  # no overwrite: refused before anything is written
    loaded.save(path, overwrite=True)
    again = InstructionStore.load(path, HashEncoder())
    assert len(again) == 8
    hit = again.search(["paint the door green"], 1)[0][0][1]
    assert hit.id == 6 and hit.task == "recolor"
    np.testing.assert_array_equal(hit.source_image(), src[0])


def test_interrupted_save_keeps_previous_store(store, tmp_path, monkeypatch):
    path = store.save(tmp_path / "st")
    before = _digest(path)
    store.add(["Erase the tree"], *_images(1))
    import faiss

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(faiss, "write_index", boom)
    with pytest.raises(KeyboardInterrupt):
        store.save(path, overwrite=True)
    assert _digest(path) == before
    assert len(InstructionStore.load(path, HashEncoder())) == 6
    assert [p.name for p in tmp_path.iterdir()] == ["st"]  # no temp dirs left behind


def test_load_refuses_other_encoder(store, tmp_path):
    path = store.save(tmp_path / "st")
    for other in (HashEncoder(name="other"), HashEncoder(version="2"), HashEncoder(dim=16)):
        with pytest.raises(XPromptError, match="was built with encoder hash-bow"):
            InstructionStore.load(path, other)


def test_load_detects_damage(store, tmp_path):
    path = store.save(tmp_path / "st")
    bad = tmp_path / "bad"
    # truncated index file
    shutil.copytree(path, bad)
    data = (bad / "index.faiss").read_bytes()
    (bad / "index.faiss").write_bytes(data[: len(data) // 2])
    with pytest.raises(XPromptError, match="truncated or corrupted"):
        InstructionStore.load(bad, HashEncoder())
    # same size, flipped bytes -> checksum; without verification faiss still sees the bad vectors' header?
    (bad / "index.faiss").write_bytes(data[:40] + bytes(b ^ 0xFF for b in data[40:80]) + data[80:])
    with pytest.raises(XPromptError, match="SHA-256"):
        InstructionStore.load(bad, HashEncoder())
    # a header faiss cannot parse (checksum check skipped)
    (bad / "index.faiss").write_bytes(b"\0" * len(data))
    with pytest.raises(XPromptError, match="cannot read .*corrupted index"):
        InstructionStore.load(bad, HashEncoder(), verify=False)
    # metadata table that disagrees with the index
    shutil.rmtree(bad)
    shutil.copytree(path, bad)
    from datasets import load_from_disk

    from xprompt.retrieval.records import quiet_datasets

    meta = load_from_disk(str(path / "meta")).select(range(4))
    shutil.rmtree(bad / "meta")
    with quiet_datasets():
        meta.save_to_disk(str(bad / "meta"))
    with pytest.raises(XPromptError, match="meta/.* is truncated"):  # per-file checksums catch it first
        InstructionStore.load(bad, HashEncoder())
    with pytest.raises(XPromptError, match="has 4 rows but the index holds 6"):
        InstructionStore.load(bad, HashEncoder(), verify=False)
    # manifest problems
    (bad / "manifest.json").write_text("{not json")
    with pytest.raises(XPromptError, match="not valid JSON"):
        InstructionStore.load(bad, HashEncoder())
    (bad / "manifest.json").unlink()
    with pytest.raises(XPromptError, match="not an xprompt instruction store"):
        InstructionStore.load(bad, HashEncoder())
    with pytest.raises(XPromptError, match="store not found"):
        InstructionStore.load(tmp_path / "nope", HashEncoder())


def test_ivf_factory_trains_and_searches(tmp_path):
    words = [
        "red",
        "green",
        "blue",
        "circle",
        "square",
        "star",
        "left",
        "right",
        "add",
        "remove",
        "move",
        "big",
    ]
    rng = np.random.default_rng(0)
    instr = [" ".join(rng.choice(words, 4)) + f" {i}" for i in range(400)]
    src, tgt = [np.zeros((4, 4, 3), np.uint8)] * 400, [np.ones((4, 4, 3), np.uint8)] * 400
    cfg = StoreConfig(factory="IVF8,Flat", nprobe=8)
    st = InstructionStore.build(instr, src, tgt, encoder=HashEncoder(), config=cfg)
    assert st.index.is_trained and len(st) == 400
    exact = InstructionStore.build(instr, src, tgt, encoder=HashEncoder())
    q = instr[:20]
    assert [r[0][0] for r in st.search(q, 1)] == pytest.approx(
        [r[0][0] for r in exact.search(q, 1)], abs=1e-5
    )
    path = st.save(tmp_path / "ivf")
    re = InstructionStore.load(path, HashEncoder())
    import faiss

    assert faiss.extract_index_ivf(re.index).nprobe == 8 and re.config.factory == "IVF8,Flat"
    with pytest.raises(XPromptError, match="cannot train"):
        InstructionStore.build(
            instr[:10], src[:10], tgt[:10], encoder=HashEncoder(), config=StoreConfig(factory="IVF64,Flat")
        )
    with pytest.raises(XPromptError, match="bad faiss factory"):
        InstructionStore(HashEncoder(), StoreConfig(factory="NoSuchIndex"))
    with pytest.raises(XPromptError, match="IDMap is not supported"):
        InstructionStore(HashEncoder(), StoreConfig(factory="IDMap,Flat"))


def test_add_validates_lengths_and_images(store):
    with pytest.raises(XPromptError, match="lengths differ"):
        store.add(["a", "b"], *_images(1))
    with pytest.raises(XPromptError, match="uint8"):
        store.add(["a"], [np.zeros((4, 4, 3), np.float32)], [np.zeros((4, 4, 3), np.uint8)])
    empty = InstructionStore(HashEncoder())
    with pytest.raises(XPromptError, match="empty"):
        empty.search(["rain"], 1)


class HashImageEncoder(HashEncoder):
    """HashEncoder that also embeds images (mean colour of 4 quadrants, projected), for multimodal tests."""

    def encode_images(self, images):
        rng = np.random.default_rng(0)
        proj = rng.standard_normal((12, self.dim)).astype(np.float32)  # (12, D)
        feats = []
        for im in images:
            im = np.asarray(im, np.float32) / 255.0
            h, w = im.shape[0] // 2, im.shape[1] // 2
            feats.append(
                np.concatenate(
                    [
                        im[:h, :w].mean((0, 1)),
                        im[:h, w:].mean((0, 1)),
                        im[h:, :w].mean((0, 1)),
                        im[h:, w:].mean((0, 1)),
                    ]
                )
                - 0.5
            )
        v = np.asarray(feats, np.float32) @ proj  # (N, D)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_image_aware_rerank(tmp_path):
    """Same instruction, different sources: the query image decides (multimodal dist)."""
    red, blue, green = (
        np.zeros((8, 8, 3), np.uint8) + np.array(c, np.uint8)
        for c in ((220, 20, 20), (20, 20, 220), (20, 200, 20))
    )
    instr = ["Remove the circle", "Remove the circle", "Remove the circle", "Make it rain"]
    st = InstructionStore.build(
        instr,
        [red, blue, green, red],
        [red, blue, green, red],
        encoder=HashImageEncoder(),
        config=StoreConfig(image_vectors=True),
    )
    assert st.image_vectors.shape == (4, 32)
    for query_img, want in ((blue, 1), (green, 2), (red, 0)):
        hits = st.search(["Remove the circle"], k=2, images=[query_img], image_weight=0.5)[0]
        assert hits[0][1].id == want and hits[0][0] >= hits[1][0]
    path = st.save(tmp_path / "mm")
    assert (path / "image_vectors.npy").is_file()
    re = InstructionStore.load(path, HashImageEncoder())
    assert re.search(["Remove the circle"], k=1, images=[green])[0][0][1].id == 2
    re.add(["Remove the circle"], [np.full((8, 8, 3), 128, np.uint8)], [red])
    assert re.image_vectors.shape == (5, 32)
    np.save(path / "image_vectors.npy", np.zeros((3, 32), np.float32))  # disagrees with the index
    with pytest.raises(XPromptError, match="image_vectors.npy is truncated"):
        InstructionStore.load(path, HashImageEncoder())
    with pytest.raises(XPromptError, match="has shape"):
        InstructionStore.load(path, HashImageEncoder(), verify=False)
    text_only = InstructionStore.build(instr, [red] * 4, [red] * 4, encoder=HashImageEncoder())
    with pytest.raises(XPromptError, match="no image embeddings"):
        text_only.search(["Remove the circle"], k=1, images=[red])
    with pytest.raises(XPromptError, match="text-only"):
        InstructionStore(HashEncoder(), StoreConfig(image_vectors=True))
    with pytest.raises(XPromptError, match="image_weight"):
        st.search(["Remove the circle"], k=1, images=[red], image_weight=2.0)

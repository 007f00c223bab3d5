import json

import numpy as np
import pytest
import torch

from xprompt.errors import VocabularyError
from xprompt.tokenizer.vocab import (
    SPECIALS,
    Vocabulary,
    chameleon_image_code,
    chameleon_image_name,
)


@pytest.fixture
def vocab():
    return Vocabulary.build(text_size=100, num_image_codes=32, num_xp=4, max_grid=8)


def test_layout_is_disjoint_and_complete(vocab):
    assert vocab.size == len(SPECIALS) + 100 + 8 + 8 + 4 + 32
    ids = vocab.codes_to_ids(np.arange(32))
    assert len(set(ids.tolist())) == 32
    assert not set(ids.tolist()) & set(vocab.xp_ids.tolist())
    names = [vocab.token_name(i) for i in range(vocab.size)]
    assert len(set(names)) == vocab.size  # every id has exactly one meaning


def test_code_roundtrip_numpy_and_torch(vocab):
    codes = np.random.default_rng(0).integers(0, 32, size=(3, 5))
    ids = vocab.codes_to_ids(codes)
    assert ids.shape == codes.shape
    np.testing.assert_array_equal(vocab.ids_to_codes(ids), codes)
    t = torch.as_tensor(codes)
    assert torch.equal(vocab.ids_to_codes(vocab.codes_to_ids(t)), t)
    assert vocab.is_image(ids).all() and not vocab.is_image(np.array([vocab.bos_id]))[0]
    assert int(vocab.image_token_mask().sum()) == 32


@pytest.mark.parametrize("bad", [-1, 32, 1000])
def test_out_of_range_code_raises(vocab, bad):
    with pytest.raises(VocabularyError, match="outside"):
        vocab.codes_to_ids(np.array([0, bad]))


def test_non_image_id_raises(vocab):
    with pytest.raises(VocabularyError, match="not an image token"):
        vocab.ids_to_codes(np.array([vocab.bos_id]))
    with pytest.raises(VocabularyError, match="not an image token"):
        vocab.ids_to_codes(torch.tensor([vocab.eol_id]))
    with pytest.raises(VocabularyError, match="outside the vocabulary"):
        vocab.ids_to_codes(np.array([vocab.size]))


def test_grid_tokens(vocab):
    assert vocab.grid_height(vocab.h_token(3)) == 3
    assert vocab.grid_width(vocab.w_token(8)) == 8
    for bad in (0, 9):
        with pytest.raises(VocabularyError, match="grid"):
            vocab.h_token(bad)
    with pytest.raises(VocabularyError, match="<w_n>"):
        vocab.grid_width(vocab.h_token(2))


def test_specials_and_text(vocab):
    assert [vocab.special(s) for s in SPECIALS] == list(range(len(SPECIALS)))
    with pytest.raises(VocabularyError, match="unknown special"):
        vocab.special("<mask>")
    ids = vocab.text_to_ids([0, 5, 99])
    assert vocab.ids_to_text(ids) == [0, 5, 99]
    with pytest.raises(VocabularyError, match="text range"):
        vocab.text_to_ids([100])
    with pytest.raises(VocabularyError, match="not a text token"):
        vocab.ids_to_text([vocab.boi_id])


def test_json_roundtrip_and_fingerprint(vocab, tmp_path):
    vocab.save(tmp_path / "vocab.json")
    loaded = Vocabulary.load(tmp_path / "vocab.json")
    assert loaded == vocab and loaded.fingerprint() == vocab.fingerprint()
    other = Vocabulary.build(text_size=100, num_image_codes=64, num_xp=4, max_grid=8)
    assert other.fingerprint() != vocab.fingerprint()
    with pytest.raises(VocabularyError, match="mismatch"):
        vocab.require_same(other)
    (tmp_path / "bad.json").write_text(json.dumps({"format": "nope"}))
    with pytest.raises(VocabularyError, match="not an xprompt vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")


def test_build_rejects_bad_sizes():
    with pytest.raises(VocabularyError):
        Vocabulary.build(text_size=0)
    with pytest.raises(VocabularyError):
        Vocabulary.build(text_size=10, num_image_codes=-5)


def test_chameleon_names():
    assert chameleon_image_code("IMGIMGBAZ") == 10
    assert chameleon_image_code("IMGIMGAZ") == 0
    assert chameleon_image_name(8191) == "IMGIMGIBJBZ"
    for c in (0, 7, 10, 123, 8191):
        assert chameleon_image_code(chameleon_image_name(c)) == c
    with pytest.raises(VocabularyError):
        chameleon_image_code("IMGIMGxyZ")


def synthetic_chameleon_map(n_codes=64, size=10000, seed=0):
    """A vocabulary map in Chameleon's format: image tokens named IMGIMG..Z at scattered ids."""
    rng = np.random.default_rng(seed)
    vmap = {"<s>": 0, "<pad>": 1, "</s>": 2, "<eoss>": 8196, "<racm3:break>": 8197}
    for i in range(3, size):
        vmap.setdefault(f"<reserved{i:05d}>", i) if i >= 8198 else None
    free = [i for i in range(3, 8196)]
    img_ids = rng.choice(free, size=n_codes, replace=False)
    for code, tid in enumerate(img_ids):
        vmap[chameleon_image_name(code)] = int(tid)
    used = set(vmap.values())
    for i in range(size):
        if i not in used:
            vmap[f"tok{i}"] = i
    return vmap, img_ids


def test_from_chameleon_maps_images_by_name(tmp_path):
    vmap, img_ids = synthetic_chameleon_map()
    path = tmp_path / "vocab_map.json"
    path.write_text(json.dumps(vmap))
    v = Vocabulary.from_chameleon(json.loads(path.read_text()), num_xp=8, max_grid=32)
    assert v.layout == "chameleon" and v.size == 10000 and v.num_image_codes == 64
    np.testing.assert_array_equal(v.codes_to_ids(np.arange(64)), img_ids)  # by name, not offset
    assert v.bos_id == 0 and v.eos_id == 2 and v.boi_id == 8197 and v.eoi_id == 8196
    assert v.h_token(1) == 8805 and v.w_token(1) == 8805
    assert v.is_text(5 if 5 not in img_ids else 6) and not v.is_text(int(img_ids[0]))
    assert Vocabulary.from_dict(v.to_dict()) == v


def test_from_chameleon_rejects_missing_tokens():
    vmap, _ = synthetic_chameleon_map()
    del vmap["<racm3:break>"]
    with pytest.raises(VocabularyError, match="racm3"):
        Vocabulary.from_chameleon(vmap)
    vmap, _ = synthetic_chameleon_map()
    del vmap[chameleon_image_name(5)]
    with pytest.raises(VocabularyError, match="without gaps"):
        Vocabulary.from_chameleon(vmap)

"""``xprompt index build --pairs magicbrush=PATH``: a RAIE store from a real edit set keeps masks, turn indices
and image ids in its metadata; stores without them are unchanged and can be extended by such a table."""

import json

import numpy as np
import pytest
from test_data_real import MB_TRAIN, _magicbrush
from test_store import HashEncoder, store  # noqa: F401  (the in-memory store fixture)

from xprompt.cli import main
from xprompt.errors import XPromptError
from xprompt.retrieval.sources import load_pairs
from xprompt.retrieval.store import InstructionStore


def test_index_build_from_magicbrush_keeps_masks_and_turns(tmp_path, capsys):
    mb = _magicbrush(tmp_path / "mb")
    out = tmp_path / "store"
    assert (
        main(["index", "build", "--pairs", f"magicbrush={mb}", "--out", str(out), "--encoder", "minilm"]) == 0
    )
    man = json.loads((out / "manifest.json").read_text())
    assert man["count"] == len(MB_TRAIN) and man["tasks"] == {"magicbrush": 4}
    assert man["extra_columns"] == ["mask", "turn_index", "img_id"]
    st = InstructionStore.load(out)
    assert st.has_extra
    from xprompt.readers import open_dataset

    ds = open_dataset("magicbrush", mb)
    for i in range(len(MB_TRAIN)):
        rec, pair = st.record(i), ds.load("train", str(i))
        assert rec.instruction == MB_TRAIN[i] and rec.turn_index == 1 and rec.img_id == str(i)
        np.testing.assert_array_equal(rec.mask_array(), pair.extra["mask"])
        np.testing.assert_array_equal(rec.source_image(), pair.input)
    (score, rec), *_ = st.search(["make the sky red"], k=1)[0]
    assert rec.id == 0 and score > 0.99
    capsys.readouterr()  # the build's "wrote ..." line
    assert main(["index", "search", "--store", str(out), "--instruction", "make the sea red", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)["results"]
    assert hits[0]["instruction"] == "make the sea red" and hits[0]["turn_index"] == 1 and hits[0]["has_mask"]
    # the dev split on request; a non-edit set is refused
    assert len(load_pairs(f"magicbrush={mb}", split="dev")) == 1
    with pytest.raises(XPromptError, match="a RAIE store holds edit pairs; ade20k is a segmentation set"):
        (tmp_path / "ade" / "images").mkdir(parents=True)
        (tmp_path / "ade" / "annotations").mkdir()
        load_pairs(f"ade20k={tmp_path / 'ade'}")


def test_extra_columns_join_a_store_without_them(store, tmp_path):  # noqa: F811
    assert not store.has_extra and store.record(0).mask is None and store.record(0).turn_index is None
    n = len(store)
    store.add_table(load_pairs(f"magicbrush={_magicbrush(tmp_path / 'mb')}"))
    assert store.has_extra and len(store) == n + 4
    assert store.record(0).mask is None and store.record(0).turn_index is None  # earlier rows: null
    assert store.record(n + 1).turn_index == 1 and store.record(n + 1).mask_array().any()
    store.save(tmp_path / "s")
    again = InstructionStore.load(tmp_path / "s", HashEncoder())
    assert again.record(n + 2).instruction == MB_TRAIN[2] and again.record(1).mask is None

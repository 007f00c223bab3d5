"""The split modules keep their public import paths: what users and docs import from the old module is the
very object defined in its new home (re-exported, not copied)."""

import importlib

import pytest

# (old module, name, new home): the documented imports of the four modules split by concern
REEXPORTS = [
    ("xprompt.pipeline", "EditResult", "xprompt.results"),
    ("xprompt.pipeline", "Retrieved", "xprompt.results"),
    ("xprompt.pipeline", "Description", "xprompt.results"),
    ("xprompt.retrieval.store", "Record", "xprompt.retrieval.records"),
    ("xprompt.retrieval.store", "encode_image", "xprompt.retrieval.records"),
    ("xprompt.retrieval.store", "decode_image", "xprompt.retrieval.records"),
    ("xprompt.retrieval.store", "StoreConfig", "xprompt.retrieval.faiss_index"),
    ("xprompt.retrieval.store", "store_config_from_args", "xprompt.retrieval.faiss_index"),
    ("xprompt.retrieval.store", "read_manifest", "xprompt.retrieval.store_format"),
    ("xprompt.retrieval.store", "check_encoder", "xprompt.retrieval.store_format"),
    ("xprompt.eval.benchmarks", "EvalConfig", "xprompt.eval.eval_config"),
]


@pytest.mark.parametrize(("old", "name", "new"), REEXPORTS)
def test_old_import_path_gives_the_object_of_the_new_home(old, name, new):
    assert getattr(importlib.import_module(old), name) is getattr(importlib.import_module(new), name)


def test_store_all_names_resolve():
    store = importlib.import_module("xprompt.retrieval.store")
    assert store.__all__ and all(hasattr(store, n) for n in store.__all__)


def test_entry_points_stay_in_their_modules():
    """The entry points are defined (not only imported) where the docs and the CLI name them."""
    for mod, name in [
        ("xprompt.pipeline", "XPrompt"),
        ("xprompt.retrieval.store", "InstructionStore"),
        ("xprompt.train.trainer", "train"),
        ("xprompt.eval.benchmarks", "run"),
        ("xprompt.eval.benchmarks", "check_checkpoint"),
    ]:
        assert getattr(importlib.import_module(mod), name).__module__ == mod, (mod, name)

"""`xprompt index build/search` and `xprompt edit`: sources, output, and bad input -> exit 2, store untouched."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from xprompt.cli import main


def _digest(path):
    return {
        p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def suite_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "suite-store"
    assert main(["index", "build", "--pairs", "suite:edit:36", "--out", str(out), "--size", "32"]) == 0
    return out


def test_build_from_suite_and_search(suite_store, capsys):
    man = json.loads((suite_store / "manifest.json").read_text())
    assert (
        man["count"] == 36 and man["encoder"]["spec"] == "minilm-edit"
    )  # the default encoder since issue #6
    assert man["encoder"]["name"] == "all-MiniLM-L6-v2-edit" and "+edit" in man["encoder"]["version"]
    assert set(man["tasks"]) == {
        "add_object",
        "remove_object",
        "recolor",
        "move",
        "resize",
        "replace_background",
    }
    capsys.readouterr()
    assert (
        main(
            [
                "index",
                "search",
                "--store",
                str(suite_store),
                "--instruction",
                "Delete the red square",
                "-k",
                "3",
                "--json",
            ]
        )
        == 0
    )
    hits = json.loads(capsys.readouterr().out)["results"]  # one JSON object on stdout
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert hits[0]["task"] == "remove_object"
    assert main(["index", "search", "--store", str(suite_store), "--instruction", "Swap the backdrop"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["rank", "score", "task"] and len(lines) == 6
    assert "replace_background" in lines[1]


def test_build_from_magicbrush_style_datasets_dir(tmp_path, capsys):
    from datasets import Dataset, DatasetDict, Features, Image, Value

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (24, 24, 3), dtype=np.uint8) for _ in range(4)]
    feats = Features(
        {
            "img_id": Value("string"),
            "source_img": Image(),
            "target_img": Image(),
            "instruction": Value("string"),
        }
    )
    ds = Dataset.from_dict(
        {
            "img_id": list("abcd"),
            "source_img": imgs,
            "target_img": imgs[::-1],
            "instruction": [
                "let the cat wear a hat",
                "make the sky pink",
                "remove the boat",
                "add fireworks in the sky",
            ],
        },
        features=feats,
    )
    DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "mb"))
    out = tmp_path / "mb-store"
    assert main(["index", "build", "--pairs", str(tmp_path / "mb"), "--out", str(out)]) == 0
    from xprompt.retrieval.store import InstructionStore

    st = InstructionStore.load(out)
    ((score, rec),) = st.search(["put a hat on the cat"], k=1)[0:1][0]
    assert rec.instruction == "let the cat wear a hat" and rec.task == "mb" and score > 0.5
    np.testing.assert_array_equal(rec.source_image(), imgs[0])
    np.testing.assert_array_equal(rec.target_image(), imgs[3])
    capsys.readouterr()
    assert (
        main(
            [
                "index",
                "build",
                "--pairs",
                str(tmp_path / "mb"),
                "--out",
                str(tmp_path / "x"),
                "--instruction-column",
                "edit",
            ]
        )
        == 2
    )
    assert "lacks column(s) ['edit']" in capsys.readouterr().err


def _damage(store, tmp_path, how):
    import shutil

    bad = tmp_path / how
    shutil.copytree(store, bad)
    if how == "truncated":
        data = (bad / "index.faiss").read_bytes()
        (bad / "index.faiss").write_bytes(data[: len(data) - 100])
    elif how == "encoder":
        man = json.loads((bad / "manifest.json").read_text())
        # as if built by another 384-d encoder whose weights are not on this machine
        man["encoder"].update(
            name="paraphrase-MiniLM-L3-v2", version="0123456789abcdef", spec="openclip:ViT-B-32:/nowhere.bin"
        )
        (bad / "manifest.json").write_text(json.dumps(man))
    elif how == "count":
        man = json.loads((bad / "manifest.json").read_text())
        man["count"] += 1
        (bad / "manifest.json").write_text(json.dumps(man))
    return bad


@pytest.mark.parametrize(
    ("how", "args", "msg"),
    [
        ("truncated", [], "truncated or corrupted"),
        ("encoder", ["--encoder", "minilm"], "was built with encoder paraphrase-MiniLM-L3-v2"),
        ("encoder", [], "CLIP weights file not found"),
        ("count", [], "holds 36 vectors"),
    ],
)
def test_search_refuses_damaged_store(suite_store, tmp_path, capsys, how, args, msg):
    bad = _damage(suite_store, tmp_path, how)
    before = _digest(bad)
    assert main(["index", "search", "--store", str(bad), "--instruction", "remove it", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xprompt: error: ") and msg in err and len(err.strip().splitlines()) == 1
    assert _digest(bad) == before


def test_store_built_with_openclip_refuses_minilm_queries(tmp_path, capsys):
    """A real store built with a (tiny, random) CLIP text tower; querying it with MiniLM is refused."""
    import open_clip
    import torch
    from safetensors.torch import save_file
    from test_encoders import TINY_CLIP

    (tmp_path / "xp-tiny-clip-cli.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(tmp_path / "xp-tiny-clip-cli.json")
    torch.manual_seed(0)
    model = open_clip.create_model("xp-tiny-clip-cli", pretrained=None, load_weights=False)
    save_file(model.state_dict(), str(tmp_path / "clip.safetensors"))
    spec = f"openclip:xp-tiny-clip-cli:{tmp_path / 'clip.safetensors'}"
    out = tmp_path / "clip-store"
    assert (
        main(
            [
                "index",
                "build",
                "--pairs",
                "suite:recolor:6",
                "--size",
                "16",
                "--out",
                str(out),
                "--encoder",
                spec,
                "--image-embeddings",
            ]
        )
        == 0
    )
    man = json.loads((out / "manifest.json").read_text())
    assert man["encoder"]["dim"] == 32 and man["image_vectors"] is True
    from xprompt.retrieval.store import InstructionStore

    st = InstructionStore.load(out)  # the encoder comes from the manifest's spec
    src = st.record(3).source_image()
    hits = st.search(["paint it red"], k=6, images=[src], image_weight=1.0)[0]
    assert hits[0][1].id == 3 and hits[0][0] == pytest.approx(1.0, abs=1e-4)  # its own source image
    capsys.readouterr()
    assert (
        main(
            [
                "index",
                "build",
                "--pairs",
                "suite:recolor:6",
                "--size",
                "16",
                "--out",
                str(tmp_path / "mm"),
                "--image-embeddings",
            ]
        )
        == 2
    )
    assert "text-only" in capsys.readouterr().err
    assert main(["index", "search", "--store", str(out), "--instruction", "paint it red", "-k", "2"]) == 0
    before = _digest(out)
    capsys.readouterr()
    assert (
        main(["index", "search", "--store", str(out), "--instruction", "paint it red", "--encoder", "minilm"])
        == 2
    )
    assert "was built with encoder openclip:xp-tiny-clip-cli" in capsys.readouterr().err
    assert _digest(out) == before


def test_bad_input_exit_2_store_untouched(suite_store, tmp_path, capsys):
    before = _digest(suite_store)
    for argv, msg in [
        (["index", "search", "--store", str(suite_store), "--instruction", "   "], "empty or whitespace"),
        (["index", "search", "--store", str(suite_store), "--instruction", "x", "-k", "0"], "k must be"),
        (["index", "search", "--store", str(tmp_path / "none"), "--instruction", "x"], "store not found"),
        (["index", "build", "--pairs", "suite:edit:4", "--out", str(suite_store)], "pass --overwrite"),
        (
            ["index", "build", "--pairs", "suite:nosuchfamily:4", "--out", str(tmp_path / "o")],
            "no suite task",
        ),
        (["index", "build", "--pairs", "suite:edit:zero", "--out", str(tmp_path / "o")], "not an integer"),
        (
            ["index", "build", "--pairs", str(tmp_path / "missing"), "--out", str(tmp_path / "o")],
            "not a directory",
        ),
        (
            [
                "index",
                "build",
                "--pairs",
                "suite:edit:4",
                "--out",
                str(tmp_path / "o"),
                "--factory",
                "IVF64,Flat",
            ],
            "cannot train",
        ),
        (
            [
                "edit",
                "--image",
                str(tmp_path / "no.png"),
                "--instruction",
                "x",
                "-o",
                str(tmp_path / "o.png"),
            ],
            "file not found",
        ),
        (
            [
                "edit",
                "--image",
                str(tmp_path / "no.png"),
                "--instruction",
                " ",
                "-o",
                str(tmp_path / "o.png"),
            ],
            "empty or whitespace",
        ),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err, (argv, err)
    assert _digest(suite_store) == before
    assert not (tmp_path / "o").exists()


def test_edit_show_retrieved_and_no_retrieval(suite_store, tmp_path, capsys):
    """End to end through the pipeline API with a tiny random model checkpoint."""
    from gen_helpers import tiny_checkpoint
    from PIL import Image

    ckpt = tiny_checkpoint(tmp_path / "ckpt", image_size=32)
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(tmp_path / "in.png")
    out = tmp_path / "out.png"
    assert (
        main(
            [
                "edit",
                "--image",
                str(tmp_path / "in.png"),
                "--instruction",
                "Remove the blue circle",
                "--store",
                str(suite_store),
                "-k",
                "2",
                "--show-retrieved",
                "--checkpoint",
                str(ckpt),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    cap = capsys.readouterr()
    assert cap.err.count("retrieved ") == 2 and "mode xp, 2 retrieved" in cap.out
    edited = np.asarray(Image.open(out))
    assert edited.shape == (40, 40, 3) and edited.dtype == np.uint8  # the input's size, not the model's 32
    grid = np.asarray(Image.open(tmp_path / "out.retrieved.png"))
    # a label strip, then two retrieved pairs + the query/output row, each under a caption strip; 96 px cells
    assert grid.shape[0] == 4 + (26 + 4) + 3 * (26 + 4 + 96 + 4)
    assert (
        main(
            [
                "edit",
                "--image",
                str(tmp_path / "in.png"),
                "--instruction",
                "Remove the blue circle",
                "--no-retrieval",
                "--checkpoint",
                str(ckpt),
                "-o",
                str(tmp_path / "o2.png"),
                "--greedy",
            ]
        )
        == 0
    )
    assert "mode none, 0 retrieved" in capsys.readouterr().out
    assert (
        main(
            [
                "edit",
                "--image",
                str(tmp_path / "in.png"),
                "--instruction",
                "x",
                "--store",
                str(suite_store),
                "--checkpoint",
                str(tmp_path / "no-model"),
                "-o",
                str(tmp_path / "o3.png"),
            ]
        )
        == 2
    )
    assert "model checkpoint not found" in capsys.readouterr().err
    assert not (tmp_path / "o3.png").exists()


def test_default_store_built_on_first_use(tmp_path, monkeypatch, capsys):
    import xprompt.retrieval.default_store as rcli

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XPROMPT_HOME", str(tmp_path / "no-shipped"))
    monkeypatch.setattr(rcli, "DEFAULT_SUITE", "suite:edit:12")
    monkeypatch.setattr(rcli, "DEFAULT_SIZE", 16)
    assert main(["index", "search", "--instruction", "Make the red star blue", "-k", "2"]) == 0
    cap = capsys.readouterr()
    assert "building the default RAIE store" in cap.err and len(cap.out.splitlines()) == 3
    path = rcli.default_store_path()
    assert (
        path.is_relative_to(tmp_path / "cache")
        and json.loads((path / "manifest.json").read_text())["count"] == 12
    )
    assert main(["index", "search", "--instruction", "Make the red star blue", "-k", "2"]) == 0
    assert "building" not in capsys.readouterr().err  # loaded, not rebuilt


def test_op_encoder_store_end_to_end(tmp_path, capsys):
    """`--encoder minilm+op`: the manifest records it (spec, 398-d, +op1 version), search needs no --encoder
    (taken from the manifest) and gets both directions of a low-level task right; a default-encoder query is
    refused with one line."""
    out = tmp_path / "op-store"
    assert (
        main(
            [
                "index",
                "build",
                "--pairs",
                "suite:lowlevel,degrade:28",
                "--out",
                str(out),
                "--size",
                "16",
                "--encoder",
                "minilm+op",
            ]
        )
        == 0
    )
    enc = json.loads((out / "manifest.json").read_text())["encoder"]
    assert enc["spec"] == "minilm+op" and enc["dim"] == 398 and "+op1" in enc["version"]
    capsys.readouterr()
    for text, task in (
        ("Make this photo grainy", "add_noise"),
        ("Get rid of the grain in this photo", "denoise"),
    ):
        assert main(["index", "search", "--store", str(out), "--instruction", text, "-k", "1", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["results"][0]["task"] == task, text
    assert main(["index", "search", "--store", str(out), "--instruction", "x", "--encoder", "minilm"]) == 2
    err = capsys.readouterr().err
    assert "was built with encoder all-MiniLM-L6-v2 (dim 398" in err and len(err.strip().splitlines()) == 1


def test_default_store_rebuilt_when_encoder_version_changes(tmp_path, monkeypatch, capsys):
    import xprompt.retrieval.default_store as rcli

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XPROMPT_HOME", str(tmp_path / "no-shipped"))
    monkeypatch.setattr(rcli, "DEFAULT_SUITE", "suite:edit:6")
    monkeypatch.setattr(rcli, "DEFAULT_SIZE", 16)
    path = rcli.default_store_path()
    assert len(rcli.open_store(quiet=True)) == 6
    man = json.loads((path / "manifest.json").read_text())
    man["encoder"]["version"] += "+old"  # as if built by an older rewriting of the same spec
    (path / "manifest.json").write_text(json.dumps(man))
    capsys.readouterr()
    assert len(rcli.open_store()) == 6
    assert "encoder version changed; rebuilding" in capsys.readouterr().err
    assert "+old" not in json.loads((path / "manifest.json").read_text())["encoder"]["version"]


def test_default_store_follows_the_default_encoder(tmp_path, monkeypatch, capsys):
    """A default store cached for the pre-issue-#6 default (minilm) is not used for default queries: the cache
    key includes the encoder, so a minilm-edit store is built beside it. A store placed at the shipped location
    but built with another encoder is used with its own encoder, with a note on stderr."""
    import xprompt.retrieval.default_store as rcli

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XPROMPT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(rcli, "DEFAULT_SUITE", "suite:edit:6")
    monkeypatch.setattr(rcli, "DEFAULT_SIZE", 16)
    old = rcli.open_store(encoder="minilm", quiet=True)
    assert old.encoder.spec == "minilm" and rcli.default_store_path("minilm") != rcli.default_store_path()
    capsys.readouterr()
    new = rcli.open_store()
    assert new.encoder.spec == "minilm-edit" and "building the default RAIE store" in capsys.readouterr().err
    assert (
        json.loads((rcli.default_store_path() / "manifest.json").read_text())["encoder"]["spec"]
        == "minilm-edit"
    )
    shipped = tmp_path / "home" / "raie-store"
    assert (
        main(
            [
                "index",
                "build",
                "--pairs",
                "suite:edit:6",
                "--out",
                str(shipped),
                "--size",
                "16",
                "--encoder",
                "minilm",
            ]
        )
        == 0
    )
    capsys.readouterr()
    st = rcli.open_store()
    assert st.path == shipped and st.encoder.spec == "minilm"
    err = capsys.readouterr().err
    assert (
        "was built with encoder minilm, not the default minilm-edit" in err
        and len(err.strip().splitlines()) == 1
    )

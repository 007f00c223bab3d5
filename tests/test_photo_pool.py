"""Training photograph pools: the committed Debian manifest, checksum verification, pool selection per build."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xprompt.cli import main
from xprompt.errors import XPromptError
from xprompt.train import photo_pool, sources
from xprompt.train.build import DataMix


@pytest.fixture
def fake_pool(tmp_path, monkeypatch):
    """A 'debian' pool of three small photographs (one larger than the decode cap) under tmp_path."""
    rng = np.random.default_rng(0)
    entries = []
    for i, (w, h) in enumerate([(300, 200), (200, 260), (2 * sources.MAX_SHORT_SIDE + 40, 1200)]):
        p = tmp_path / f"photo{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(p)
        entries.append({"path": str(p), "package": "fake", "bytes": p.stat().st_size,
                        "sha256": photo_pool.sha256_file(p)})  # fmt: skip
    monkeypatch.setattr(photo_pool, "load_manifest", lambda: tuple(entries))
    load = sources._load_rgb  # the cached function (a test may wrap it)
    photo_pool.debian_paths.cache_clear()
    load.cache_clear()
    with sources.photo_pool_scope():
        yield entries
    photo_pool.debian_paths.cache_clear()
    load.cache_clear()


def test_committed_manifest_is_sane():
    entries = photo_pool.load_manifest()
    assert len(entries) >= 200
    assert len({e["path"] for e in entries}) == len(entries) == len({e["sha256"] for e in entries})
    assert {e["package"] for e in entries} == set(photo_pool.PACKAGES)
    evals = {photo_pool.sha256_file(p) for p in sources.photo_names("eval")}
    assert not evals & {e["sha256"] for e in entries}  # evaluation photographs never reach a training pool


def test_packaged_pool_ignores_installed_packages():
    # whatever Debian packages this machine has, the default pool is the nine packaged photographs
    assert sources.current_photo_pool() == "packaged"
    assert len(sources.photo_names("train")) == len(sources.TRAIN_PHOTOS)


def test_debian_pool_draws_from_manifest_files_with_capped_decode(fake_pool, monkeypatch):
    sources.set_photo_pool("debian")
    names = sources.photo_names("train")
    assert names[-3:] == tuple(e["path"] for e in fake_pool)
    assert not set(names) & set(sources.photo_names("eval"))
    big = sources._load_rgb(fake_pool[2]["path"], cap=True)
    assert min(big.shape[:2]) == sources.MAX_SHORT_SIDE and big.shape[2] == 3
    seen = []
    real = sources._load_rgb
    monkeypatch.setattr(sources, "_load_rgb", lambda p, cap=False: seen.append((p, cap)) or real(p, cap))
    rng = np.random.default_rng(3)
    for _ in range(80):
        assert sources.photo_crop(rng, 64).shape == (64, 64, 3)
    pool_files = {e["path"] for e in fake_pool}
    assert {p for p, _ in seen} & pool_files
    assert all(cap == (p in pool_files) for p, cap in seen)  # packaged photographs decode uncapped
    card = sources.pool_card("debian")
    assert card["pool"] == "debian" and card["photos"] == len(sources.TRAIN_PHOTOS) + 3
    assert card["fingerprint"] != sources.pool_card("packaged")["fingerprint"]


def test_scope_restores_the_pool(fake_pool):
    with sources.photo_pool_scope():
        sources.set_photo_pool("debian")
    assert sources.current_photo_pool() == "packaged"


def test_missing_or_changed_files_are_refused(fake_pool, tmp_path):
    with open(fake_pool[1]["path"], "ab") as f:
        f.write(b"x")
    with pytest.raises(XPromptError, match="differs from the manifest"):
        sources.set_photo_pool("debian")
    photo_pool.debian_paths.cache_clear()
    (tmp_path / "photo0.png").unlink()
    with pytest.raises(XPromptError, match=r"1 of 3 files are missing .*make photos"):
        sources.set_photo_pool("debian")


def test_unknown_pool_is_refused():
    with pytest.raises(XPromptError, match="unknown photo pool"):
        sources.set_photo_pool("flickr")
    with pytest.raises(XPromptError, match="unknown photo pool"):
        DataMix(photo_pool="flickr")


def test_data_photos_cli_reports_each_pool(fake_pool, capsys):
    assert main(["data", "photos"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["pool"] for r in rows] == ["packaged", "debian"] and rows[1]["photos"] == len(
        sources.TRAIN_PHOTOS
    ) + 3
    photo_pool.debian_paths.cache_clear()
    Path(fake_pool[0]["path"]).unlink()
    assert main(["data", "photos"]) == 1
    assert "make photos" in capsys.readouterr().out


def test_build_records_its_pool_and_leaves_the_process_pool_alone(fake_pool, tmp_path):
    from xprompt.paths import shipped
    from xprompt.train.build import BuildConfig, build_dataset

    cfg = BuildConfig(n=4, size=32, seed=0, chunk=4, mix={"photo_pool": "debian"})
    card = build_dataset(cfg, tmp_path / "ds", tokenizer="grid:8", bpe=str(shipped("bpe")), progress=False)
    assert card["photos"] == sources.pool_card("debian") and card["mix"]["photo_pool"] == "debian"
    assert sources.current_photo_pool() == "packaged"
    cfg = BuildConfig(n=4, size=32, seed=0, chunk=4)
    card = build_dataset(cfg, tmp_path / "ds2", tokenizer="grid:8", bpe=str(shipped("bpe")), progress=False)
    assert card["photos"]["pool"] == "packaged" and card["photos"]["photos"] == len(sources.TRAIN_PHOTOS)

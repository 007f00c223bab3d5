"""Interrupted and concurrent writes (issue 15; docs/reliability.md): ``kill -9`` at the swap, a kill inside a
write, and a full disk, during ``index build --overwrite``, ``export``, ``data build --overwrite``,
``compile-prompt`` and a training checkpoint save, each run through the real entry point in a subprocess
(``tests/cli_runner.py`` injects the fault). After each: the previous artefact is byte-for-byte unchanged and
loads, nothing new is visible beside it, and the next normal run succeeds (and, for directories, clears the
killed writer's temp files). Two writers of one store or export folder: one result, one clear error.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gen_helpers import tiny_checkpoint, write_png
from test_bad_inputs import BPE, digest, runner

from xprompt.cli import main
from xprompt.paths import shipped
from xprompt.tokenizer.loading import tokenizer_fingerprint

pytestmark = pytest.mark.skipif(not (shipped("bpe") / "tokenizer.json").is_file(), reason="no shipped BPE")


def _export_source(path: Path) -> Path:
    """A run-like model whose training data used the shipped VQ and BPE (what export requires)."""
    from test_pipeline_tokenizers import _checkpoint

    src = _checkpoint(path, tokenizer_fingerprint("bpe", shipped("bpe")))
    meta = json.loads((src / "meta.json").read_text())
    meta["extra"]["training"]["data"]["meta"]["tokenizers.json"]["image_tokenizer"] = {
        "path": str(shipped("vq-64")),
        "fingerprint": tokenizer_fingerprint("vq", shipped("vq-64")),
    }
    del meta["integrity"]  # meta.json is edited here; its checksums cover the other files only
    (src / "meta.json").write_text(json.dumps(meta))
    return src


def _load(kind: str, path: Path) -> None:
    """Load an artefact the way its users do (raises if it is damaged)."""
    if kind == "index":
        from xprompt.retrieval.store import InstructionStore

        assert len(InstructionStore.load(path)) == 6
    elif kind == "export":
        from xprompt.checkpoint import load_pretrained

        load_pretrained(path)
    elif kind == "data":
        from xprompt.train.build import load_built

        assert len(load_built(path)[0]) == 4
    else:
        from xprompt.compiled import CompiledPrompt

        assert CompiledPrompt.load(path).length > 0


def _job(kind: str, d: Path, second: bool) -> tuple[list[str], Path]:
    """(argv, output) of the write under test; ``second`` differs from the first so a swap would show."""
    if kind == "index":
        out = d / "store"
        seed = ["--seed", "1"] if second else []
        return ["index", "build", "--pairs", "suite:edit:6", "--out", str(out), "--size", "32", "--encoder",
                "minilm", "--overwrite", *seed], out  # fmt: skip
    if kind == "export":
        out = d / "release"
        src = d / "src" if (d / "src").is_dir() else _export_source(d / "src")
        dtype = "fp32" if second else "bf16"
        return ["export", "--checkpoint", str(src), "--out", str(out), "--dtype", dtype, "--vq",
                str(shipped("vq-64")), "--bpe", BPE], out  # fmt: skip
    if kind == "data":
        out = d / "data"
        return ["data", "build", "--n", "4", "--out", str(out), "--tokenizer", "grid:8", "--bpe", BPE, "--quiet",
                "--overwrite", "--seed", "2" if second else "1"], out  # fmt: skip
    out = d / "task.xpt"
    ck = d / "ck" if (d / "ck").is_dir() else tiny_checkpoint(d / "ck")
    a, b = (write_png(d / f"{n}.png", 32, 32, seed=i) for i, n in enumerate("ab"))
    return ["compile-prompt", "--checkpoint", str(ck), "--example", str(a), str(b), "-o", str(out),
            "--instruction", "second" if second else "first"], out  # fmt: skip


def _visible(d: Path) -> set[str]:
    return {p.name for p in d.iterdir() if not p.name.startswith(".")}


def _check_fault(kind: str, tmp_path: Path, fault: list[str], expect_rc: int, expect_err: str = "") -> None:
    argv, out = _job(kind, tmp_path, second=False)
    assert main(argv) == 0
    before, names = digest(out), _visible(tmp_path)
    argv, _ = _job(kind, tmp_path, second=True)
    r = runner(*fault, "--", *argv)
    assert r.returncode == expect_rc, r.stderr[-2000:]
    assert expect_err in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert digest(out) == before  # the previous artefact, byte for byte
    _load(kind, out)
    assert _visible(tmp_path) == names  # nothing half-written where it could be taken for a result
    assert main(argv) == 0  # the next run works
    _load(kind, out)
    assert digest(out) != before
    if out.suffix != ".xpt":  # directory writers clear what a killed writer left under their lock
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{out.name}.")]


KINDS = ("index", "export", "data", "compile")


SLOW = pytest.mark.slow  # the kinds that load MiniLM or a model in every process: run by `make test-slow`


@pytest.mark.parametrize(
    "kind", [pytest.param("index", marks=SLOW), pytest.param("export", marks=SLOW), "data", "compile"]
)
def test_kill_9_at_the_swap_keeps_the_previous_artefact(kind, tmp_path):
    _, out = _job(kind, tmp_path, second=False)
    _check_fault(kind, tmp_path, ["kill-at-rename", out], -signal.SIGKILL)


@pytest.mark.parametrize("kind", [pytest.param("data", marks=SLOW), "compile"])
def test_full_disk_is_one_line_and_keeps_the_previous_artefact(kind, tmp_path):
    _check_fault(kind, tmp_path, ["disk-full", 300], 2, "File too large; free some space")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ("index", "export"))
def test_full_disk_slow_kinds(kind, tmp_path):
    _check_fault(kind, tmp_path, ["disk-full", 4000], 2, "File too large; free some space")


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_killed_inside_a_write_keeps_the_previous_artefact(kind, tmp_path):
    """SIGXFSZ kills the process inside the first write past the limit (no handler runs, like kill -9)."""
    _check_fault(kind, tmp_path, ["kill-after-bytes", 300], -signal.SIGXFSZ)


def _concurrent(kind: str, tmp_path: Path) -> None:
    argv, out = _job(kind, tmp_path, second=False)
    ready, go = tmp_path / "READY", tmp_path / "GO"
    env_cmd = [sys.executable, str(Path(__file__).with_name("cli_runner.py")), "pause-at-rename", str(out),
               str(ready), str(go), "--", *argv]  # fmt: skip
    first = subprocess.Popen(env_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(__import__("os").environ, PYTHONPATH=str(Path(__file__).parent)))  # fmt: skip
    try:
        t0 = time.time()
        while not ready.exists():
            assert first.poll() is None, first.communicate()[1][-2000:]
            assert time.time() - t0 < 300
            time.sleep(0.1)
        second = runner("plain", "--", *_job(kind, tmp_path, second=True)[0])
        assert second.returncode == 2, second.stderr[-2000:]
        assert f"another process is writing {out} right now" in second.stderr
    finally:
        go.write_text("1")
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]
    _load(kind, out)


def test_two_writers_of_one_dataset(tmp_path):
    _concurrent("data", tmp_path)


@pytest.mark.slow
def test_two_writers_of_one_store(tmp_path):
    _concurrent("index", tmp_path)


@pytest.mark.slow
def test_two_writers_of_one_export_folder(tmp_path):
    _concurrent("export", tmp_path)


@pytest.mark.slow
def test_kill_9_from_outside_at_random_moments(tmp_path):
    """The literal test: ``kill -9`` a ``data build --overwrite`` at random moments; the output is always
    one complete dataset (the old or the new one), never a mix or a half."""
    import os
    import random

    argv, out = _job("data", tmp_path, second=False)
    assert main(argv) == 0
    rng = random.Random(0)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    for i in range(5):
        argv, _ = _job("data", tmp_path, second=bool(i % 2))
        p = subprocess.Popen([sys.executable, "-m", "xprompt", *argv], env=env, stderr=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL)  # fmt: skip
        time.sleep(rng.uniform(1.0, 12.0))
        p.send_signal(signal.SIGKILL)
        p.wait()
        _load("data", out)
        assert _visible(tmp_path) == {"data"}
    assert main(argv) == 0


@pytest.mark.slow
def test_kill_9_during_a_training_checkpoint_save(tmp_path):
    """Killed while step 2's checkpoint is swapped in: ``latest`` still names step 1, which verifies, loads
    and resumes; a resumed run finishes; a tampered checkpoint file (or a pickle put in its place) is refused
    before DeepSpeed unpickles it."""
    import pickle

    from test_bad_inputs import WritesAFile
    from test_packing import make_dataset
    from test_trainer import TINY

    from xprompt.checkpoint import load_pretrained
    from xprompt.train.checkpointing import verify_training_checkpoint

    data = make_dataset(tmp_path / "d", n=40)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(dict(TINY, steps=2, save_every=1, val_fraction=0.0)))
    run = tmp_path / "run"
    argv = ["train", "model", "--config", str(cfg), "--data", str(data), "--out", str(run), "--zero-stage", "0",
            "--no-progress"]  # fmt: skip
    ckpts = run / "checkpoints"
    r = runner("kill-at-rename", ckpts / "step_0000002", "--", *argv)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert (ckpts / "latest").read_text().strip() == "step_0000001"
    assert _visible(ckpts) == {"latest", "step_0000001"}
    assert verify_training_checkpoint(ckpts / "step_0000001")
    load_pretrained(ckpts / "step_0000001" / "model")
    r = runner("plain", "--", *argv, "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (ckpts / "latest").read_text().strip() == "step_0000002"
    # a damaged or replaced DeepSpeed file is refused before torch.load(weights_only=False) sees it
    state = next(p for p in (ckpts / "step_0000002").rglob("*.pt"))
    original = state.read_bytes()
    state.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    more = [*argv, "--resume", "--set", "steps=3"]
    r = runner("plain", "--", *more)
    assert r.returncode == 2 and "was modified or corrupted" in r.stderr, r.stderr[-2000:]
    marker = tmp_path / "PICKLE_RAN"
    state.write_bytes(pickle.dumps(WritesAFile(marker)))
    r = runner("plain", "--", *more)
    assert r.returncode == 2 and f"training checkpoint {ckpts / 'step_0000002'}" in r.stderr, r.stderr[-2000:]
    assert not marker.exists()

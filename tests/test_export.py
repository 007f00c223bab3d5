"""``xprompt export``: a run's model becomes a bf16 release folder that records its tokenizers relatively."""

import json
import stat
import subprocess
import sys

import torch
from test_pipeline_tokenizers import _checkpoint

from xprompt.checkpoint import load_pretrained
from xprompt.cli_export import export
from xprompt.paths import shipped
from xprompt.tokenizer.loading import tokenizer_fingerprint


def test_export_bf16_release_loads_with_its_tokenizers(tmp_path):
    # a run whose data was tokenized with the shipped vq-64 and BPE
    src = _checkpoint(tmp_path / "run" / "model", tokenizer_fingerprint("bpe", shipped("bpe")))
    meta = json.loads((src / "meta.json").read_text())
    meta["extra"]["training"]["data"]["meta"]["tokenizers.json"]["image_tokenizer"] = {
        "path": str(shipped("vq-64")),
        "fingerprint": tokenizer_fingerprint("vq", shipped("vq-64")),
    }
    meta["extra"]["training"]["train_config"] = {"mode": "xp", "mode_mix": {"full": 1.0, "xp": 3.0}}
    (src / "meta.json").write_text(json.dumps(meta))
    out = export(src, tmp_path / "release")
    rel = json.loads((out / "meta.json").read_text())
    assert rel["dtype"] == "bfloat16"
    assert rel["extra"]["trained_mode"] == ["xp", "full"]  # the layouts it read examples in, most used first
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes["model.safetensors"] == modes["meta.json"], modes  # not safetensors' own 0600
    assert not any(p.startswith("/") for p in rel["extra"]["tokenizers"].values())
    a, _ = load_pretrained(src)
    b, _ = load_pretrained(out)
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert y.dtype == torch.bfloat16 and torch.equal(x.to(torch.bfloat16), y), k


def test_export_bad_input_exits_2(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "xprompt",
            "export",
            "--checkpoint",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "is not an xprompt model checkpoint" in r.stderr
    assert not (tmp_path / "o").exists()

"""bench/gpu_smoke.py on a machine without CUDA: a clear "needs CUDA" exit, and its masks are X-Prompt masks."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from xprompt.paths import REPO_ROOT


@pytest.fixture(scope="module")
def smoke():
    spec = importlib.util.spec_from_file_location("gpu_smoke", REPO_ROOT / "bench" / "gpu_smoke.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_needs_cuda_message_and_exit_code(smoke, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "r.json"
    assert smoke.main(["--out", str(out)]) == 2
    assert "gpu_smoke needs CUDA" in capsys.readouterr().err
    assert not out.exists()


def test_smoke_batches_carry_the_x_prompt_mask(smoke):
    vocab = smoke._vocab()
    ids, segs, _, mask = smoke._masked_batch(vocab, np.random.default_rng(0), b=1, docs=2, doc_len=300)
    assert ids.shape == segs.shape == (1, 600) and mask.shape == (1, 600, 600)
    s, m = segs[0], mask[0]
    td, ie, xp = (s == 3).nonzero()[0, 0], (s == 1).nonzero()[0, 0], (s == 2).nonzero()[0, 0]
    assert not m[td, ie] and m[td, xp] and m[xp, ie]  # TD sees the example only through the XP tokens
    assert not m[300 + 5, 5]  # no attention across packed documents

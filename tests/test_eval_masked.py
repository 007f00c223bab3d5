"""The masked evaluation row ``xp-mask``: the change-box mask, in/out-of-mask metrics, and the row on a tiny
random checkpoint (outside the mask the output is the query, bit for bit)."""

import numpy as np
import pytest
from test_eval import ckpt, pipe  # noqa: F401  (the same tiny checkpoint and pipeline fixtures)

from xprompt.errors import XPromptError
from xprompt.eval import benchmarks as B
from xprompt.eval.items import suite_items
from xprompt.eval.masked import change_box_mask


def test_change_box_mask():
    q = np.zeros((32, 32, 3), np.uint8)
    t = q.copy()
    t[10:12, 20:25] = 255
    m = change_box_mask(q, t, margin=2)
    want = np.zeros((32, 32), bool)
    want[8:14, 18:27] = True
    np.testing.assert_array_equal(m, want)
    assert change_box_mask(q, q).all()  # nothing changes: the whole image
    assert change_box_mask(q, t, margin=100).all()  # clipped to the image


def test_masked_rows_unseen_and_raie(pipe, tmp_path):  # noqa: F811 (pytest fixture)
    from xprompt.edit_mask import blend
    from xprompt.eval.masked import item_mask
    from xprompt.retrieval.store import InstructionStore

    cfg = B.EvalConfig(benchmark="unseen", limit=2, tasks=["add_object"], rows=["xp", "xp-mask", "xp-paste"])
    rep, vis = B.run(cfg, pipe, progress=False)
    t = rep["tasks"]["add_object"]
    res = t["results"]
    for m in ("psnr_in", "psnr_out", "out_same"):
        assert m in t["metrics"] and all(isinstance(res[r][m], float) for r in ("xp", "xp-mask", "copy"))
    assert res["xp-mask"]["out_same"] == 1.0 and res["xp-mask"]["psnr_out"] == 100.0  # outside: the input
    assert res["copy"]["out_same"] == 1.0 and res["xp"]["out_same"] < 1.0
    assert res["xp-paste"]["out_same"] == 1.0
    items = suite_items("add_object", 2, 64, 0)
    for it, v in zip(items, vis["add_object"], strict=True):  # paste = the free xp output blended in
        np.testing.assert_array_equal(v.outputs["xp-paste"], blend(it.query, v.outputs["xp"], item_mask(it)))
        assert "xp-mask" in v.outputs
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(4)]
    InstructionStore.build(["add a red circle", "remove the square"], imgs[:2], imgs[2:]).save(
        tmp_path / "st"
    )
    cfg = B.EvalConfig(
        benchmark="raie",
        limit=2,
        tasks=["remove_object"],
        rows=["text", "xp-mask", "xp-paste"],
        store=str(tmp_path / "st"),
    )
    rep, _ = B.run(cfg, pipe, progress=False)
    r = rep["tasks"]["remove_object"]["results"]
    assert r["xp-mask"]["out_same"] == r["xp-paste"]["out_same"] == 1.0 and r["text"]["out_same"] < 1.0
    assert "retrieval" in rep
    with pytest.raises(XPromptError, match="do not apply to t2i"):
        B.EvalConfig(benchmark="t2i", rows=["xp-mask"])


def test_changed_row_and_guidance(pipe):  # noqa: F811 (pytest fixture)
    """``xp-changed`` keeps the query wherever the model kept its tokens (so it equals the query outside the
    decoded pixels of ``xp-mask``), and ``--cfg/--cfg-ref`` reach the generated rows and the report."""
    cfg = B.EvalConfig(benchmark="unseen", limit=2, tasks=["add_object"], rows=["xp-mask", "xp-changed"],
                       cfg_scale=2.0, cfg_ref="query")  # fmt: skip
    rep, vis = B.run(cfg, pipe, progress=False)
    assert rep["config"]["cfg_scale"] == 2.0 and rep["config"]["cfg_ref"] == "query"
    assert rep["tasks"]["add_object"]["results"]["xp-changed"]["out_same"] == 1.0
    for it, v in zip(B.suite_items("add_object", 2, 64, 0), vis["add_object"], strict=True):
        ch, full = v.outputs["xp-changed"], v.outputs["xp-mask"]
        diff = (ch != it.query).any(axis=-1)  # (H, W): where xp-changed took decoded pixels
        np.testing.assert_array_equal(ch[diff], full[diff])
    plain = B.run(B.EvalConfig(benchmark="unseen", limit=2, tasks=["add_object"], rows=["xp-mask"]), pipe,
                  progress=False)[1]  # fmt: skip
    assert not np.array_equal(
        plain["add_object"][0].outputs["xp-mask"], vis["add_object"][0].outputs["xp-mask"]
    )
    for bad in ({"cfg_ref": "prompt"}, {"cfg_scale": -1.0}):
        with pytest.raises(XPromptError, match="--cfg"):
            B.EvalConfig(benchmark="unseen", **bad)
    with pytest.raises(XPromptError, match="'empty' for t2i"):
        B.EvalConfig(benchmark="t2i", cfg_ref="query")


def test_automask_row_uses_the_instruction_masks(pipe):  # noqa: F811 (pytest fixture)
    """``xp-automask``: decoded inside the instruction's mask only; items without one (not a scene edit) are
    decoded whole, with a warning."""
    from xprompt.errors import XPromptWarning
    from xprompt.instruction_mask import instruction_mask

    cfg = B.EvalConfig(
        benchmark="unseen", limit=2, tasks=["add_object", "derain"], rows=["xp-mask", "xp-automask"]
    )
    with pytest.warns(XPromptWarning, match="no instruction mask for 2 of 2 derain items"):
        rep, vis = B.run(cfg, pipe, progress=False)
    res = rep["tasks"]["add_object"]["results"]["xp-automask"]
    assert all(isinstance(res[m], float) for m in ("psnr_in", "psnr_out", "out_same"))
    for it, v in zip(B.suite_items("add_object", 2, 64, 0), vis["add_object"], strict=True):
        keep = ~instruction_mask(it.query, it.instruction)
        assert keep.any() and np.array_equal(v.outputs["xp-automask"][keep], it.query[keep])
    assert "xp-automask" in vis["derain"][0].outputs  # decoded whole (the change box is the whole image too)

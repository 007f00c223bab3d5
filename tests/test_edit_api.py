"""``XPrompt.edit`` (the one RAIE flow) and the one-way dependency rule of the inference package."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gen_helpers import tiny_checkpoint

from xprompt.errors import XPromptError


@pytest.fixture(scope="module")
def xp(tmp_path_factory):
    from xprompt.pipeline import XPrompt

    return XPrompt.from_pretrained(tiny_checkpoint(tmp_path_factory.mktemp("edit") / "ck", image_size=32))


@pytest.fixture(scope="module")
def store():
    from xprompt.retrieval.store import InstructionStore

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    return InstructionStore.build(["make the circle red", "remove the square"], imgs[:2], imgs[2:]), imgs


def test_edit_returns_image_and_what_was_retrieved(xp, store):
    from xprompt.pipeline import EditResult

    st, imgs = store
    query = np.full((32, 32, 3), 90, np.uint8)
    res = xp.edit(query, "Make the circle red", store=st, k=2, greedy=True)
    assert isinstance(res, EditResult) and res.mode == "xp" and res.image.shape == (32, 32, 3)
    assert res.instructions == ["make the circle red", "remove the square"]
    assert res.scores[0] >= res.scores[1] and all(isinstance(s, float) for s in res.scores)
    assert np.array_equal(res.pairs[0][0], imgs[0]) and np.array_equal(res.pairs[0][1], imgs[2])
    # the flow is: the retrieved pairs become the in-context examples
    ref = xp.generate(examples=res.pairs, query=query, instruction="Make the circle red", greedy=True)
    assert np.array_equal(ref, res.image)
    batch = xp.edit([query, query], ["make the circle red", "remove the square"], store=st, k=1, greedy=True)
    assert [r.instructions for r in batch] == [["make the circle red"], ["remove the square"]]
    assert np.array_equal(batch[0].image, xp.edit(query, "make the circle red", store=st, greedy=True).image)


def test_edit_without_retrieval_and_bad_input(xp):
    query = np.full((32, 32, 3), 90, np.uint8)
    res = xp.edit(query, "Remove the square", k=0, greedy=True)  # no store is opened
    assert res.mode == "none" and res.retrieved == [] and res.pairs == []
    with pytest.raises(XPromptError, match="the mask is 16x16 but the image is 32x32"):
        xp.edit(query, "Remove the square", k=0, mask=np.ones((16, 16), bool))
    with pytest.raises(XPromptError, match="k must be >= 0"):
        xp.edit(query, "Remove the square", k=-1)
    with pytest.raises(XPromptError, match="one instruction per image"):
        xp.edit([query, query], ["a"], k=0)
    with pytest.raises(XPromptError, match="'xp' or 'full'"):
        xp.edit(query, "Remove the square", k=0, mode="none")
    with pytest.raises(XPromptError, match="empty"):
        xp.edit(query, "  ", k=0)


def test_inference_package_imports_no_training_or_eval_code():
    """Loading and running the inference API never imports xprompt.train or xprompt.eval (one-way dependencies)."""
    code = (
        "import sys, xprompt, xprompt.pipeline, xprompt.generation, xprompt.compiled, xprompt.checkpoint, "
        "xprompt.images, xprompt.tokenizer.loading, xprompt.retrieval.default_store\n"
        "print(sorted(m for m in sys.modules if m.startswith(('xprompt.train', 'xprompt.eval'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

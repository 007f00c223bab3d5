"""XPrompt Python API on a random tiny checkpoint (grid image tokenizer, shipped BPE)."""

import numpy as np
import pytest
from gen_helpers import tiny_checkpoint, write_png

from xprompt import XPrompt
from xprompt.errors import XPromptError
from xprompt.paths import shipped

pytestmark = pytest.mark.skipif(
    not (shipped("bpe") / "tokenizer.json").is_file(), reason="shipped BPE missing"
)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return XPrompt.from_pretrained(tiny_checkpoint(tmp_path_factory.mktemp("m") / "ck"))


def test_generate_modes_and_batch(pipe, tmp_path):
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(2))
    q = write_png(tmp_path / "q.png", 32, 32)
    for mode in ("xp", "full", "none"):
        out = pipe.generate([(a, b)], q, instruction="make it darker", mode=mode, greedy=True)
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    x1 = pipe.generate([(a, b)], q, seed=3)
    assert np.array_equal(x1, pipe.generate([(a, b)], q, seed=3))
    batch = pipe.generate([(a, b)], [q, q], greedy=True)
    assert len(batch) == 2 and np.array_equal(batch[0], pipe.generate([(a, b)], q, greedy=True))


def test_text_to_image_and_describe(pipe):
    img = pipe.text_to_image("a red circle", seed=0, size=(2, 3))
    assert img.shape == (16, 24, 3)
    rng = np.random.default_rng(1)
    text = pipe.describe(
        rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
        rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
        max_new_tokens=5,
    )
    assert isinstance(text, str)


def test_compiled_prompt_matches_in_context(pipe, tmp_path):
    rng = np.random.default_rng(2)
    a, b, q = (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3))
    task = pipe.compile_prompt([(a, b)], instruction="invert")
    task.save(tmp_path / "t.xpt")
    direct = pipe.generate([(a, b)], q, instruction="invert", greedy=True)
    np.testing.assert_array_equal(pipe.generate_from(tmp_path / "t.xpt", q, greedy=True), direct)


def test_bad_inputs(pipe, tmp_path):
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)
    with pytest.raises(XPromptError, match="one size"):
        pipe.generate([(a, b)], a)
    with pytest.raises(XPromptError, match="needs at least one example"):
        pipe.generate([], a, mode="xp")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(XPromptError, match="not a readable image"):
        pipe.generate([(a, a)], tmp_path / "bad.png")
    with pytest.raises(XPromptError, match="not found"):
        XPrompt.from_pretrained(tmp_path / "nothing")
    with pytest.raises(XPromptError, match="codes"):
        XPrompt.from_pretrained(pipe.checkpoint, vq=_FakeVQ())


class _FakeVQ:
    factor, codebook_size = 8, 100

"""Compiled task prompts: same logits/outputs as in-context generation, file round trip, refusal on mismatch."""

import json

import numpy as np
import pytest
import torch
from gen_helpers import CharTok, codes, tiny_model, tiny_vocab

from xprompt.compiled import CompiledPrompt, compile_prompt, model_fingerprint
from xprompt.errors import XPromptError
from xprompt.generation import generate_images, prefill, td_only
from xprompt.sampling import SamplingConfig
from xprompt.sequence import Seg, TokenSequence, build_sample

TOK = CharTok()


def context_of(seq):
    keep = seq.segs != int(Seg.TD)
    return TokenSequence(seq.ids[keep], seq.segs[keep], seq.loss[keep])


@pytest.mark.parametrize("mode", ["xp", "full"])
def test_compiled_equals_in_context(tmp_path, mode):
    vocab, rng = tiny_vocab(), np.random.default_rng(0)
    model = tiny_model(vocab)
    ex = [(codes(rng, 3, 3), codes(rng, 3, 3)), (codes(rng, 3, 3), codes(rng, 3, 3))]
    queries = [codes(rng, 3, 3), codes(rng, 2, 4)]
    seqs = [build_sample(vocab, TOK, mode=mode, instruction="swap", examples=ex, query=q) for q in queries]
    cp = compile_prompt(model, vocab, context_of(seqs[0]), info={"instruction": "swap"})
    n_ie = int((seqs[0].segs == int(Seg.IE)).sum())
    assert cp.length == len(context_of(seqs[0])) - (n_ie if mode == "xp" else 0)
    cp.save(tmp_path / "task.xpt")
    loaded = CompiledPrompt.load(tmp_path / "task.xpt", model, vocab)
    assert loaded.info["instruction"] == "swap" and loaded.info["layout"] == mode
    # logits of the first answer token: compiled + query == in-context prompt
    ref = prefill(model, seqs, vocab.pad_id)
    got = prefill(
        model,
        [td_only(s) for s in seqs],
        vocab.pad_id,
        cache=loaded.cache.expand(2),
        cache_segs=loaded.segs.expand(2, -1),
    )
    torch.testing.assert_close(got.logits, ref.logits, atol=2e-5, rtol=1e-4)
    sizes = [q.shape for q in queries]
    greedy = SamplingConfig(greedy=True)
    a = generate_images(model, vocab, seqs, sizes, greedy)
    b = generate_images(
        model,
        vocab,
        [td_only(s) for s in seqs],
        sizes,
        greedy,
        context=loaded.cache,
        context_segs=loaded.segs,
    )
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    # CFG with a compiled context runs (the unconditional rows do not see the context)
    generate_images(
        model,
        vocab,
        [td_only(seqs[0])],
        [sizes[0]],
        SamplingConfig(greedy=True, cfg_scale=2.0),
        context=loaded.cache,
    )


def test_refused_with_other_model_or_vocab(tmp_path):
    vocab, rng = tiny_vocab(), np.random.default_rng(1)
    model = tiny_model(vocab)
    seq = build_sample(vocab, TOK, mode="xp", examples=[(codes(rng, 2, 2), codes(rng, 2, 2))])
    compile_prompt(model, vocab, seq).save(tmp_path / "t.xpt")
    other = tiny_model(vocab, seed=1)  # same config, other weights
    assert model_fingerprint(other) != model_fingerprint(model)
    with pytest.raises(XPromptError, match="another model"):
        CompiledPrompt.load(tmp_path / "t.xpt", other, vocab)
    from xprompt.tokenizer.vocab import Vocabulary

    v2 = Vocabulary.build(text_size=27, num_image_codes=16, num_xp=4, max_grid=9)
    with pytest.raises(XPromptError, match="another vocabulary"):
        CompiledPrompt.load(tmp_path / "t.xpt", model, v2)


def test_bad_inputs(tmp_path):
    vocab, rng = tiny_vocab(), np.random.default_rng(2)
    model = tiny_model(vocab)
    with_query = build_sample(
        vocab, TOK, mode="xp", examples=[(codes(rng, 2, 2), codes(rng, 2, 2))], query=codes(rng, 2, 2)
    )
    with pytest.raises(XPromptError, match="no query"):
        compile_prompt(model, vocab, with_query)
    (tmp_path / "junk.xpt").write_bytes(b"not a safetensors file")
    with pytest.raises(XPromptError, match="not a readable task prompt"):
        CompiledPrompt.load(tmp_path / "junk.xpt")
    with pytest.raises(XPromptError, match="not found"):
        CompiledPrompt.load(tmp_path / "missing.xpt")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "plain.xpt"))
    with pytest.raises(XPromptError, match="no xprompt header"):
        CompiledPrompt.load(tmp_path / "plain.xpt")


def test_damaged_cache_shapes_refused(tmp_path):
    vocab, rng = tiny_vocab(), np.random.default_rng(3)
    model = tiny_model(vocab)
    seq = build_sample(vocab, TOK, mode="xp", examples=[(codes(rng, 2, 2), codes(rng, 2, 2))])
    cp = compile_prompt(model, vocab, seq)
    cp.cache.reserve(100)  # spare capacity is never written to the file
    path = cp.save(tmp_path / "t.xpt")
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    assert tensors["k.0"].shape[2] == cp.length and tensors["key_mask"].shape == (1, cp.length)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors["k.1"] = tensors["k.1"][:, :, :-1].contiguous()  # one layer shorter than the others
    save_file(tensors, str(tmp_path / "bad.xpt"), metadata=meta)
    with pytest.raises(XPromptError, match="modified or corrupted"):  # its tensor checksum
        CompiledPrompt.load(tmp_path / "bad.xpt")
    header = json.loads(meta["xprompt"])
    del header["tensors_sha256"]  # as in a file compiled before checksums: the shape checks still hold
    save_file(tensors, str(tmp_path / "bad.xpt"), metadata={"xprompt": json.dumps(header)})
    with pytest.raises(XPromptError, match="damaged task prompt"):
        CompiledPrompt.load(tmp_path / "bad.xpt")

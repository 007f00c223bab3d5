"""The published stack end to end on the CPU: a tiny random Chameleon / Lumina-mGPT folder + tokenizer folder in the
released layout -> XPrompt (vocabulary by name, XP tokens added) -> generate, describe, one training step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from published_helpers import N_IMG, write_published

from xprompt.errors import CheckpointError
from xprompt.pipeline import XPrompt
from xprompt.published import add_xp_rows
from xprompt.sequence import build_sample
from xprompt.tokenizer.vocab import Vocabulary

pytest.importorskip("transformers")
NUM_XP = 4


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    return write_published(tmp_path_factory.mktemp("published"))


@pytest.fixture(scope="module")
def pipe(stack):
    model_dir, _, _ = stack
    return XPrompt.from_pretrained(model_dir, image_size=16, num_xp=NUM_XP)


def images(n, seed=0):
    return list(np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8))


def test_vocabulary_mapped_by_name_and_xp_tokens_added(stack, pipe):
    _, _, hf = stack
    vmap = hf.config.vocabulary_map
    v = pipe.vocab
    assert v.size == len(vmap) + NUM_XP and list(v.xp_ids) == list(range(len(vmap), len(vmap) + NUM_XP))
    assert (
        v.boi_id == vmap["<racm3:break>"]
        and v.eoi_id == vmap["<eoss>"]
        and v.eol_id == vmap["<reserved08803>"]
    )
    assert v.h_token(3) == vmap["<reserved08807>"]
    assert [int(i) for i in v.codes_to_ids(np.arange(3))] == [vmap[f"IMGIMG{c}Z"] for c in "ABC"]
    assert pipe.model.embed_tokens.weight.shape[0] == pipe.model.lm_head.weight.shape[0] == v.size
    assert pipe.image_size == 16 and pipe.image_tok.factor == 4 and pipe.image_tok.codebook_size == N_IMG
    # adding rows leaves the released model's logits unchanged (parity with transformers on the old ids)
    ids = torch.randint(0, len(vmap), (1, 12))
    with torch.no_grad():
        ref = hf(input_ids=ids).logits
        ours = pipe.model(ids)[..., : len(vmap)]
    text = torch.ones(len(vmap), dtype=torch.bool)
    text[torch.as_tensor(v.image_ids)] = False  # HF blanks image logits
    assert (ours - ref)[..., text].abs().max() < 1e-4


def test_generate_describe_t2i(pipe):
    a, b, q = images(3)
    out = pipe.generate(examples=[(a, b)], query=q, instruction="do the same", seed=0)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    again = pipe.generate(examples=[(a, b)], query=q, instruction="do the same", seed=0)
    assert np.array_equal(out, again)
    text = pipe.describe(a, b, max_new_tokens=5, greedy=True)
    assert isinstance(text, str)
    t2i = pipe.text_to_image("a red square", seed=1, size=(2, 3))
    assert t2i.shape == (8, 12, 3)


def test_training_step_updates_xp_rows(pipe):
    import copy

    from xprompt.loss import next_token_loss
    from xprompt.masks import build_attention_mask

    model = copy.deepcopy(pipe.model).train()
    a, b, q, ans = (pipe.encode(x) for x in images(4, seed=1))
    seq = build_sample(
        pipe.vocab,
        pipe.text_tok,
        mode="xp",
        instruction="do the same",
        examples=[(a, b)],
        query=q,
        answer=ans,
    )
    ids = torch.as_tensor(seq.ids)[None]
    mask = build_attention_mask(torch.as_tensor(seq.segs))[None]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = model.embed_tokens.weight.detach().clone()
    losses = []
    for _ in range(3):
        out = next_token_loss(model(ids, attn_mask=mask), ids, torch.as_tensor(seq.loss)[None], z_loss=1e-5)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["ce"].detach()))
    assert losses[-1] < losses[0]
    xp = torch.as_tensor(pipe.vocab.xp_ids)
    assert not torch.equal(model.embed_tokens.weight[xp], before[xp])  # the new XP rows learn


def test_mismatched_tokenizer_is_refused(stack, tmp_path):
    model_dir, tok_dir, _ = stack
    bad = tmp_path / "tok"
    bad.mkdir()
    for f in ("vqgan.yaml", "vqgan.ckpt"):
        (bad / f).write_bytes((tok_dir / f).read_bytes())
    data = json.loads((tok_dir / "text_tokenizer.json").read_text())
    for t in data["added_tokens"]:  # swap two image names' ids: same size, scrambled mapping
        if t["content"] == "IMGIMGAZ":
            t["content"] = "IMGIMGBZ"
        elif t["content"] == "IMGIMGBZ":
            t["content"] = "IMGIMGAZ"
    (bad / "text_tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="other ids than the model's vocabulary_map"):
        XPrompt.from_pretrained(model_dir, tokenizer=bad)
    with pytest.raises(CheckpointError, match="pass --tokenizer"):
        XPrompt.from_pretrained(model_dir, tokenizer=tmp_path / "nowhere")


def test_cli_generate_with_published_checkpoint(stack, tmp_path):
    from xprompt.cli import main
    from xprompt.images import write_png

    model_dir, tok_dir, _ = stack
    paths = []
    for i, im in enumerate(images(3, seed=2)):
        paths.append(tmp_path / f"{i}.png")
        write_png(paths[-1], im)
    out = tmp_path / "out.png"
    rc = main(
        [
            "generate",
            "--checkpoint",
            str(model_dir),
            "--tokenizer",
            str(tok_dir),
            "--image-size",
            "16",
            "--example",
            str(paths[0]),
            str(paths[1]),
            "--query",
            str(paths[2]),
            "-o",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0 and out.is_file()


def test_add_xp_rows_is_a_noop_without_new_ids():
    from gen_helpers import tiny_model

    v = Vocabulary.build(text_size=10, num_image_codes=4, num_xp=2, max_grid=4)
    m = tiny_model(v)
    w = m.embed_tokens.weight.detach().clone()
    add_xp_rows(m, v)
    assert torch.equal(m.embed_tokens.weight, w)


def test_convert_published_then_load_as_xprompt_checkpoint(stack, pipe, tmp_path):
    from xprompt.cli import main

    model_dir, _, _ = stack
    out = tmp_path / "xp-ckpt"
    assert main(["convert", "published", "--checkpoint", str(model_dir), "--out", str(out), "--num-xp", "4",
                 "--image-size", "16", "--dtype", "fp32"]) == 0  # fmt: skip
    again = XPrompt.from_pretrained(out)  # tokenizers and image size come from meta.json
    assert again.vocab == pipe.vocab and again.image_size == 16
    ids = torch.randint(0, pipe.vocab.size, (1, 8))
    with torch.no_grad():
        assert torch.equal(again.model(ids), pipe.model(ids))


@pytest.mark.slow  # a data build in the Chameleon vocabulary and a DeepSpeed run from the converted weights
def test_fine_tune_the_published_stack_through_the_trainer(stack, tmp_path):
    import os
    import sys
    from pathlib import Path

    from xprompt.cli import main
    from xprompt.train.trainer import train

    sys.path.insert(0, str(Path(__file__).parent))
    from test_trainer import cfg

    model_dir, tok_dir, hf = stack
    ckpt = tmp_path / "init"
    assert main(["convert", "published", "--checkpoint", str(model_dir), "--out", str(ckpt), "--num-xp", "4",
                 "--dtype", "fp32"]) == 0  # fmt: skip
    data = tmp_path / "data"
    assert main(["data", "build", "--n", "24", "--size", "16", "--out", str(data), "--tokenizer", str(tok_dir),
                 "--bpe", str(tok_dir), "--num-xp", "4", "--vocab", str(ckpt / "vocab.json"), "--quiet"]) == 0  # fmt: skip
    c = hf.config
    over = {"dim": c.hidden_size, "n_layers": c.num_hidden_layers, "n_heads": c.num_attention_heads,
            "n_kv_heads": c.num_key_value_heads, "ffn_dim": c.intermediate_size, "max_seq_len": 4096}  # fmt: skip
    saved = dict(os.environ)
    try:
        res = train(cfg(model=over, steps=2, init_from=str(ckpt), max_len=400, val_every=100), data, tmp_path / "run",
                    progress=False)  # fmt: skip
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert res["steps"] == 2

"""A tiny random Chameleon / Lumina-mGPT stack in exactly the published file layout (shared by the tests)::

ckpts/Lumina-mGPT-7B-512/   config.json (model_type chameleon, vocabulary_map) + model.safetensors
ckpts/chameleon/tokenizer/  text_tokenizer.json, vqgan.yaml, vqgan.ckpt (Lightning-style {"state_dict": ...})
"""

from __future__ import annotations

import json

import torch

from xprompt.tokenizer.chameleon_vq import ChameleonVQ, ChameleonVQConfig
from xprompt.tokenizer.chameleon_vq_io import save_yaml
from xprompt.tokenizer.vocab import chameleon_image_name

N_IMG, MAX_GRID = 64, 64  # image codes; grid tokens <reserved08805..08868> as in Chameleon's vocabulary
SPECIALS = [
    "<pad>",
    "<s>",
    "</s>",
    "<racm3:break>",
    "<eoss>",
    "<reserved08706>",
    "<reserved08803>",
    "<image>",
]
CORPUS = [
    "generate an image of a red square",
    "what changed between these two images",
    "the sky is blue",
] * 20
VQ = ChameleonVQConfig(
    embed_dim=8, n_embed=N_IMG, z_channels=32, ch=32, ch_mult=[1, 1, 2], num_res_blocks=1, resolution=16
)


def text_tokenizer():
    """A byte-level BPE + Chameleon's specials, grid/reserved tokens and IMGIMG image names as added tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    extra = SPECIALS + [f"<reserved{8804 + n:05d}>" for n in range(1, MAX_GRID + 1)]
    extra += [chameleon_image_name(c) for c in range(N_IMG)]
    tok.add_special_tokens(extra)
    return tok


def write_published(root, seed: int = 0):
    """Write the layout under ``root``; returns (model_dir, tokenizer_dir, the transformers model)."""
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration

    torch.manual_seed(seed)
    tok_dir = root / "ckpts" / "chameleon" / "tokenizer"
    model_dir = root / "ckpts" / "Lumina-mGPT-7B-512"
    tok_dir.mkdir(parents=True)
    tok = text_tokenizer()
    tok.save(str(tok_dir / "text_tokenizer.json"))
    vmap = tok.get_vocab(with_added_tokens=True)
    save_yaml(VQ, tok_dir / "vqgan.yaml")
    vq = ChameleonVQ(VQ)
    with torch.no_grad():
        vq.quantize.embedding.weight.normal_()
    torch.save({"epoch": 1, "global_step": 10, "state_dict": vq.state_dict()}, tok_dir / "vqgan.ckpt")
    cfg = ChameleonConfig(
        vocab_size=len(vmap),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        vocabulary_map=vmap,
        vq_config={
            "embed_dim": 8,
            "num_embeddings": N_IMG,
            "latent_channels": 32,
            "base_channels": 32,
            "channel_multiplier": [1, 1, 2],
            "num_res_blocks": 1,
            "resolution": 16,
        },
    )
    hf = ChameleonForConditionalGeneration(cfg).eval()
    hf.save_pretrained(model_dir)
    assert json.loads((model_dir / "config.json").read_text())["model_type"] == "chameleon"
    return model_dir, tok_dir, hf

"""Model checkpoints: save/load (strict), and import of transformers/Chameleon HF-format weights.

Layout of a checkpoint directory (written atomically with ``xprompt.io_utils.atomic_dir``)::

    config.json        ModelConfig (strict: unknown keys are an error)
    model.safetensors  weights (fp32, or bf16 when asked); parameter names are ours
    vocab.json         the Vocabulary the ids refer to
    meta.json          {"format": "xprompt-model/1", "vocab_fingerprint", "dtype", "extra": {...},
                        "integrity": sha256 + size of the three other files (``xprompt.integrity``)}
                       ``extra`` records e.g. the tokenizer dirs the model was trained with, training info.

Loading checks, each with a one-line ``CheckpointError``: files present; their sizes and SHA-256 as recorded
(truncation or tampering is reported as such; checkpoints written before checksums skip this); config valid; vocabulary size equals
``config.vocab_size`` and the fingerprint in meta.json; the tensors match the model exactly (no missing,
unexpected or mis-shaped weight). No pickles anywhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from xprompt.config_io import config_from_dict, config_to_dict
from xprompt.errors import CheckpointError, XPromptError
from xprompt.integrity import record_files, verify
from xprompt.io_utils import atomic_dir, file_mode
from xprompt.model_config import ModelConfig

FORMAT = "xprompt-model/1"
_FILES = ("config.json", "model.safetensors", "vocab.json", "meta.json")


def save_pretrained(
    path, model, vocab, *, extra: dict | None = None, dtype: torch.dtype | None = None, overwrite: bool = True
) -> Path:
    """Write ``model`` (an ``XPromptModel``) and ``vocab`` to directory ``path`` atomically.

    ``dtype=torch.bfloat16`` halves the file; floating tensors are cast, the config is unchanged. An existing
    directory is replaced only if it is an xprompt checkpoint (has meta.json) and ``overwrite`` is true.
    """
    from safetensors.torch import save_file

    if vocab.size != model.cfg.vocab_size:
        raise CheckpointError(
            f"vocabulary has {vocab.size} ids but the model was built for {model.cfg.vocab_size}"
        )
    path = Path(path)
    sd = {}
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        sd[k] = v.contiguous()
    meta = {
        "format": FORMAT,
        "vocab_fingerprint": vocab.fingerprint(),
        "dtype": str(dtype or next(iter(sd.values())).dtype).replace("torch.", ""),
        "extra": extra or {},
    }
    with atomic_dir(path, overwrite=overwrite, marker="meta.json") as tmp:
        (tmp / "config.json").write_text(
            json.dumps(config_to_dict(model.cfg), indent=2, sort_keys=True) + "\n"
        )
        save_file(sd, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
        os.chmod(tmp / "model.safetensors", file_mode())  # safetensors writes 0600; match the siblings
        vocab.save(tmp / "vocab.json")
        meta["integrity"] = record_files(tmp, _FILES[:3])
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return path


def read_meta(path) -> dict:
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is not an xprompt model checkpoint (no meta.json)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path / 'meta.json'} is not valid JSON ({e.msg})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: unsupported checkpoint format {meta.get('format')!r} (expected {FORMAT})"
        )
    return meta


def load_config_and_vocab(path):
    """(ModelConfig, Vocabulary, meta) of a checkpoint directory, cross-checked, without reading weights."""
    from xprompt.tokenizer.vocab import Vocabulary

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"model checkpoint directory not found: {path}")
    missing = [f for f in _FILES if not (path / f).is_file()]
    if missing:
        raise CheckpointError(f"{path} is not a complete xprompt checkpoint: missing {', '.join(missing)}")
    meta = read_meta(path)
    verify_checkpoint(path, meta)
    try:
        cfg = config_from_dict(
            ModelConfig, json.loads((path / "config.json").read_text()), where=str(path / "config.json")
        )
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path / 'config.json'} is not valid JSON ({e.msg})") from None
    except XPromptError as e:
        raise CheckpointError(str(e)) from None
    try:
        vocab = Vocabulary.load(path / "vocab.json")
    except XPromptError as e:
        raise CheckpointError(f"{path / 'vocab.json'}: {e}") from None
    if vocab.size != cfg.vocab_size:
        raise CheckpointError(
            f"{path}: vocab.json has {vocab.size} ids but config.json says vocab_size="
            f"{cfg.vocab_size}; the vocabulary does not belong to these weights"
        )
    if meta.get("vocab_fingerprint") != vocab.fingerprint():
        raise CheckpointError(
            f"{path}: vocab.json (fingerprint {vocab.fingerprint()}) is not the vocabulary the "
            f"weights were saved with ({meta.get('vocab_fingerprint')})"
        )
    return cfg, vocab, meta


def verify_checkpoint(path, meta: dict) -> bool:
    """Check the files of checkpoint ``path`` against ``meta["integrity"]`` (False: none recorded, skipped)."""
    return verify(path, meta.get("integrity"), f"model checkpoint {path}", "re-export or re-download it")


def load_state_strict(model, sd: dict, where: str) -> None:
    """``load_state_dict`` that reports missing/unexpected/mis-shaped tensors as one ``CheckpointError`` line."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {unexpected[0]})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es) (e.g. {shapes[0]})")
        raise CheckpointError(f"{where}: weights do not match the model config: {'; '.join(parts)}")
    if any(p.is_meta for p in model.parameters()):
        model.load_state_dict(sd, strict=True, assign=True)
        model.rotary.reset(device=next(iter(sd.values())).device)  # non-persistent buffer, rebuilt
    else:
        model.load_state_dict(sd, strict=True)


def _build_loaded(cfg: ModelConfig, sd: dict, where: str, dtype):
    """A model of ``cfg`` holding exactly ``sd`` (built on the meta device: no wasted random init)."""
    from xprompt.model import XPromptModel

    with torch.device("meta"):
        model = XPromptModel(cfg)
    load_state_strict(model, sd, where)
    return (model.to(dtype) if dtype is not None else model).eval()


def load_pretrained(
    path,
    dtype: torch.dtype | None = None,
    *,
    device: str | torch.device = "cpu",
    attn_impl: str | None = None,
):
    """Load ``(XPromptModel in eval mode, Vocabulary)`` from a checkpoint directory, strictly.

    ``dtype`` casts the weights (default: as stored, bf16 files stay bf16); ``attn_impl`` overrides the saved
    attention implementation (e.g. load a GPU-trained 'flex' model on the CPU with 'sdpa'). A directory in HF
    Chameleon format (config.json without meta.json) is imported with ``load_hf_checkpoint``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if is_hf_checkpoint(path):
        model, vocab = load_hf_checkpoint(path, dtype=dtype)
        return model.to(device), vocab
    cfg, vocab, _ = load_config_and_vocab(path)
    if attn_impl is not None:
        cfg = cfg.replace(attn_impl=attn_impl)
    elif cfg.attn_impl != "sdpa" and not torch.cuda.is_available():
        cfg = cfg.replace(attn_impl="sdpa")  # a GPU fast path saved in the config must not block CPU use
    try:
        sd = load_file(str(path / "model.safetensors"), device=str(device))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(
            f"{path / 'model.safetensors'} is unreadable ({str(e).splitlines()[0]})"
        ) from None
    return _build_loaded(cfg, sd, str(path), dtype), vocab


# ====================================================================== transformers / Chameleon HF format
# Our parameter names are HF Chameleon's without the "model." prefix, so conversion is a rename plus checks.
_HF_UNSUPPORTED = ("attention_bias", "mlp_bias")


def model_config_from_hf(hf_cfg, *, name: str = "hf-chameleon") -> ModelConfig:
    """transformers ``ChameleonConfig`` -> ``ModelConfig`` (refuses variants our decoder does not implement)."""
    for flag in _HF_UNSUPPORTED:
        if getattr(hf_cfg, flag, False):
            raise CheckpointError(f"Chameleon config has {flag}=True, which this decoder does not implement")
    act = getattr(hf_cfg, "hidden_act", "silu")
    if act != "silu":
        raise CheckpointError(f"Chameleon config has hidden_act={act!r}; only 'silu' (SwiGLU) is implemented")
    rope = getattr(hf_cfg, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise CheckpointError(f"RoPE type {rope.get('rope_type')!r} is not implemented (only 'default')")
    theta = float(rope.get("rope_theta", getattr(hf_cfg, "rope_theta", 10000.0)))
    return ModelConfig(
        vocab_size=int(hf_cfg.vocab_size),
        dim=int(hf_cfg.hidden_size),
        n_layers=int(hf_cfg.num_hidden_layers),
        n_heads=int(hf_cfg.num_attention_heads),
        n_kv_heads=int(hf_cfg.num_key_value_heads or hf_cfg.num_attention_heads),
        ffn_dim=int(hf_cfg.intermediate_size),
        max_seq_len=int(hf_cfg.max_position_embeddings),
        rope_theta=theta,
        norm_eps=float(hf_cfg.rms_norm_eps),
        qk_norm=True,
        qk_norm_eps=1e-5,
        swin_norm=bool(getattr(hf_cfg, "swin_norm", False)),
        init_std=float(hf_cfg.initializer_range),
        name=name,
    )


def hf_config_kwargs(cfg: ModelConfig) -> dict:
    """``ModelConfig`` -> keyword arguments of transformers' ``ChameleonConfig`` (the inverse of the above)."""
    if not cfg.qk_norm:
        raise CheckpointError("HF Chameleon always has q/k norms; this model was built with qk_norm=False")
    return {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "swin_norm": cfg.swin_norm,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "initializer_range": cfg.init_std,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
    }


def chameleon_vocabulary_map(vocab) -> dict[str, int]:
    """A Chameleon-style ``vocabulary_map`` for any Vocabulary: image ids named ``IMGIMG...Z`` by code (what HF
    needs to find image tokens), every other id by its display name, ``<image>`` on the pad id."""
    from xprompt.tokenizer.vocab import chameleon_image_name

    vmap = {}
    image = {int(t): c for c, t in enumerate(vocab.image_ids)}
    for i in range(vocab.size):
        vmap[chameleon_image_name(image[i]) if i in image else vocab.token_name(i)] = i
    vmap.setdefault("<image>", vocab.pad_id)
    return vmap


def state_dict_from_hf(sd: dict, where: str = "HF checkpoint") -> dict:
    """Rename an HF Chameleon state dict (``model.`` prefix, with or without ``lm_head``) to ours; the VQ-VAE
    weights (``model.vqmodel.*``) are dropped: the image tokenizer is a separate component here."""
    out = {}
    for k, v in sd.items():
        if k.startswith(("model.vqmodel.", "vqmodel.")) or k.endswith("rotary_emb.inv_freq"):
            continue
        k = k.removeprefix("model.")
        out[k] = v
    if not out:
        raise CheckpointError(f"{where} holds no Chameleon decoder weights")
    return out


def from_hf_model(hf_model, *, vocab=None, num_xp: int = 32, allow_missing_head: bool = False):
    """Convert an in-memory transformers ``ChameleonModel`` / ``ChameleonForConditionalGeneration`` to
    ``(XPromptModel, Vocabulary)``. A bare ``ChameleonModel`` has no LM head: pass ``allow_missing_head=True``
    to keep a freshly initialised head (hidden states are still exact)."""
    from xprompt.model import XPromptModel

    cfg = model_config_from_hf(hf_model.config)
    sd = state_dict_from_hf({k: v.detach() for k, v in hf_model.state_dict().items()}, "the HF model")
    model = XPromptModel(cfg)
    if "lm_head.weight" not in sd:
        if not allow_missing_head:
            raise CheckpointError(
                "the HF model has no lm_head (a bare ChameleonModel); convert "
                "ChameleonForConditionalGeneration, or pass allow_missing_head=True"
            )
        sd["lm_head.weight"] = model.lm_head.weight.detach().clone()
    load_state_strict(
        model, {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in sd.items()}, "the HF model"
    )
    if vocab is None:
        vocab = vocab_from_hf_config(hf_model.config, num_xp=num_xp)
    return model.eval(), vocab


def vocab_from_hf_config(hf_cfg, *, num_xp: int = 32, vocabulary_map: dict | None = None, **kwargs):
    from xprompt.tokenizer.vocab import Vocabulary

    vmap = vocabulary_map or getattr(hf_cfg, "vocabulary_map", None)
    if not vmap:
        raise CheckpointError("the Chameleon config has no vocabulary_map; cannot locate image tokens")
    try:
        return Vocabulary.from_chameleon(vmap, num_xp=num_xp, **kwargs)
    except XPromptError as e:
        raise CheckpointError(f"Chameleon vocabulary: {e}") from None


def to_hf_model(model, vocab, *, attn_implementation: str = "sdpa", vq_config: dict | None = None):
    """Build transformers' ``ChameleonForConditionalGeneration`` holding ``model``'s weights (for parity tests
    and benchmarks). Its VQ-VAE is a small random one unless ``vq_config`` is given; HF blanks image logits."""
    from transformers import ChameleonConfig, ChameleonForConditionalGeneration

    vq = vq_config or {
        "embed_dim": 8,
        "num_embeddings": max(2, vocab.num_image_codes),
        "latent_channels": 32,
        "base_channels": 32,
        "channel_multiplier": [1, 1],
        "num_res_blocks": 1,
        "resolution": 32,
    }
    hf_cfg = ChameleonConfig(
        **hf_config_kwargs(model.cfg),
        vocabulary_map=chameleon_vocabulary_map(vocab),
        vq_config=vq,
        bos_token_id=vocab.bos_id,
        eos_token_id=vocab.eos_id,
        pad_token_id=vocab.pad_id,
        attn_implementation=attn_implementation,
    )
    hf = ChameleonForConditionalGeneration(hf_cfg)
    ours = {
        ("lm_head.weight" if k == "lm_head.weight" else f"model.{k}"): v
        for k, v in model.state_dict().items()
    }
    missing, unexpected = hf.load_state_dict(ours, strict=False)
    bad = [k for k in missing if ".vqmodel." not in k and not k.startswith("model.vqmodel.")]
    if bad or unexpected:
        raise CheckpointError(f"HF export mismatch: missing {bad[:3]}, unexpected {list(unexpected)[:3]}")
    return hf.to(next(model.parameters()).dtype).eval()


def _read_hf_weights(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (path / "model.safetensors").is_file():
        files = ["model.safetensors"]
    elif list(path.glob("*.bin")):
        raise CheckpointError(
            f"{path} holds pickled *.bin weights; convert them to safetensors first "
            "(this project never loads pickles)"
        )
    else:
        raise CheckpointError(f"{path} holds no model.safetensors (or index) file")
    sd = {}
    for f in files:
        try:
            sd.update(load_file(str(path / f)))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path / f} is unreadable ({str(e).splitlines()[0]})") from None
    return sd


def load_hf_checkpoint(path, *, num_xp: int = 32, dtype: torch.dtype | None = None, **vocab_kwargs):
    """Load a Chameleon / Lumina-mGPT checkpoint in HF format from a local directory (``config.json`` with a
    ``vocabulary_map`` + safetensors, single or sharded) -> ``(XPromptModel, Vocabulary)``.

    XP tokens take reserved ids (``Vocabulary.from_chameleon``; their embedding rows are whatever the checkpoint
    holds there and are trained by fine-tuning), or new ids with ``xp_start=None`` (then the caller resizes the
    model: ``xprompt.published``). ``vocabulary_map`` overrides the config's (a config without one). ``load_pretrained``
    dispatches here for HF directories.
    """
    from transformers import AutoConfig

    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} is not an HF checkpoint directory (no config.json)")
    try:
        hf_cfg = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (ValueError, OSError, KeyError, TypeError) as e:  # what transformers raises for foreign configs
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path / 'config.json'}: not a readable Chameleon config ({msg})") from None
    if "chameleon" not in str(getattr(hf_cfg, "model_type", "")):
        raise CheckpointError(f"{path} holds a {hf_cfg.model_type!r} model, not Chameleon")
    cfg = model_config_from_hf(hf_cfg)
    vocab = vocab_from_hf_config(hf_cfg, num_xp=num_xp, **vocab_kwargs)
    sd = state_dict_from_hf(_read_hf_weights(path), str(path))
    if "lm_head.weight" not in sd:
        raise CheckpointError(f"{path} has no lm_head.weight (a bare ChameleonModel cannot generate)")
    return _build_loaded(cfg, sd, str(path), dtype), vocab


def is_hf_checkpoint(path) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() and not (path / "meta.json").is_file()

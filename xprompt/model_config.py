"""Model config (``ModelConfig``) and the preset registry.

Design choices
* One typed dataclass, saved as ``config.json`` beside ``model.safetensors`` (strict load through
  ``xprompt.config_io.config_from_dict``: unknown keys are an error).
* Field names are ours (``dim``, ``n_layers`` ...); ``to_hf_kwargs``/``from_hf_config`` in
  ``xprompt.checkpoint`` translate to and from transformers' ``ChameleonConfig``.
* Presets are functions of the vocabulary size (it comes from the ``Vocabulary``, not the preset):
    tiny          CPU model, dim 256 x 6 layers x 8 heads, SwiGLU 704: ~4.8M non-embedding parameters, trains
                  at a few thousand tokens/s on the 2-core machine at sequence lengths 300-700.
    base          dim 1024 x 16 layers x 16 heads (~200M non-embedding): a single-GPU model.
    chameleon-7b  the real Chameleon-7B shape (transformers' ``ChameleonConfig`` defaults: 4096 x 32 x 32,
                  SwiGLU 11008, vocabulary 65,536, 4,096 positions); only ever built on the meta device here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from xprompt.errors import ConfigError

ATTN_IMPLS = ("sdpa", "flex", "flash")


@dataclass
class ModelConfig:
    vocab_size: int
    dim: int = 256
    n_layers: int = 6
    n_heads: int = 8
    n_kv_heads: int = 8
    ffn_dim: int = 704
    max_seq_len: int = 4096
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5  # RMSNorm eps (Chameleon: 1e-5)
    qk_norm: bool = True  # per-head q/k LayerNorm (Chameleon's stabiliser)
    qk_norm_eps: float = 1e-5  # HF Chameleon hard-codes 1e-5
    swin_norm: bool = False  # Chameleon-30B style post-norm inside the residual branch
    attn_impl: str = "sdpa"  # "sdpa" (CPU+GPU), "flex" / "flash" (GPU-only fast paths)
    gradient_checkpointing: bool = False
    init_std: float = 0.02
    dropout: float = 0.0  # attention-probability and residual dropout (training only)
    name: str = "custom"  # preset name, informational

    def __post_init__(self):
        for f in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"ModelConfig.{f} must be a positive integer, got {v!r}")
        if self.dim % self.n_heads:
            raise ConfigError(f"ModelConfig.dim={self.dim} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"ModelConfig.n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}"
            )
        if (self.dim // self.n_heads) % 2:
            raise ConfigError(f"head dim {self.dim // self.n_heads} must be even for RoPE")
        if self.attn_impl not in ATTN_IMPLS:
            raise ConfigError(
                f"ModelConfig.attn_impl={self.attn_impl!r}; choose one of {', '.join(ATTN_IMPLS)}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"ModelConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.rope_theta <= 0 or self.norm_eps <= 0 or self.init_std <= 0:
            raise ConfigError("ModelConfig.rope_theta, norm_eps and init_std must be positive")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def non_embedding_params(self) -> int:
        """Parameters outside the embedding table and the LM head (closed form, for sizing presets)."""
        hd, kv = self.head_dim, self.n_kv_heads
        attn = self.dim * self.dim * 2 + 2 * self.dim * kv * hd
        qk = 2 * (self.n_heads + kv) * hd if self.qk_norm else 0
        mlp = 3 * self.dim * self.ffn_dim
        return self.n_layers * (attn + qk + mlp + 2 * self.dim) + self.dim

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


_PRESETS: dict[str, Callable[[int], dict]] = {
    "tiny": lambda v: {
        "dim": 256,
        "n_layers": 6,
        "n_heads": 8,
        "n_kv_heads": 8,
        "ffn_dim": 704,
        "max_seq_len": 2048,
    },
    "base": lambda v: {
        "dim": 1024,
        "n_layers": 16,
        "n_heads": 16,
        "n_kv_heads": 16,
        "ffn_dim": 2816,
        "max_seq_len": 4096,
    },
    "chameleon-7b": lambda v: {
        "dim": 4096,
        "n_layers": 32,
        "n_heads": 32,
        "n_kv_heads": 32,
        "ffn_dim": 11008,
        "max_seq_len": 4096,
        "rope_theta": 10000.0,
        "norm_eps": 1e-5,
    },
}


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str, vocab_size: int, **overrides) -> ModelConfig:
    """``ModelConfig`` of preset ``name`` for a vocabulary of ``vocab_size`` ids; ``overrides`` win."""
    if name not in _PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; choose one of {', '.join(preset_names())}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ConfigError(f"unknown ModelConfig field(s) {bad}; valid: {sorted(fields)}")
    kw = dict(_PRESETS[name](vocab_size), name=name)
    kw.update(overrides)
    return ModelConfig(vocab_size=vocab_size, **kw)

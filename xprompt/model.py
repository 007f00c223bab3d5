"""The decoder: Chameleon architecture, written by us (no I/O here; see ``xprompt.checkpoint`` for files).

Design choices
* Chameleon-7B block, matching transformers' ``modeling_chameleon`` exactly so HF weights load 1:1:
  pre-norm RMSNorm -> attention -> residual -> RMSNorm -> SwiGLU -> residual (``swin_norm`` moves the norms
  after each branch, Chameleon-30B style). Per-head q/k LayerNorm: statistics over ``head_dim`` with eps
  1e-5, then a *per-head* affine (weight and bias of shape ``(heads, head_dim)``), applied before RoPE.
  RoPE uses the rotate-half convention of HF checkpoints. Untied LM head.
* XP tokens are ordinary rows of the embedding table (their ids are owned by the Vocabulary).
* Attention: ``F.scaled_dot_product_attention`` with an explicit boolean mask ``(B, T, S)`` (True = may
  attend); ``None`` means plain causal. The diagonal is always allowed, so a padding query never has an empty
  row (an all-masked row yields NaNs that leak through V into later layers); every valid X-Prompt mask
  already allows the diagonal, so this changes nothing else. ``attn_impl="flex"`` (FlexAttention block masks)
  and ``"flash"`` (flash-attn, plain causal only; masked calls fall back to SDPA) are GPU-only fast paths,
  imported lazily and refused at construction without CUDA.
* dtype and device follow the parameters/inputs; under ``torch.autocast`` the norms compute in fp32 and q/k
  are cast to v's dtype before attention.
* Init: N(0, init_std) for embeddings and linears; the residual output projections (``o_proj``,
  ``down_proj``) use ``init_std / sqrt(2 * n_layers)`` (GPT-2 scaling) so deep stacks start stable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from xprompt.errors import ConfigError
from xprompt.kv_cache import KVCache
from xprompt.masks import DocAttention
from xprompt.model_config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dt)


class HeadNorm(nn.Module):
    """LayerNorm over head_dim with a separate affine per head (HF ``ChameleonLayerNorm``)."""

    def __init__(self, heads: int, head_dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(heads, head_dim))
        self.bias = nn.Parameter(torch.zeros(heads, head_dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, H, hd)
        h = F.layer_norm(x, (x.shape[-1],), None, None, eps=self.eps)
        return h * self.weight + self.bias


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Rotary(nn.Module):
    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", self._inv_freq(None), persistent=False)

    def _inv_freq(self, device) -> torch.Tensor:
        hd = self.head_dim
        return 1.0 / (
            self.theta ** (torch.arange(0, hd, 2, dtype=torch.float, device=device) / hd)
        )  # (hd/2,)

    def reset(self, device=None) -> None:
        """Recompute the (non-persistent) frequencies, e.g. after building the model on the meta device."""
        self.inv_freq = self._inv_freq(device)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # position_ids (B, T) -> cos, sin (B, 1, T, hd)
        freqs = position_ids[..., None].float() * self.inv_freq.to(position_ids.device)  # (B, T, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


_FLEX = None


def _flex_attention(q, k, v, mask, gqa: bool):
    """FlexAttention with a block mask read from the dense boolean mask (GPU only)."""
    global _FLEX
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    if _FLEX is None:
        _FLEX = torch.compile(flex_attention)
    b, _, t, _ = q.shape
    s = k.shape[2]

    def mask_mod(bi, hi, qi, ki):
        return mask[bi, qi, ki]

    block = create_block_mask(mask_mod, b, None, t, s, device=q.device)
    return _FLEX(q, k, v, block_mask=block, enable_gqa=gqa)


def _document_attention(q, k, v, docs: DocAttention, p: float, gqa: bool) -> torch.Tensor:
    """Attention per packed document: gather each document into its own row, attend, scatter back.

    q (B, H, T, hd), k/v (B, Hkv, T, hd) -> (B, T, H*hd); tokens outside every document get zeros."""
    b, h, t, hd = q.shape

    def rows(x):  # (B, h, T, hd) -> (N, h, L, hd)
        flat = x.transpose(1, 2).reshape(b * t, x.shape[1], hd)  # (B*T, h, hd)
        return flat[docs.index].transpose(1, 2)

    o = F.scaled_dot_product_attention(
        rows(q), rows(k), rows(v), attn_mask=docs.mask[:, None], dropout_p=p, enable_gqa=gqa
    )  # (N, H, L, hd)
    o = o.transpose(1, 2).reshape(-1, h * hd)[docs.valid.reshape(-1)]  # (tokens in documents, H*hd)
    out = o.new_zeros(b * t, h * hd).index_copy(0, docs.index[docs.valid], o)
    return out.view(b, t, h * hd)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.cfg, self.layer = cfg, layer
        hd = cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * hd, cfg.dim, bias=False)
        if cfg.qk_norm:
            self.q_norm = HeadNorm(cfg.n_heads, hd, cfg.qk_norm_eps)
            self.k_norm = HeadNorm(cfg.n_kv_heads, hd, cfg.qk_norm_eps)

    def qkv(self, x, cos, sin):
        """x (B, T, D) -> q (B, H, T, hd), k and v (B, Hkv, T, hd): projected, q/k-normed and rotated."""
        b, t, _ = x.shape
        cfg, hd = self.cfg, self.cfg.head_dim
        q = self.q_proj(x).view(b, t, cfg.n_heads, hd)
        k = self.k_proj(x).view(b, t, cfg.n_kv_heads, hd)
        v = self.v_proj(x).view(b, t, cfg.n_kv_heads, hd).transpose(1, 2)  # (B, Hkv, T, hd)
        if cfg.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2).to(v.dtype), k.transpose(1, 2).to(v.dtype)  # (B, H, T, hd)
        cos, sin = cos.to(v.dtype), sin.to(v.dtype)
        return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin, v

    def forward(self, x, cos, sin, mask, kv_cache: KVCache | None):
        # x (B, T, D); cos/sin (B, 1, T, hd); mask (B, T, S) bool, None (= causal) or "all" (T = 1, no mask)
        b, t, _ = x.shape
        cfg = self.cfg
        q, k, v = self.qkv(x, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer, k, v)  # (B, Hkv, S, hd)
        gqa = cfg.n_kv_heads != cfg.n_heads
        p = cfg.dropout if self.training else 0.0
        if isinstance(mask, DocAttention):
            o = _document_attention(q, k, v, mask, p, gqa)
        elif cfg.attn_impl == "flash" and (mask is None or isinstance(mask, str)):
            from flash_attn import flash_attn_func  # GPU-only optional dependency

            o = flash_attn_func(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=p, causal=True
            )
            o = o.reshape(b, t, -1)
        else:
            if isinstance(mask, str):  # "all": a single query that sees every cached key
                o = F.scaled_dot_product_attention(q, k, v, dropout_p=p, enable_gqa=gqa)
            elif cfg.attn_impl == "flex" and mask is not None:
                o = _flex_attention(q, k, v, mask, gqa)
            elif mask is None:
                o = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True, enable_gqa=gqa)
            else:
                o = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=mask[:, None], dropout_p=p, enable_gqa=gqa
                )
            o = o.transpose(1, 2).reshape(b, t, -1)  # (B, T, H*hd)
        return self.o_proj(o)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.swin = cfg.swin_norm
        self.self_attn = Attention(cfg, layer)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin, mask, kv_cache=None):
        if self.swin:
            x = x + self.drop(self.input_layernorm(self.self_attn(x, cos, sin, mask, kv_cache)))
            return x + self.drop(self.post_attention_layernorm(self.mlp(x)))
        x = x + self.drop(self.self_attn(self.input_layernorm(x), cos, sin, mask, kv_cache))
        return x + self.drop(self.mlp(self.post_attention_layernorm(x)))


class XPromptModel(nn.Module):
    """Decoder-only LM over the unified vocabulary. ``forward(input_ids, position_ids, attn_mask, kv_cache)``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.attn_impl in ("flex", "flash") and not torch.cuda.is_available():
            raise ConfigError(
                f"attn_impl={cfg.attn_impl!r} is a GPU-only fast path and no CUDA device is "
                "available; use attn_impl='sdpa'"
            )
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList([Block(cfg, i) for i in range(cfg.n_layers)])
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta)
        self.gradient_checkpointing = cfg.gradient_checkpointing
        self.reset_parameters()

    # ------------------------------------------------------------------ setup
    @torch.no_grad()
    def reset_parameters(self) -> None:
        std = self.cfg.init_std
        out_std = std / math.sqrt(2 * self.cfg.n_layers)
        for name, p in self.named_parameters():
            if p.device.type == "meta":
                continue
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, 0.0, out_std)
            elif name.endswith("norm.bias"):
                nn.init.zeros_(p)
            elif "norm" in name:
                nn.init.ones_(p)
            else:
                nn.init.normal_(p, 0.0, std)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.gradient_checkpointing = bool(enabled)

    def compile_regions(self) -> None:
        """``torch.compile`` the per-token work of every block in place: q/k/v projection with q/k norm and
        RoPE, the MLP, the norms. Attention itself stays eager: per-document gathering has data-dependent
        shapes, and SDPA is one kernel already. In place (``Module.compile``), so parameter names and
        checkpoints are unchanged; shapes that vary between batches are marked dynamic after the first
        recompile."""
        for layer in self.layers:
            for m in (layer.mlp, layer.input_layernorm, layer.post_attention_layernorm):
                m.compile()
            layer.self_attn.qkv = torch.compile(layer.self_attn.qkv)
        self.norm.compile()

    def num_params(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.embed_tokens.weight.numel() + self.lm_head.weight.numel()
        return n

    def new_cache(self) -> KVCache:
        return KVCache(self.cfg.n_layers)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        *,
        key_valid: torch.Tensor | None = None,
        return_hidden: bool = False,
    ) -> torch.Tensor:
        """Logits (B, T, V).

        input_ids (B, T) long; position_ids (B, T) long (default: continue from the cache, or 0..T-1);
        attn_mask (B, T, S) bool, True = may attend, S = cached entries + T (default: causal, every valid cached
        entry visible), or a ``DocAttention`` layout of packed documents (no cache; attention per document);
        key_valid (B, T) bool marks which new tokens later queries may see by default (False for padding; only
        stored in the cache). ``return_hidden`` returns the final-norm hidden states
        (B, T, D) instead of logits.
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
        b, t = input_ids.shape
        dev = input_ids.device
        past = kv_cache.length if kv_cache is not None else 0
        if position_ids is None:
            position_ids = (
                kv_cache.positions(t, b, dev)
                if kv_cache is not None
                else torch.arange(t, device=dev).expand(b, t)
            )
        full_view = False  # one new token that may see every cached entry: no mask needed at all
        if kv_cache is not None and attn_mask is None and past:
            if t == 1 and kv_cache.all_valid():
                full_view = True
            else:
                attn_mask = kv_cache.default_mask(t, b, dev)
        if isinstance(attn_mask, DocAttention):
            if kv_cache is not None or attn_mask.tokens != b * t:
                raise ValueError(
                    "a DocAttention layout is for packed training rows: no KV cache, and it must "
                    f"describe the {b}x{t} batch (it has {attn_mask.tokens} tokens)"
                )
        elif attn_mask is not None:
            if attn_mask.shape != (b, t, past + t):
                raise ValueError(
                    f"attn_mask must be (B, T, S)=({b}, {t}, {past + t}), got {tuple(attn_mask.shape)}"
                )
            diag = torch.zeros(t, past + t, dtype=torch.bool, device=dev)
            diag[:, past:] = torch.eye(t, dtype=torch.bool, device=dev)
            attn_mask = attn_mask.to(dev, torch.bool) | diag  # (B, T, S)
        x = self.embed_tokens(input_ids)  # (B, T, D)
        cos, sin = self.rotary(position_ids.to(dev), x.dtype)
        ckpt = self.gradient_checkpointing and self.training and torch.is_grad_enabled() and kv_cache is None
        mask = "all" if full_view else attn_mask  # "all": attend to every key; None: causal
        for layer in self.layers:
            if ckpt:
                x = checkpoint(layer, x, cos, sin, mask, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask, kv_cache)
        if kv_cache is not None:
            kv_cache.commit(t, position_ids.to(dev), key_valid)
        x = self.norm(x)
        if return_hidden:
            return x
        return self.lm_head(x)  # (B, T, V)

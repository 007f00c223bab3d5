"""Key/value cache for ``XPromptModel`` with the operations X-Prompt's compressed context needs.

Design choices
* Per layer one preallocated buffer pair ``k, v: (B, Hkv, capacity, hd)`` that grows by doubling, so a
  decoding step writes in place instead of concatenating the whole cache (transformers' DynamicCache
  concatenates). ``length`` counts committed entries; a forward pass writes its new entries at
  ``[length, length + T)`` in every layer and ``commit(T)`` advances ``length`` once at the end.
* ``key_mask (B, S)`` marks real entries (False = left padding of a batched prompt, or an entry a caller
  chose to hide); the model's default mask for new tokens is "every valid cached key + causal among the new".
* ``next_pos (B,)`` is the RoPE position of the next token. Positions are *not* the cache length: after
  ``keep`` drops the IE entries (compression) positions run on from where the full sequence left off, which is
  exactly what the masked full forward used, so logits are identical.
* ``keep(index)`` gathers a subset of entries (the kept PREFIX + XP entries); ``expand(B)`` repeats a
  batch-1 cache for several queries (compiled task prompts); ``state_dict``/``from_state_dict`` serialise it.
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, n_layers: int):
        self.n_layers = n_layers
        self.k: list[torch.Tensor | None] = [None] * n_layers  # each (B, Hkv, capacity, hd)
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.length = 0
        self.key_mask: torch.Tensor | None = None  # (B, length) bool
        self.next_pos: torch.Tensor | None = None  # (B,) long
        self._all_valid: bool | None = None  # cached ``key_mask.all()``; None = recompute

    # ------------------------------------------------------------------ info
    @property
    def batch_size(self) -> int | None:
        return None if self.k[0] is None else self.k[0].shape[0]

    def __len__(self) -> int:
        return self.length

    def nbytes(self) -> int:
        """Bytes held by the committed entries (not the spare capacity)."""
        total = 0
        for k, v in zip(self.k, self.v):
            if k is not None:
                per = k.shape[0] * k.shape[1] * k.shape[3] * k.element_size()
                total += 2 * per * self.length
        return total

    # ------------------------------------------------------------------ used by the model
    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write new entries ``k, v: (B, Hkv, T, hd)`` after the committed ones; return all ``(B, Hkv, L+T, hd)``."""
        b, h, t, d = k.shape
        need = self.length + t
        buf_k = self.k[layer]
        if buf_k is None or buf_k.shape[2] < need or buf_k.dtype != k.dtype or buf_k.device != k.device:
            cap = max(need, 2 * (buf_k.shape[2] if buf_k is not None else 0), 64)
            new_k = k.new_empty(b, h, cap, d)
            new_v = v.new_empty(b, h, cap, d)
            if buf_k is not None and self.length:
                new_k[:, :, : self.length] = buf_k[:, :, : self.length]
                new_v[:, :, : self.length] = self.v[layer][:, :, : self.length]
            self.k[layer], self.v[layer] = new_k, new_v
        self.k[layer][:, :, self.length : need] = k
        self.v[layer][:, :, self.length : need] = v
        return self.k[layer][:, :, :need], self.v[layer][:, :, :need]

    def default_mask(self, t: int, batch: int, device) -> torch.Tensor:
        """(B, T, L+T) bool: every valid cached key, causal among the T new tokens."""
        causal = torch.ones(t, t, dtype=torch.bool, device=device).tril()  # (T, T)
        if self.length == 0:
            return causal.expand(batch, t, t)
        past = self.key_mask[:, None, :].expand(batch, t, self.length)  # (B, T, L)
        return torch.cat([past, causal.expand(batch, t, t)], dim=2)

    def all_valid(self) -> bool:
        """True when every cached entry is visible (no padding, nothing hidden): decoding needs no mask."""
        if self._all_valid is None:
            self._all_valid = self.key_mask is None or bool(self.key_mask.all())
        return self._all_valid

    def hide(self, hidden: torch.Tensor) -> None:
        """Make entries ``hidden (B, S)`` invisible to every later token (e.g. IE entries kept uncompressed)."""
        self.key_mask = self.key_mask & ~hidden.to(self.key_mask.device)
        self._all_valid = None

    def positions(self, t: int, batch: int, device) -> torch.Tensor:
        """(B, T) default positions of T new tokens."""
        start = self.next_pos if self.next_pos is not None else torch.zeros(batch, dtype=torch.long, device=device)
        return start[:, None] + torch.arange(t, device=device)[None, :]

    def commit(self, t: int, position_ids: torch.Tensor, key_valid: torch.Tensor | None = None) -> None:
        """Advance by the T entries just written; ``position_ids (B, T)`` sets ``next_pos``."""
        b = position_ids.shape[0]
        kv = key_valid if key_valid is not None else torch.ones(b, t, dtype=torch.bool, device=position_ids.device)
        if key_valid is not None:  # appending only-valid entries leaves the flag as it was
            self._all_valid = None
        self.key_mask = kv if self.key_mask is None else torch.cat([self.key_mask, kv], dim=1)
        self.length += t
        self.next_pos = position_ids[:, -1] + 1

    # ------------------------------------------------------------------ compression and reuse
    def keep(self, index: torch.Tensor, valid: torch.Tensor | None = None) -> KVCache:
        """Keep only some entries (in place; returns self); ``next_pos`` is unchanged.

        ``index (S',)`` keeps the same entries in every row; ``index (B, S')`` keeps per-row entries, with
        ``valid (B, S')`` marking which of them are real (rows keeping fewer entries are padded).
        """
        index = torch.as_tensor(index, dtype=torch.long)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= self.length):
            raise IndexError(f"keep index outside the cache [0, {self.length})")
        for i in range(self.n_layers):
            if self.k[i] is None:
                continue
            idx = index.to(self.k[i].device)
            if idx.dim() == 1:
                self.k[i] = self.k[i].index_select(2, idx).contiguous()
                self.v[i] = self.v[i].index_select(2, idx).contiguous()
            else:  # (B, S') -> (B, Hkv, S', hd)
                b, h, _, d = self.k[i].shape
                g = idx[:, None, :, None].expand(b, h, idx.shape[1], d)
                self.k[i] = self.k[i][:, :, : self.length].gather(2, g)
                self.v[i] = self.v[i][:, :, : self.length].gather(2, g)
        if self.key_mask is not None:
            dev = self.key_mask.device
            if index.dim() == 1:
                self.key_mask = self.key_mask.index_select(1, index.to(dev))
            else:
                self.key_mask = self.key_mask.gather(1, index.to(dev))
            if valid is not None:
                self.key_mask = self.key_mask & valid.to(dev)
        self.length = int(index.shape[-1])
        self._all_valid = None
        return self

    def expand(self, batch: int) -> KVCache:
        """A new cache with a batch-1 cache repeated ``batch`` times (copies; the original is untouched)."""
        if self.batch_size != 1:
            raise ValueError(f"expand needs a batch-1 cache, this one has batch {self.batch_size}")
        out = KVCache(self.n_layers)
        for i in range(self.n_layers):
            out.k[i] = self.k[i][:, :, : self.length].expand(batch, -1, -1, -1).contiguous()
            out.v[i] = self.v[i][:, :, : self.length].expand(batch, -1, -1, -1).contiguous()
        out.length = self.length
        out.key_mask = self.key_mask.expand(batch, -1).contiguous()
        out.next_pos = self.next_pos.expand(batch).contiguous()
        return out

    def clone(self) -> KVCache:
        out = KVCache(self.n_layers)
        for i in range(self.n_layers):
            if self.k[i] is not None:
                out.k[i] = self.k[i][:, :, : self.length].clone()
                out.v[i] = self.v[i][:, :, : self.length].clone()
        out.length = self.length
        out.key_mask = None if self.key_mask is None else self.key_mask.clone()
        out.next_pos = None if self.next_pos is None else self.next_pos.clone()
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Committed entries as plain tensors (for safetensors)."""
        if self.k[0] is None:
            raise ValueError("cannot serialise an empty cache")
        out = {}
        for i in range(self.n_layers):
            out[f"k.{i}"] = self.k[i][:, :, : self.length].contiguous()
            out[f"v.{i}"] = self.v[i][:, :, : self.length].contiguous()
        out["key_mask"] = self.key_mask.contiguous()
        out["next_pos"] = self.next_pos.contiguous()
        return out

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], n_layers: int) -> KVCache:
        out = cls(n_layers)
        for i in range(n_layers):
            out.k[i], out.v[i] = sd[f"k.{i}"], sd[f"v.{i}"]
        out.key_mask = sd["key_mask"].bool()
        out.next_pos = sd["next_pos"].long()
        out.length = out.k[0].shape[2]
        return out

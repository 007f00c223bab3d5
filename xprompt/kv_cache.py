"""Key/value cache for ``XPromptModel`` with the operations X-Prompt's compressed context needs.

Design choices
* Per layer one preallocated buffer pair ``k, v: (B, Hkv, capacity, hd)``, plus one ``(B, capacity)`` key mask
  buffer, all growing by doubling, so a decoding step writes in place instead of concatenating the whole
  cache (transformers' DynamicCache concatenates every step). ``reserve(n)`` sizes the buffers up front when
  the number of new tokens is known (generation knows its step count), so decoding never reallocates.
  ``length`` counts committed entries; a forward pass writes its new entries at ``[length, length + T)`` in
  every layer and ``commit(T)`` advances ``length`` once at the end. Only ``[:length]`` is ever read;
  ``nbytes`` counts committed entries, ``capacity_nbytes`` what is allocated.
* ``key_mask (B, length)`` (a view of the buffer) marks real entries (False = left padding of a batched
  prompt, or an entry a caller chose to hide); the model's default mask for new tokens is "every valid cached
  key + causal among the new". ``all_valid()`` is tracked without a device sync per step: appending entries
  that are all valid cannot change it.
* ``next_pos (B,)`` is the RoPE position of the next token. Positions are *not* the cache length: after
  ``keep`` drops the IE entries (compression) positions run on from where the full sequence left off, which is
  exactly what the masked full forward used, so logits are identical.
* ``keep(index)`` gathers a subset of entries (the kept PREFIX + XP entries); ``expand(B)`` repeats a
  batch-1 cache for several queries (compiled task prompts); ``state_dict``/``from_state_dict`` serialise the
  committed entries only (never the spare capacity).
"""

from __future__ import annotations

import torch

MIN_CAPACITY = 64


class KVCache:
    def __init__(self, n_layers: int):
        self.n_layers = n_layers
        self.k: list[torch.Tensor | None] = [None] * n_layers  # each (B, Hkv, capacity, hd)
        self.v: list[torch.Tensor | None] = [None] * n_layers
        self.length = 0
        self._mask: torch.Tensor | None = None  # (B, capacity) bool; [:, :length] is the key mask
        self.next_pos: torch.Tensor | None = None  # (B,) long
        self._all_valid: bool | None = None  # cached ``key_mask.all()``; None = recompute
        self._reserve = 0  # extra capacity wanted at the first allocation (``reserve`` before any entry)

    # ------------------------------------------------------------------ info
    @property
    def batch_size(self) -> int | None:
        return None if self.k[0] is None else self.k[0].shape[0]

    @property
    def capacity(self) -> int:
        return 0 if self.k[0] is None else self.k[0].shape[2]

    @property
    def key_mask(self) -> torch.Tensor | None:
        """(B, length) bool view: True = a real entry later tokens may see."""
        return None if self._mask is None else self._mask[:, : self.length]

    @key_mask.setter
    def key_mask(self, mask: torch.Tensor | None) -> None:
        if mask is None:
            self._mask = None
        else:
            if mask.shape[1] != self.length:
                raise ValueError(
                    f"key_mask must cover the {self.length} committed entries, got {mask.shape[1]}"
                )
            self._mask = self._new_mask(mask.shape[0], max(self.length, self.capacity), mask.device)
            self._mask[:, : self.length] = mask
        self._all_valid = None

    def __len__(self) -> int:
        return self.length

    def nbytes(self) -> int:
        """Bytes held by the committed entries (not the spare capacity)."""
        return self._bytes(self.length)

    def capacity_nbytes(self) -> int:
        """Bytes allocated for keys and values, spare capacity included."""
        return self._bytes(None)

    def _bytes(self, n: int | None) -> int:
        total = 0
        for k in self.k:
            if k is not None:
                per = k.shape[0] * k.shape[1] * k.shape[3] * k.element_size()
                total += 2 * per * (k.shape[2] if n is None else n)
        return total

    # ------------------------------------------------------------------ capacity
    @staticmethod
    def _new_mask(b: int, cap: int, device) -> torch.Tensor:
        return torch.zeros(b, cap, dtype=torch.bool, device=device)

    def _grow_layer(self, layer: int, need: int, like: torch.Tensor) -> None:
        """Make layer ``layer``'s buffers hold ``need`` entries (dtype/device of ``like (B, Hkv, T, hd)``)."""
        buf = self.k[layer]
        if buf is not None and buf.shape[2] >= need and buf.dtype == like.dtype and buf.device == like.device:
            return
        old = buf.shape[2] if buf is not None else 0
        cap = max(need, 2 * old, MIN_CAPACITY) if buf is not None else max(need + self._reserve, MIN_CAPACITY)
        self._realloc(layer, cap, like)

    def _realloc(self, layer: int, cap: int, like: torch.Tensor) -> None:
        """New (B, Hkv, cap, hd) buffers for ``layer`` (dtype/device/shape of ``like``), committed entries copied."""
        b, h, _, d = like.shape
        new_k, new_v = like.new_empty(b, h, cap, d), like.new_empty(b, h, cap, d)
        if self.k[layer] is not None and self.length:
            new_k[:, :, : self.length] = self.k[layer][:, :, : self.length]
            new_v[:, :, : self.length] = self.v[layer][:, :, : self.length]
        self.k[layer], self.v[layer] = new_k, new_v

    def _grow_mask(self, b: int, need: int, device) -> None:
        if self._mask is not None and self._mask.shape[1] >= need:
            return
        cap = max(need, self.capacity, MIN_CAPACITY)
        new = self._new_mask(b, cap, device)
        if self._mask is not None and self.length:
            new[:, : self.length] = self._mask[:, : self.length]
        self._mask = new

    def reserve(self, extra: int) -> KVCache:
        """Make room for ``extra`` more entries in every layer now (one copy at most), so that the next
        ``extra`` tokens are written in place. Before the first entry it sets the first allocation's size."""
        if extra <= 0:
            return self
        if self.k[0] is None:
            self._reserve = int(extra)
            return self
        need = self.length + int(extra)
        for i in range(self.n_layers):
            if self.k[i] is not None and self.k[i].shape[2] < need:
                self._realloc(i, need, self.k[i])
        if self._mask is not None:
            self._grow_mask(self._mask.shape[0], need, self._mask.device)
        return self

    # ------------------------------------------------------------------ used by the model
    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write new entries ``k, v: (B, Hkv, T, hd)`` after the committed ones; return all ``(B, Hkv, L+T, hd)``."""
        t = k.shape[2]
        need = self.length + t
        self._grow_layer(layer, need, k)
        buf_k, buf_v = self.k[layer], self.v[layer]
        buf_k[:, :, self.length : need] = k
        buf_v[:, :, self.length : need] = v
        return buf_k[:, :, :need], buf_v[:, :, :need]

    def default_mask(self, t: int, batch: int, device, inner: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, L+T) bool: every valid cached key, causal among the T new tokens (and ``inner (B, T, T)``)."""
        new = torch.ones(t, t, dtype=torch.bool, device=device).tril().expand(batch, t, t)  # (B, T, T)
        if inner is not None:
            new = new & inner
        if self.length == 0:
            return new
        past = self.key_mask[:, None, :].expand(batch, t, self.length)  # (B, T, L)
        return torch.cat([past, new], dim=2)

    def all_valid(self) -> bool:
        """True when every cached entry is visible (no padding, nothing hidden): decoding needs no mask."""
        if self._all_valid is None:
            self._all_valid = self._mask is None or bool(self.key_mask.all())
        return self._all_valid

    def hide(self, hidden: torch.Tensor) -> None:
        """Make entries ``hidden (B, S)`` invisible to every later token (e.g. IE entries kept uncompressed)."""
        view = self.key_mask  # a view of the buffer: updated in place
        view &= ~hidden.to(view.device)
        self._all_valid = None

    def positions(self, t: int, batch: int, device) -> torch.Tensor:
        """(B, T) default positions of T new tokens."""
        if self.next_pos is None:
            return torch.arange(t, device=device).expand(batch, t)
        if t == 1:
            return self.next_pos[:, None]  # a view: no arithmetic on the decoding path
        return self.next_pos[:, None] + torch.arange(t, device=device)[None, :]

    def commit(self, t: int, position_ids: torch.Tensor, key_valid: torch.Tensor | None = None) -> None:
        """Advance by the T entries just written; ``position_ids (B, T)`` sets ``next_pos``."""
        b = position_ids.shape[0]
        need = self.length + t
        self._grow_mask(b, need, position_ids.device)
        if key_valid is None:  # appending only-valid entries leaves the all-valid flag as it was
            self._mask[:, self.length : need] = True
        else:
            self._mask[:, self.length : need] = key_valid
            self._all_valid = None
        self.length = need
        self.next_pos = position_ids[:, -1] + 1

    # ------------------------------------------------------------------ compression and reuse
    def keep(self, index: torch.Tensor, valid: torch.Tensor | None = None) -> KVCache:
        """Keep only some entries (in place; returns self); ``next_pos`` is unchanged.

        ``index (S',)`` keeps the same entries in every row; ``index (B, S')`` keeps per-row entries, with
        ``valid (B, S')`` marking which of them are real (rows keeping fewer entries are padded). The buffers
        shrink to the kept entries (the next write grows them, or call ``reserve``).
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
        if self._mask is not None:
            mask, dev = self.key_mask, self._mask.device
            mask = mask.index_select(1, index.to(dev)) if index.dim() == 1 else mask.gather(1, index.to(dev))
            if valid is not None:
                mask = mask & valid.to(dev)
            self._mask = mask.contiguous()
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
        out._mask = self.key_mask.expand(batch, -1).contiguous()
        out.next_pos = self.next_pos.expand(batch).contiguous()
        return out

    def clone(self) -> KVCache:
        out = KVCache(self.n_layers)
        for i in range(self.n_layers):
            if self.k[i] is not None:
                out.k[i] = self.k[i][:, :, : self.length].clone()
                out.v[i] = self.v[i][:, :, : self.length].clone()
        out.length = self.length
        out._mask = None if self._mask is None else self.key_mask.clone()
        out.next_pos = None if self.next_pos is None else self.next_pos.clone()
        out._all_valid = self._all_valid
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
        out.length = out.k[0].shape[2]
        for i in range(n_layers):
            if out.k[i].shape[2] != out.length or out.v[i].shape != out.k[i].shape:
                raise ValueError(f"layer {i} holds {out.k[i].shape[2]} entries, layer 0 holds {out.length}")
        out._mask = sd["key_mask"].bool().contiguous()
        if out._mask.shape != (out.k[0].shape[0], out.length):
            raise ValueError(
                f"key_mask has shape {tuple(out._mask.shape)}, expected {(out.k[0].shape[0], out.length)}"
            )
        out.next_pos = sd["next_pos"].long()
        return out

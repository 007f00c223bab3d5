"""Logits processors and token sampling (no model code here).

Design choices
* Structure is enforced by masking, not by model code: ``ImageGrid`` knows, for every row of a batch, the
  requested grid (H, W) and the step inside the image body, and allows only image codes inside a row, forces
  ``<eol>`` at row ends, ``<eoi>`` after the last row and then ``<eos>``. ``<boi> <h_H> <w_W>`` are not
  sampled at all: they are forced, so generation appends them to the prompt (one prefill instead of three
  decoding steps). ``TextOnly`` allows text tokens plus ``<eot>``/``<eos>``.
* Separate top-k for image and text positions (Lumina-mGPT: image top-k 2000 for text-to-image, 200 for dense
  / low-level tasks; temperature 1.0). Greedy = argmax after the constraint, for evaluation.
* Classifier-free guidance combines log-probabilities, ``uncond + scale * (cond - uncond)`` (as transformers'
  CFG processor does); the two branches are rows of one batch, so one forward pass serves both.
* Sampling uses an explicit ``torch.Generator`` so a seed reproduces an output exactly.
* Processors expose ``allowed_ids`` (the only ids that can ever be sampled), ``forced(step)`` (a token
  that needs no sampling, -1 otherwise) and optionally ``all_forced(step)`` (a host-side bool, so decoding
  need not sync on a tensor to learn it), so decoding computes the LM head only over the allowed rows (image
  codes inside an image: 2/3 of a 12k vocabulary here, 1/8 of Chameleon's) and skips it on forced steps.
  Restricting the softmax to the allowed set changes nothing: forbidden ids have probability 0 either way,
  and CFG on log-probabilities is invariant to the per-row normaliser.
* Mask-constrained decoding (``MaskedGrid``, mask-guided editing and inpainting) is the same schedule with
  more forced entries: outside a row's token mask each image position is forced to the query's own code, so
  the answer's context is exact and only the masked codes are sampled. An all-True mask is ``ImageGrid``
  exactly (same table, same random draws); an all-False mask samples nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from xprompt.errors import XPromptError

NEG = float("-inf")


@dataclass
class SamplingConfig:
    greedy: bool = False
    temperature: float = 1.0
    image_top_k: int = 200  # Lumina-mGPT: 200 for dense/low-level tasks, 2000 for text-to-image
    text_top_k: int = 10
    cfg_scale: float = 1.0  # classifier-free guidance; 1.0 = off
    seed: int | None = None

    def __post_init__(self):
        if self.temperature <= 0:
            raise XPromptError(f"temperature must be > 0, got {self.temperature} (use greedy for argmax)")
        if self.image_top_k < 0 or self.text_top_k < 0:
            raise XPromptError("top-k values must be >= 0 (0 = no top-k)")
        if self.cfg_scale < 0:
            raise XPromptError(f"cfg_scale must be >= 0, got {self.cfg_scale}")

    def generator(self, device="cpu") -> torch.Generator | None:
        if self.seed is None:
            return None
        g = torch.Generator(device=device)
        g.manual_seed(int(self.seed))
        return g


class TextOnly:
    """Allow text tokens, ``<eot>`` and ``<eos>``; everything else (image codes, structure, XP) is masked."""

    def __init__(self, vocab, device="cpu"):
        allow = torch.zeros(vocab.size, dtype=torch.bool, device=device)
        for i in range(vocab.size):
            allow[i] = vocab.is_text(i)
        allow[[vocab.boi_id, vocab.eoi_id, vocab.eol_id, vocab.pad_id, vocab.bos_id]] = False
        allow[torch.as_tensor(vocab.xp_ids, dtype=torch.long)] = False
        allow[torch.as_tensor(vocab.image_ids, dtype=torch.long)] = False
        allow[[vocab.eot_id, vocab.eos_id]] = True
        self.allow = allow  # (V,)
        self.allowed_ids = allow.nonzero().squeeze(1)  # (n,) the only ids decoding computes logits for
        self.stop = torch.tensor([vocab.eot_id, vocab.eos_id], device=device)

    def forced(self, step: int, batch: int = 1, device=None) -> torch.Tensor:
        return torch.full((batch,), -1, dtype=torch.long, device=device)

    def all_forced(self, step: int) -> bool:
        return False

    def __call__(self, step: int, logits: torch.Tensor) -> torch.Tensor:  # logits (B, V)
        return logits.masked_fill(~self.allow, NEG)

    def is_image(self, step: int, batch: int, device) -> torch.Tensor:
        return torch.zeros(batch, dtype=torch.bool, device=device)

    def finished(self, step: int, tokens: torch.Tensor) -> torch.Tensor:
        """(B,) True where the token just produced ends the text."""
        return torch.isin(tokens, self.stop.to(tokens.device))


class ImageGrid:
    """Image-body constraint for rows with (possibly different) grids ``heights[b] x widths[b]``.

    Step s (0-based, counted from the first token after ``<boi> <h> <w>``) of row b is: an image code when
    ``s < H*(W+1)`` and ``s % (W+1) < W``; ``<eol>`` when ``s % (W+1) == W``; ``<eoi>`` at ``s == H*(W+1)``;
    ``<eos>`` after that (a finished row keeps producing ``<eos>``, which is ignored).
    """

    def __init__(self, vocab, heights, widths, device="cpu"):
        self.h = torch.as_tensor(heights, dtype=torch.long, device=device)  # (B,)
        self.w = torch.as_tensor(widths, dtype=torch.long, device=device)
        for n in list(self.h.tolist()) + list(self.w.tolist()):
            vocab.h_token(int(n))  # validates the grid size against the vocabulary
        self.image_mask = vocab.image_token_mask(device)  # (V,)
        self.eol, self.eoi, self.eos = vocab.eol_id, vocab.eoi_id, vocab.eos_id
        self.body = self.h * (self.w + 1)  # (B,) tokens in rows incl. <eol>
        self.allowed_ids = torch.as_tensor(vocab.image_ids, dtype=torch.long, device=device)  # sampled ids
        # The whole schedule is known up front: one table per query, built once (decoding then only indexes a
        # row per step instead of running ~10 small tensor ops, and asks the host list whether to sample).
        n = self.steps
        s = torch.arange(n + 1, device=self.h.device)[:, None]  # (n+1, 1); row n = after every row's <eoi>
        img = (s < self.body) & (s % (self.w + 1) < self.w)  # (n+1, B)
        forced = torch.where(s < self.body, self.eol, self.eos)
        forced = torch.where(s == self.body, self.eoi, forced)
        self._img = img
        self._forced = torch.where(img, -1, forced)  # (n+1, B)
        self._finished = s >= self.body  # (n+1, B)
        self._all_forced = (~img).all(1).tolist()  # host list: steps where nothing is sampled

    @property
    def steps(self) -> int:
        """Decoding steps until every row has produced its ``<eoi>``."""
        return int(self.body.max()) + 1

    def _row(self, step: int) -> int:
        return min(max(int(step), 0), self.steps)

    def is_image(self, step: int, batch: int | None = None, device=None) -> torch.Tensor:
        """(B,) True where step ``step`` samples an image code."""
        return self._img[self._row(step)]

    def forced(self, step: int, batch: int | None = None, device=None) -> torch.Tensor:
        """(B,) forced token id, or -1 where an image code is to be sampled."""
        return self._forced[self._row(step)]

    def all_forced(self, step: int) -> bool:
        """True when no row samples at this step (a host-side answer: no device sync)."""
        return self._all_forced[self._row(step)]

    def __call__(self, step: int, logits: torch.Tensor) -> torch.Tensor:  # logits (B, V)
        forced = self.forced(step).to(logits.device)
        img = forced < 0
        allow = torch.zeros_like(logits, dtype=torch.bool)
        allow[img] = self.image_mask.to(logits.device)
        rows = (~img).nonzero().squeeze(1)
        allow[rows, forced[rows]] = True
        return logits.masked_fill(~allow, NEG)

    def finished(self, step: int, tokens: torch.Tensor) -> torch.Tensor:
        return self._finished[self._row(step)].to(tokens.device)


class MaskedGrid(ImageGrid):
    """``ImageGrid`` whose image positions outside ``masks[b]`` are forced to ``codes[b]`` (the query's codes).

    ``codes[b]`` is an int (h, w) code grid and ``masks[b]`` a bool (h, w) token mask (True = sample here) of
    row b's grid; a row given ``None`` for both is unconstrained.
    """

    def __init__(self, vocab, heights, widths, codes, masks, device="cpu"):
        super().__init__(vocab, heights, widths, device=device)
        if not (len(codes) == len(masks) == len(self.h)):
            raise XPromptError(
                "MaskedGrid needs one (codes, mask) pair per row (None for an unconstrained row)"
            )
        fixed = torch.full_like(self._forced, -1)  # (n+1, B) query token id where forced, -1 elsewhere
        for b, (c, m) in enumerate(zip(codes, masks, strict=True)):
            if c is None and m is None:
                continue
            h, w = int(self.h[b]), int(self.w[b])
            c, m = np.asarray(c), np.asarray(m, dtype=bool)
            if c.shape != (h, w) or m.shape != (h, w):
                raise XPromptError(
                    f"row {b}: the codes {c.shape} and token mask {m.shape} must both match the grid ({h}, {w})"
                )
            ids = torch.as_tensor(vocab.codes_to_ids(c), dtype=torch.long, device=fixed.device)  # (h, w)
            ids = torch.where(torch.as_tensor(m, device=fixed.device), -1, ids)
            steps = torch.arange(h, device=fixed.device)[:, None] * (w + 1) + torch.arange(
                w, device=fixed.device
            )
            fixed[steps.reshape(-1), b] = ids.reshape(-1)
        self._forced = torch.where(fixed >= 0, fixed, self._forced)
        self._img = self._img & (fixed < 0)
        self._all_forced = (self._forced >= 0).all(1).tolist()


def cfg_combine(cond: torch.Tensor, uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance on log-probabilities; (B, V) each."""
    lc, lu = torch.log_softmax(cond.float(), -1), torch.log_softmax(uncond.float(), -1)
    return lu + scale * (lc - lu)


def sample(
    logits: torch.Tensor,
    cfg: SamplingConfig,
    is_image: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits (B, V) already constrained (-inf = forbidden); is_image (B,) selects the top-k -> tokens (B,)."""
    logits = logits.float()
    if cfg.greedy:
        return logits.argmax(-1)
    logits = logits / cfg.temperature
    k = torch.where(is_image.to(logits.device), cfg.image_top_k, cfg.text_top_k)  # (B,)
    kmax = int(k.max())
    if kmax > 0 and kmax < logits.shape[-1]:
        top = logits.topk(kmax, dim=-1).values  # (B, kmax), sorted descending
        kk = torch.where(k > 0, k, logits.shape[-1]).clamp(max=kmax)
        thresh = top.gather(1, (kk - 1)[:, None])  # (B, 1) the k-th largest
        thresh = torch.where((k > 0)[:, None], thresh, torch.full_like(thresh, NEG))
        logits = logits.masked_fill(logits < thresh, NEG)
    probs = torch.softmax(logits, -1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)

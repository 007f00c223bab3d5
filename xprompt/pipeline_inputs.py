"""How a pipeline call's inputs reach the model and its outputs come back: images, masks, example pairs,
sampling settings and context-mode checks (the ``PipelineInputs`` mixin of ``XPrompt``).

Design choices
* Split from ``pipeline.py``: the preparation every task shares, so ``pipeline.py`` reads as the tasks. A
  mixin (not free functions) keeps the public methods where users call them (``XPrompt.encode``, ``decode``,
  ``fit``, ``encode_examples``, ``sampling_config``); it uses only the object's ``image_tok``,
  ``image_size``, ``aspect`` and ``trained_mode``, never the model.
* Every image goes to the model's size with ``xprompt.placement`` and back to its own size, never squashed;
  with a mask, the result is blended into the input so every pixel outside the mask is the input's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xprompt.errors import XPromptError, xprompt_warn
from xprompt.sampling import SamplingConfig
from xprompt.sequence import MODES, build_sample

# what classifier-free guidance contrasts with: nothing, the query alone, or the prompt without its examples
CFG_REFS = ("empty", "query", "instruction")


def check_cfg_ref(cfg_ref: str) -> str:
    if cfg_ref not in CFG_REFS:
        raise XPromptError(f"cfg_ref must be one of {', '.join(CFG_REFS)}, got {cfg_ref!r}")
    return cfg_ref


@dataclass
class _Queries:
    """The queries of one call: raw and fitted images, code grids, placements, and (mask-guided) the masks at
    the input's size, at the model's size and on the code grid."""

    raw: list[np.ndarray]
    fitted: list[np.ndarray]
    codes: list[np.ndarray]
    places: list
    raw_masks: list[np.ndarray] | None = None
    pmasks: list[np.ndarray] | None = None
    tmasks: list[np.ndarray] | None = None
    dilate: int = 1

    def keep(self):
        """``generate_images``' ``keep``: (codes, token mask) per row, or None without masks."""
        return None if self.tmasks is None else list(zip(self.codes, self.tmasks, strict=True))


class PipelineInputs:
    """Input preparation and output restoration of ``XPrompt`` (see the module docstring)."""

    # ------------------------------------------------------------------ images
    def load(self, image) -> np.ndarray:
        """Path / PIL image / array -> uint8 (H, W, 3) (not yet fitted)."""
        from xprompt.tokenizer.image_io import load_image

        if isinstance(image, (str, Path)) or hasattr(image, "convert"):
            return load_image(image)
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8 or 0 in arr.shape:
            raise XPromptError(
                f"images must be uint8 (H, W, 3) arrays, PIL images or paths; got {arr.dtype} {arr.shape}"
            )
        return arr

    def place(self, img: np.ndarray):
        """uint8 (H, W, 3) -> (the image at the model's size, its ``xprompt.placement.Placement``)."""
        from xprompt.placement import place

        f = int(self.image_tok.factor)
        return place(img, max(1, self.image_size // f) * f, f, self.aspect)

    def fit(self, img: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) -> the image the model sees (padded or bucketed to the model's size)."""
        return self.place(img)[0]

    def encode(self, image) -> np.ndarray:
        """An image -> its code grid (h, w)."""
        return self.image_tok.encode(self.fit(self.load(image))[None])[0]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return self.image_tok.decode(np.asarray(codes)[None])[0]

    def _refs(self, cfg_ref: str, query_codes, instructions=None) -> list | None:
        """``generate_images``' ``uncond`` (it matters only with ``cfg_scale != 1``): None for ``"empty"``
        (guidance against the image prior alone); for ``"query"`` each query alone, so guidance amplifies what
        the instruction and examples add (InstructPix2Pix's text guidance); for ``"instruction"`` each query
        with its instruction (``instructions``, one per query, None for none) but no example, so guidance
        amplifies what the examples add."""
        if check_cfg_ref(cfg_ref) == "empty":
            return None
        texts = (
            instructions
            if cfg_ref == "instruction" and instructions is not None
            else [None] * len(query_codes)
        )
        if len(texts) != len(query_codes):
            raise XPromptError(
                f"one instruction per query for the guidance reference ({len(texts)} for {len(query_codes)})"
            )
        return [
            build_sample(self.vocab, self.text_tok, mode="none", instruction=t, query=c)
            for t, c in zip(texts, query_codes, strict=True)
        ]

    # ------------------------------------------------------------------ masks (mask-guided editing)
    def _queries(self, raw: list[np.ndarray], mask=None, box=None, dilate: int = 1) -> _Queries:
        """Fitted queries, their code grids and placements, and the masks (None without mask/box)."""
        from xprompt.edit_mask import masks_for, token_mask
        from xprompt.placement import place_mask

        placed = [self.place(im) for im in raw]
        fitted, places = [p[0] for p in placed], [p[1] for p in placed]
        q = _Queries(raw, fitted, [self.image_tok.encode(f[None])[0] for f in fitted], places, dilate=dilate)
        q.raw_masks = masks_for([im.shape[:2] for im in raw], mask, box)
        if q.raw_masks is not None:
            q.pmasks = [place_mask(m, pl) for m, pl in zip(q.raw_masks, places, strict=True)]
            q.tmasks = [token_mask(m, int(self.image_tok.factor), dilate) for m in q.pmasks]
        return q

    def _finish(
        self, out_codes, q: _Queries, feather: int, keep_model_size: bool = False, blend: str = "mask"
    ) -> list[np.ndarray]:
        """Decode generated code grids and return them at the queries' sizes (or the model's with
        ``keep_model_size``); with masks, blend them into the inputs so every pixel outside is the input's
        (``blend="changed"``: only over the tokens the model changed, ``xprompt.edit_mask``)."""
        from xprompt.edit_mask import blend as composite
        from xprompt.edit_mask import changed_pixels, check_blend
        from xprompt.placement import restore, restore_mask

        check_blend(blend)
        imgs = [self.decode(c) for c in out_codes]
        pmasks, raw_masks = q.pmasks, q.raw_masks
        if pmasks is not None and blend == "changed":
            f = int(self.image_tok.factor)
            cms = [
                changed_pixels(c, o, t, f, q.dilate)
                for c, o, t in zip(q.codes, out_codes, q.tmasks, strict=True)
            ]
            pmasks = [m & c for m, c in zip(pmasks, cms, strict=True)]
            raw_masks = [m & restore_mask(c, pl) for m, c, pl in zip(raw_masks, cms, q.places, strict=True)]
        if keep_model_size or self.aspect == "bucket":  # bucket: blend at the model's size, then restore
            if pmasks is not None:
                imgs = [composite(f, im, m, feather) for f, im, m in zip(q.fitted, imgs, pmasks, strict=True)]
            return (
                imgs if keep_model_size else [restore(im, pl) for im, pl in zip(imgs, q.places, strict=True)]
            )
        imgs = [restore(im, pl) for im, pl in zip(imgs, q.places, strict=True)]
        if raw_masks is None:
            return imgs
        return [composite(r, im, m, feather) for r, im, m in zip(q.raw, imgs, raw_masks, strict=True)]

    def _out_masks(self, q: _Queries, keep_model_size: bool) -> list[np.ndarray] | None:
        """The pixel masks at the size of ``_finish``'s outputs."""
        from xprompt.placement import restore_mask

        if q.pmasks is None or keep_model_size:
            return q.pmasks
        if self.aspect == "pad":
            return q.raw_masks
        return [restore_mask(m, pl) for m, pl in zip(q.pmasks, q.places, strict=True)]

    def _examples(self, examples, text_outputs: bool = False) -> list[tuple]:
        """``[(input or [inputs], output), ...]`` -> code grids. Inputs are images (a ``str`` is a path); outputs
        are images too, or text when ``text_outputs`` (difference-description examples)."""
        out = []
        for i, ex in enumerate(examples or (), 1):
            if not isinstance(ex, (tuple, list)) or len(ex) != 2:
                raise XPromptError(f"example {i} must be an (input, output) pair")
            inp, outp = ex
            raw_in = [self.load(x) for x in (inp if isinstance(inp, (tuple, list)) else [inp])]
            raw_out = outp if (text_outputs and isinstance(outp, str)) else self.load(outp)
            if len(raw_in) == 1 and not isinstance(raw_out, str) and raw_in[0].shape != raw_out.shape:
                a, b = raw_in[0].shape, raw_out.shape
                raise XPromptError(
                    f"example {i}: the input is {a[1]}x{a[0]} but the output is {b[1]}x{b[0]}; an "
                    "example pair must have one size"
                )
            codes_in = [self.image_tok.encode(self.fit(x)[None])[0] for x in raw_in]
            codes_out = (
                raw_out if isinstance(raw_out, str) else self.image_tok.encode(self.fit(raw_out)[None])[0]
            )
            out.append((codes_in, codes_out))
        return out

    @staticmethod
    def _sampling(seed, greedy, top_k, temperature, cfg_scale, image_top_k_default=200) -> SamplingConfig:
        return SamplingConfig(
            greedy=greedy,
            temperature=temperature,
            seed=seed,
            cfg_scale=cfg_scale,
            image_top_k=image_top_k_default if top_k is None else int(top_k),
            text_top_k=10 if top_k is None else int(top_k),
        )

    # public names for the helpers other parts use (eval benchmarks build their own batched prompts)
    def encode_examples(self, examples, text_outputs: bool = False) -> list[tuple]:
        return self._examples(examples, text_outputs)

    def sampling_config(
        self, seed=None, greedy=False, top_k=None, temperature=1.0, cfg_scale=1.0, image_top_k_default=200
    ) -> SamplingConfig:
        return self._sampling(seed, greedy, top_k, temperature, cfg_scale, image_top_k_default)

    def _check_mode(self, mode: str, examples) -> None:
        if mode not in MODES:
            raise XPromptError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if mode in ("xp", "full") and not examples:
            raise XPromptError(f"mode {mode!r} needs at least one example pair (or use mode 'none')")

    def warn_mode(self, mode: str) -> None:
        """Warn (once per call) when the examples' context ``mode`` is not a layout the model was trained in."""
        if mode == "none" or not self.trained_mode or mode in self.trained_mode:
            return
        xprompt_warn(
            f"this model was trained with examples in mode {'/'.join(self.trained_mode)}, not {mode!r}; its "
            f"output in mode {mode!r} is likely noise (use --mode {self.trained_mode[0]})"
        )

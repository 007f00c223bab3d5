"""The Python API: ``XPrompt.from_pretrained(path)`` and in-context generation, retrieval-augmented editing,
text-to-image, difference description, compiled task prompts.

Design choices
* One object holds the model, its Vocabulary, the BPE text tokenizer and the image tokenizer. Images in are
  uint8 (H, W, 3) arrays, PIL images or file paths (read with ``xprompt.tokenizer.image_io.load_image``);
  images out are uint8 (H, W, 3) arrays.
* Tokenizers: explicit arguments win; otherwise the ones the checkpoint records (``meta.json`` ``extra``:
  ``tokenizers.vq``/``tokenizers.bpe``, or the training data's ``tokenizers.json`` as the trainer stores it);
  otherwise the shipped ``checkpoints/vq-64`` and ``checkpoints/bpe``. The image tokenizer's codebook must
  match the vocabulary's image range, and the BPE must fit the text range (one-line errors otherwise).
* Image sizes (``xprompt.placement``): every image is processed at the model's size (``image_size``, by
  default what the model was trained at) and every image output is returned at its query's size and aspect
  ratio. Non-square images are scaled to fit and padded (``aspect="pad"``, the default: the models here were
  trained on squares) or fitted to Lumina-mGPT's aspect-ratio buckets (``aspect="bucket"``, centre crop); never
  squashed. ``keep_model_size=True`` returns the model-size image instead. With a mask, the result is blended
  into the original at the user's size, so every pixel outside the mask is the user's, bit for bit.
* ``XPrompt.edit`` is the one retrieval-augmented editing (RAIE) flow: retrieve the nearest stored instructions
  (``xprompt.retrieval``; the default store when none is given), use their pairs as the in-context examples,
  generate. ``xprompt edit``, ``xprompt eval raie`` and the web app (``xprompt serve``) call it and get an
  ``EditResult`` with the image and what was retrieved. ``xprompt.session.EditSession`` chains edits (turns).
* ``progress``: True draws a tqdm bar on stderr; a callable ``progress(done, total)`` is called after every
  decoding step (``xprompt.generation``), which is how the web app shows token-by-token progress.
* Mask-guided editing (``mask=`` / ``box=`` on ``edit``, ``generate`` and ``inpaint``; ``xprompt.edit_mask``):
  the pixel mask is fitted like the image and lowered to a dilated token mask; decoding samples only the masked
  tokens and forces the query's codes elsewhere (``MaskedGrid``), and the decoded image is blended into the
  fitted input with a feathered border inside the mask, so every pixel outside the mask is the input's.
  Web app hook: an editing tab passes its brush strokes as ``mask=`` (a bool (H, W) array the size of the
  uploaded image) or its rectangle as ``box=(x0, y0, x1, y1)`` to ``XPrompt.edit``; nothing else is needed.
* Layouts match the training data (built by ``xprompt.train``, which this module never imports): in-context
  tasks put the instruction in PREFIX and the example pair(s) in IE; text-to-image has the caption as the query
  text; difference description has the two images as the query and a text answer.
* Layout: this module is ``XPrompt``'s loading and its tasks; input preparation and output restoration
  (images, masks, example pairs, sampling, mode checks) are the ``PipelineInputs`` mixin
  (``pipeline_inputs.py``), checkpoint metadata rules ``pipeline_loading.py``, and the result dataclasses
  ``results.py`` (``EditResult``, ``Retrieved``, ``Description`` stay importable from here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from xprompt.edit_mask import check_blend
from xprompt.errors import XPromptError
from xprompt.pipeline_inputs import PipelineInputs, check_cfg_ref
from xprompt.pipeline_loading import check_trained_with, dig, pick_tokenizer, trained_mode
from xprompt.results import Description, EditResult, Retrieved
from xprompt.sequence import build_sample
from xprompt.tokenizer.loading import load_image_tokenizer, load_text_tokenizer

T2I_INSTRUCTION = "Generate an image of: "
DIFF_INSTRUCTION = "What changed between these two images?"
INPAINT_INSTRUCTION = "Fill in the grey box."  # the (never trained) inpainting task's first template
INPAINT_FILL = 128  # the grey the inpainting task paints over the hidden region


class XPrompt(PipelineInputs):
    def __init__(
        self,
        model,
        vocab,
        text_tok,
        image_tok,
        *,
        image_size: int = 64,
        checkpoint: str | None = None,
        aspect: str = "pad",
        trained_mode: tuple[str, ...] | None = None,
    ):
        from xprompt.placement import ASPECTS

        self.model, self.vocab, self.text_tok, self.image_tok = model, vocab, text_tok, image_tok
        self.image_size = int(image_size)
        self.checkpoint = checkpoint
        if aspect not in ASPECTS:
            raise XPromptError(f"unknown aspect handling {aspect!r}; choose one of {', '.join(ASPECTS)}")
        self.aspect = aspect
        self.trained_mode = trained_mode  # the context modes the model was trained in, when recorded
        if int(image_tok.codebook_size) != vocab.num_image_codes:
            raise XPromptError(
                f"the image tokenizer has {image_tok.codebook_size} codes but the model's vocabulary "
                f"has {vocab.num_image_codes} image tokens; pass the tokenizer it was trained with"
            )
        n_text = getattr(text_tok, "vocab_size", None)
        if n_text is not None and n_text > vocab.text_size:
            raise XPromptError(
                f"the BPE tokenizer has {n_text} tokens but the vocabulary's text range holds "
                f"{vocab.text_size}; pass the BPE the model was trained with"
            )

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        path=None,
        *,
        vq=None,
        bpe=None,
        image_size: int | None = None,
        device: str = "cpu",
        dtype=None,
        tokenizer=None,
        num_xp: int = 32,
        aspect: str = "pad",
    ) -> XPrompt:
        """Load a model checkpoint dir (default: the shipped ``xprompt-tiny``) with its tokenizers.

        A Chameleon / Lumina-mGPT HF folder is the published stack (``xprompt.published``): its tokenizer folder
        (``tokenizer``, or found beside it) gives the text tokenizer and the VQGAN, ``num_xp`` X-Prompt tokens
        are added, and images default to 512 px."""
        from xprompt.checkpoint import is_hf_checkpoint, load_pretrained, read_meta
        from xprompt.paths import shipped

        path = Path(path) if path is not None else shipped("xprompt-tiny")
        if not path.exists():
            raise XPromptError(
                f"model checkpoint not found: {path} (train one with `xprompt train model` or "
                "pass --checkpoint)"
            )
        if is_hf_checkpoint(path):
            from xprompt.published import DEFAULT_IMAGE_SIZE, load_published

            model, vocab, text_tok, image_tok, _ = load_published(
                path, tokenizer or vq or bpe, num_xp=num_xp, dtype=dtype, device=device
            )
            size = int(image_size or DEFAULT_IMAGE_SIZE)
            return cls(
                model, vocab, text_tok, image_tok, image_size=size, checkpoint=str(path), aspect=aspect
            )
        model, vocab = load_pretrained(path, dtype=dtype, device=device)
        extra = {} if is_hf_checkpoint(path) else read_meta(path).get("extra", {})
        vq_spec, bpe_spec = (
            pick_tokenizer(path, extra, vq, "vq", shipped("vq-64")),
            pick_tokenizer(path, extra, bpe, "bpe", shipped("bpe")),
        )
        check_trained_with(path, extra, "vq", vq_spec)
        check_trained_with(path, extra, "bpe", bpe_spec)
        image_tok = load_image_tokenizer(vq_spec)
        text_tok = load_text_tokenizer(bpe_spec)
        if image_size is None:
            image_size = (
                dig(extra, "image_size")
                or dig(extra, "training", "data", "meta", "dataset_card.json", "size")
                or 64
            )
        return cls(
            model,
            vocab,
            text_tok,
            image_tok,
            image_size=int(image_size),
            checkpoint=str(path),
            aspect=aspect,
            trained_mode=trained_mode(extra),
        )

    # ------------------------------------------------------------------ tasks
    def generate(
        self,
        examples=(),
        query=None,
        instruction: str | None = None,
        mode: str = "xp",
        *,
        seed: int | None = None,
        greedy: bool = False,
        top_k: int | None = None,
        temperature: float = 1.0,
        cfg_scale: float = 1.0,
        cfg_ref: str = "empty",
        progress: bool = False,
        mask=None,
        box=None,
        dilate: int = 1,
        feather: int = 2,
        blend: str = "mask",
        keep_model_size: bool = False,
    ):
        """In-context generation: ``examples=[(a, b), ...]`` show the task, ``query`` (one image, or a list for a
        batch) gets the same treatment. Returns a uint8 (H, W, 3) image (a list for a list of queries).

        ``mask`` (white = change) or ``box=(x0, y0, x1, y1)`` restrict the change to a region of the query:
        only its (``dilate``-token dilated) tokens are sampled and the output keeps every pixel outside it
        (blended over a ``feather`` px border inside the mask; ``blend="changed"``: only over the tokens the
        model changed, keeping the query's exact pixels where it kept them). The output has the query's size
        and aspect ratio (``keep_model_size=True``: the model's size, as the model made it)."""
        from xprompt.generation import generate_images

        if query is None:
            raise XPromptError("generate needs a query image")
        check_blend(blend)
        check_cfg_ref(cfg_ref)
        self._check_mode(mode, examples)
        queries = list(query) if isinstance(query, (list, tuple)) else [query]
        self.warn_mode(mode)
        ex = self._examples(examples) if mode != "none" else []
        q = self._queries([self.load(x) for x in queries], mask, box, dilate)
        seqs = [
            build_sample(self.vocab, self.text_tok, mode=mode, instruction=instruction, examples=ex, query=c)
            for c in q.codes
        ]
        out = generate_images(
            self.model,
            self.vocab,
            seqs,
            [c.shape for c in q.codes],
            self._sampling(seed, greedy, top_k, temperature, cfg_scale),
            progress=progress,
            keep=q.keep(),
            uncond=self._refs(cfg_ref, q.codes, [instruction] * len(q.codes)),
        )
        imgs = self._finish(out, q, feather, keep_model_size, blend)
        return imgs if isinstance(query, (list, tuple)) else imgs[0]

    def edit(
        self,
        image,
        instruction,
        *,
        store=None,
        k: int = 1,
        mask=None,
        box=None,
        mask_from_instruction: bool = False,
        dilate: int = 1,
        feather: int = 2,
        blend: str = "mask",
        encoder=None,
        image_weight: float = 0.0,
        mode: str = "xp",
        seed: int | None = None,
        greedy: bool = False,
        top_k: int | None = None,
        temperature: float = 1.0,
        cfg_scale: float = 1.0,
        cfg_ref: str = "empty",
        progress: bool = False,
        keep_model_size: bool = False,
    ):
        """Retrieval-augmented editing (RAIE): edit ``image`` by ``instruction`` with the ``k`` most similar stored
        edit pairs as in-context examples (context ``mode``); ``k=0`` edits from the instruction alone.

        ``store``: an ``InstructionStore``, a store directory, or None for the default store (built on first
        use). ``encoder`` overrides the query encoder, ``image_weight > 0`` re-ranks by query-image similarity
        (stores built with image vectors). A list of images (with one instruction each, or one for all) is
        edited in one batch and gives a list of ``EditResult``. Instructions are validated but used as given.

        Mask-guided editing: ``mask`` (a binary image/array the size of ``image``, white = edit; one per image
        for a list) or ``box=(x0, y0, x1, y1)`` (pixels) limit the edit to a region: only its tokens (dilated by
        ``dilate``) are decoded, the query's own tokens are forced elsewhere, and the result is blended into
        the input with a ``feather`` px border inside the mask, so every pixel outside it is unchanged.
        ``blend="changed"`` composites only over the tokens the model changed (grown by ``dilate``), so the
        query's exact pixels stay wherever the model kept its tokens (``xprompt.edit_mask``).
        ``mask_from_instruction=True`` (procedural scenes): the mask is the region the instruction's named
        object changes (``xprompt.instruction_mask``). Results have the input's size (``keep_model_size=True``:
        the model's).
        """
        from xprompt.generation import generate_images
        from xprompt.retrieval.encoders import check_instructions

        images = list(image) if isinstance(image, (list, tuple)) else [image]
        texts = list(instruction) if isinstance(instruction, (list, tuple)) else [instruction] * len(images)
        if len(texts) != len(images) or not images:
            raise XPromptError(f"edit needs one instruction per image (got {len(texts)} for {len(images)})")
        if k < 0:
            raise XPromptError(f"k must be >= 0 (0 = no retrieval), got {k}")
        if mode not in ("xp", "full"):
            raise XPromptError(
                f"edit's mode is the context mode of the retrieved examples, 'xp' or 'full' (got "
                f"{mode!r}); k=0 edits without examples"
            )
        check_instructions(texts)
        check_blend(blend)
        check_cfg_ref(cfg_ref)
        raw = [self.load(im) for im in images]
        if mask_from_instruction:
            from xprompt.instruction_mask import instruction_masks

            mask, box = instruction_masks(raw, texts, mask=mask, box=box), None
        q = self._queries(raw, mask, box, dilate)  # bad masks fail before retrieval
        hits = self._retrieve(texts, raw, store, k, encoder, image_weight)
        modes = [mode if h else "none" for h in hits]
        if k > 0:
            self.warn_mode(mode)
        seqs = [
            build_sample(
                self.vocab,
                self.text_tok,
                mode=m,
                instruction=t,
                query=c,
                examples=self._examples([r.pair for r in h]) if h else [],
            )
            for m, t, c, h in zip(modes, texts, q.codes, hits, strict=True)
        ]
        out = generate_images(
            self.model,
            self.vocab,
            seqs,
            [c.shape for c in q.codes],
            self._sampling(seed, greedy, top_k, temperature, cfg_scale),
            progress=progress,
            keep=q.keep(),
            uncond=self._refs(cfg_ref, q.codes, texts),
        )
        imgs = self._finish(out, q, feather, keep_model_size, blend)
        pms = self._out_masks(q, keep_model_size) or [None] * len(imgs)
        results = [
            EditResult(im, t, m, h, mask=pm)
            for im, t, m, h, pm in zip(imgs, texts, modes, hits, pms, strict=True)
        ]
        return results if isinstance(image, (list, tuple)) else results[0]

    def inpaint(
        self,
        image,
        mask=None,
        *,
        box=None,
        examples=(),
        instruction: str | None = INPAINT_INSTRUCTION,
        mode: str | None = None,
        dilate: int = 1,
        feather: int = 2,
        seed: int | None = None,
        greedy: bool = False,
        top_k: int | None = None,
        temperature: float = 1.0,
        cfg_scale: float = 1.0,
        cfg_ref: str = "empty",
        progress: bool = False,
        keep_model_size: bool = False,
    ):
        """Fill the masked region of ``image`` (``mask`` white = fill, or ``box``) from its surroundings.

        The query is the image with the region painted grey (the inpainting task's layout); the answer keeps
        the image's own tokens outside the dilated token mask and samples the rest; the output keeps every
        pixel outside the mask. ``examples`` (optional (input, output) pairs) run in ``mode`` ("xp" by
        default, or "full"); without them the mode is "none". A list of images gives a list."""
        from xprompt.generation import generate_images

        mode = mode or ("xp" if examples else "none")
        self._check_mode(mode, examples)
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        if not images:
            raise XPromptError("inpaint needs at least one image")
        if mask is None and box is None:
            raise XPromptError("inpaint needs a mask (white = fill) or a box x0,y0,x1,y1")
        check_cfg_ref(cfg_ref)
        if mode != "none":
            self.warn_mode(mode)
        q = self._queries([self.load(im) for im in images], mask, box, dilate)
        holed = [
            np.where(m[..., None], np.uint8(INPAINT_FILL), f) for f, m in zip(q.fitted, q.pmasks, strict=True)
        ]
        ex = self._examples(examples) if mode != "none" else []
        holed_codes = [self.image_tok.encode(h[None])[0] for h in holed]
        seqs = [
            build_sample(self.vocab, self.text_tok, mode=mode, instruction=instruction, examples=ex, query=c)
            for c in holed_codes
        ]
        out = generate_images(
            self.model,
            self.vocab,
            seqs,
            [c.shape for c in q.codes],
            self._sampling(seed, greedy, top_k, temperature, cfg_scale),
            progress=progress,
            keep=q.keep(),  # the image's own tokens outside the hole
            uncond=self._refs(cfg_ref, holed_codes, [instruction] * len(holed_codes)),
        )
        imgs = self._finish(out, q, feather, keep_model_size)
        return imgs if isinstance(image, (list, tuple)) else imgs[0]

    @staticmethod
    def _retrieve(texts, images, store, k, encoder, image_weight) -> list[list[Retrieved]]:
        """The ``k`` nearest store entries of every instruction (none when ``k == 0``)."""
        if k == 0:
            return [[] for _ in texts]
        from xprompt.retrieval.default_store import open_store
        from xprompt.retrieval.store import InstructionStore

        if not isinstance(store, InstructionStore):
            store = open_store(store, encoder)
        if image_weight > 0:  # multimodal dist: re-rank text candidates by query-image similarity
            hits = store.search(texts, k=k, images=images, image_weight=image_weight)
        else:
            hits = store.search(texts, k=k)
        return [[Retrieved(rec.instruction, rec.task, s, rec.pair()) for s, rec in row] for row in hits]

    def text_to_image(
        self,
        prompt: str,
        *,
        size: tuple[int, int] | None = None,
        instruction: str | None = T2I_INSTRUCTION,
        seed: int | None = None,
        greedy: bool = False,
        top_k: int | None = None,
        temperature: float = 1.0,
        cfg_scale: float = 1.0,
        progress: bool = False,
    ) -> np.ndarray:
        """Text-to-image; ``size`` is (h, w) in codes (default: square at ``image_size``)."""
        from xprompt.generation import generate_images

        if not prompt or not prompt.strip():
            raise XPromptError("the text-to-image prompt is empty")
        side = max(1, self.image_size // int(self.image_tok.factor))
        size = size or (side, side)
        seq = build_sample(self.vocab, self.text_tok, mode="none", instruction=instruction, query=prompt)
        out = generate_images(
            self.model,
            self.vocab,
            [seq],
            [tuple(size)],
            self._sampling(seed, greedy, top_k, temperature, cfg_scale, 2000),
            progress=progress,
        )
        return self.decode(out[0])

    def describe(
        self,
        before,
        after,
        *,
        instruction: str | None = DIFF_INSTRUCTION,
        examples=(),
        mode: str = "none",
        seed: int | None = None,
        greedy: bool = True,
        top_k: int | None = None,
        max_new_tokens: int = 64,
        return_confidence: bool = False,
        progress: bool = False,
    ):
        """Describe, as text, what changed from ``before`` to ``after``.

        ``return_confidence=True`` returns a ``Description`` (the text and how sure the model is of it: the mean
        log-probability of its tokens) instead of the bare string."""
        from xprompt.generation import generate_text, score_text

        if examples and mode == "none":
            mode = "xp"
        self._check_mode(mode, examples)
        ex = self._examples(examples, text_outputs=True) if mode != "none" else []
        seq = build_sample(
            self.vocab,
            self.text_tok,
            mode=mode,
            instruction=instruction,
            examples=ex,
            query=[self.encode(before), self.encode(after)],
        )
        ids = generate_text(
            self.model,
            self.vocab,
            [seq],
            self._sampling(seed, greedy, top_k, 1.0, 1.0),
            max_new_tokens=max_new_tokens,
            progress=progress,
        )[0]
        text = self.text_tok.decode(self.vocab.ids_to_text(ids)).strip()
        if not return_confidence:
            return text
        logp = score_text(self.model, self.vocab, seq, ids)
        return Description(text, float(logp.mean()), len(ids))

    # ------------------------------------------------------------------ compiled task prompts
    def compile_prompt(self, examples, instruction: str | None = None, mode: str = "xp"):
        """Read the example pair(s) once; the result (``CompiledPrompt``, ``.save(path)``) serves many queries."""
        from xprompt.compiled import compile_prompt

        if mode == "none":
            raise XPromptError("a task prompt needs examples: use mode 'xp' (compressed) or 'full'")
        self._check_mode(mode, examples)
        self.warn_mode(mode)
        ex = self._examples(examples)
        ctx = build_sample(self.vocab, self.text_tok, mode=mode, instruction=instruction, examples=ex)
        return compile_prompt(
            self.model,
            self.vocab,
            ctx,
            info={"instruction": instruction or "", "n_examples": len(ex), "mode": mode},
        )

    def load_task(self, path):
        from xprompt.compiled import CompiledPrompt

        return CompiledPrompt.load(path, self.model, self.vocab)

    def generate_from(
        self,
        task,
        query,
        *,
        seed: int | None = None,
        greedy: bool = False,
        top_k: int | None = None,
        temperature: float = 1.0,
        cfg_scale: float = 1.0,
        cfg_ref: str = "empty",
        progress: bool = False,
        mask=None,
        box=None,
        dilate: int = 1,
        feather: int = 2,
        blend: str = "mask",
        keep_model_size: bool = False,
    ):
        """Generate from a compiled task prompt (a ``CompiledPrompt`` or a ``.xpt`` path) for one or more queries
        (``mask``/``box``/``blend`` as in ``generate``)."""
        from xprompt.compiled import CompiledPrompt
        from xprompt.generation import generate_images, td_only

        check_blend(blend)
        check_cfg_ref(cfg_ref)
        if not isinstance(task, CompiledPrompt):
            task = self.load_task(task)
        else:
            task.check(self.model, self.vocab)
        queries = list(query) if isinstance(query, (list, tuple)) else [query]
        q = self._queries([self.load(x) for x in queries], mask, box, dilate)
        seqs = [td_only(build_sample(self.vocab, self.text_tok, mode="none", query=c)) for c in q.codes]
        out = generate_images(
            self.model,
            self.vocab,
            seqs,
            [c.shape for c in q.codes],
            self._sampling(seed, greedy, top_k, temperature, cfg_scale),
            context=task.cache,
            context_segs=task.segs,
            progress=progress,
            keep=q.keep(),
            uncond=self._refs(cfg_ref, q.codes, [task.info.get("instruction") or None] * len(q.codes)),
        )
        imgs = self._finish(out, q, feather, keep_model_size, blend)
        return imgs if isinstance(query, (list, tuple)) else imgs[0]

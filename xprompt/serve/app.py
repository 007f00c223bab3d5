"""The Gradio page: five tabs wired to ``xprompt.serve.handlers`` over one shared ``XPrompt``.

Design choices
* One model, loaded once by the caller (``xprompt serve``) and shared by every tab and user; every event that
  runs it is in one concurrency group (``MODEL``) of limit 1, so one job runs at a time across all tabs (two
  CPU cores gain nothing from two decodes at once), and the queue is bounded (``queue_size``): a full queue
  refuses new jobs instead of growing without limit.
* Offline: analytics off (``GRADIO_ANALYTICS_ENABLED=False`` before Gradio is imported, ``analytics_enabled``),
  no share link, no server-side rendering (it needs Node), and a theme whose fonts are files served by Gradio
  itself (its default ``LocalFont``s) or the browser's own: the page fetches nothing from another host (the
  browser test checks every request).
* Uploads are ``gr.Image``s whose preprocessing hands the handler the uploaded file's path without decoding
  it, so a non-image file reaches ``load_image`` and comes back as a clear message in the page (Gradio's own
  preprocessing would fail with a bare "Error").
* Output images are written into Gradio's cache whole (temporary name, then rename) and never rewritten: Gradio's
  own write truncates a same-content file in place, which two users with the same result could download half-way.
* ``XPromptError`` (bad input) becomes ``gr.Error``: a toast with the one-line message; the server goes on.
  Anything else is a bug: it is logged with its traceback and the page shows Gradio's generic error.
* Progress: every generating handler gets a callback that forwards ``(done, total)`` decoded tokens to
  ``gr.Progress``, so the page shows a token counter and bar, not a frozen spinner.
* Every event has an ``api_name`` (``/generate``, ``/compile``, ``/edit``, ``/describe``, ``/t2i``, ...), so
  ``gradio_client`` (and the tests) drive the same functions as the page.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # read by Gradio at import and launch

import gradio as gr
import numpy as np
from gradio import processing_utils

from xprompt.errors import XPromptError
from xprompt.images import png_bytes
from xprompt.io_utils import atomic_write_bytes
from xprompt.serve import handlers as H

log = logging.getLogger("xprompt.serve")
MODEL = "model"  # the concurrency group of every event that runs the model: one job at a time in all tabs
PROGRESS = gr.Progress()  # Gradio injects a live tracker for a parameter whose default is a Progress

CSS = """
.pixelated img { image-rendering: pixelated; width: 100%; height: 100%; object-fit: contain; }
#status-generate, #status-edit, #status-turns { font-size: 0.9em; }
"""


def _keep_path(comp: gr.Image, payload):
    """``gr.Image.preprocess`` that hands over an uploaded file's path undecoded (see the module docstring)."""
    if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
        return str(payload.path)
    return gr.Image.preprocess(comp, payload)


def _upload(label: str, elem_id: str, height: int = 200) -> gr.Image:
    comp = gr.Image(
        label=label, type="filepath", sources=["upload", "clipboard"], elem_id=elem_id, height=height
    )
    # on the instance, not a subclass: Gradio writes a .pyi stub beside the module of every Component subclass
    comp.preprocess = functools.partial(_keep_path, comp)
    return comp


def _painter(label: str, elem_id: str) -> gr.ImageEditor:
    """Upload an image and paint over the region to change (one white brush; the strokes become the mask)."""
    comp = gr.ImageEditor(
        label=label, type="numpy", image_mode="RGBA", sources=["upload", "clipboard"], elem_id=elem_id,
        height=320, brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"), layers=False, transforms=(),
    )  # fmt: skip
    comp.preprocess = functools.partial(_named_errors, comp, gr.ImageEditor.preprocess, label)
    return comp


def _named_errors(comp, preprocess, label: str, payload):
    """Gradio's own decoding of an upload, with a file that is not an image reported by name."""
    try:
        return preprocess(comp, payload)
    except (OSError, ValueError, SyntaxError) as e:  # PIL: UnidentifiedImageError is an OSError
        name = getattr(getattr(payload, "background", None), "orig_name", None) or "the upload"
        raise gr.Error(f"{label}: {name}: not a readable image file ({type(e).__name__})") from None


def _output(label: str, elem_id: str, height: int = 256) -> gr.Image:
    comp = gr.Image(
        label=label, type="numpy", format="png", interactive=False, elem_id=elem_id, height=height,
        elem_classes=["pixelated"],
    )  # fmt: skip
    comp.postprocess = functools.partial(_cache_png_atomically, comp)
    return comp


def _cache_png_atomically(comp: gr.Image, value):
    """``gr.Image.postprocess`` that writes an array into Gradio's cache under a temporary name and renames it.

    Gradio names a cached output by a hash of its bytes and rewrites that file in place on every return, so two
    users who get the same image (greedy decoding) could download it while it is truncated (seen as an empty
    file). Here a file that exists is never rewritten, and a new one appears whole."""
    if not (isinstance(value, np.ndarray) and value.dtype == np.uint8):
        return gr.Image.postprocess(comp, value)
    data = png_bytes(value)
    path = Path(comp.GRADIO_CACHE) / processing_utils.hash_bytes(data) / "image.png"
    if not path.exists():
        atomic_write_bytes(path, data)
    return gr.Image.postprocess(comp, str(path))


def page_errors(fn):
    """Run a handler: ``XPromptError`` -> ``gr.Error`` (shown in the page); the server keeps serving."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except XPromptError as e:
            raise gr.Error(str(e), duration=None) from None
        except gr.Error:
            raise
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            raise

    return run


def token_progress(progress, desc: str = "decoding"):
    """A ``callback(done, total)`` for the pipeline that moves the page's progress bar."""

    def report(done: int, total: int) -> None:
        progress((done, total), desc=desc, unit="tokens")

    return report


def _sampling_controls(greedy: bool = True, top_k: int = 0) -> list:
    with gr.Accordion("Decoding", open=False):
        with gr.Row():
            g = gr.Checkbox(value=greedy, label="greedy (argmax)")
            seed = gr.Number(value=0, precision=0, label="seed")
            k = gr.Number(value=top_k, precision=0, label="top-k (0 = default)")
        with gr.Row():
            t = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="temperature")
            cfg = gr.Slider(0.0, 5.0, value=1.0, step=0.1, label="CFG scale (1 = off)")
    return [g, seed, k, t, cfg]


def build_app(xp, *, stores: dict | None = None, max_pairs: int = H.MAX_PAIRS) -> gr.Blocks:
    """The page for the loaded ``XPrompt`` ``xp``; ``stores`` maps store names to directories or
    ``InstructionStore``s (``None`` = the default store)."""
    store_cache = H.StoreCache(stores)
    work = tempfile.mkdtemp(prefix="xprompt-serve-")  # compiled tasks and session zips offered for download
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    # Gradio's cache of uploads and outputs: files older than a day are removed, checked hourly
    with gr.Blocks(title="xprompt", analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        gr.Markdown(
            f"# xprompt\nIn-context image generation and retrieval-augmented editing with "
            f"`{_short(xp.checkpoint)}` ({xp.image_size} px images). Every image is fitted to the model's size."
        )
        with gr.Tab("In-context", id="tab-generate"):
            _in_context_tab(xp, max_pairs, work)
        with gr.Tab("Edit (RAIE)", id="tab-edit"):
            _edit_tab(xp, store_cache)
        with gr.Tab("Multi-turn editing", id="tab-turns"):
            _turns_tab(xp, store_cache, work)
        with gr.Tab("Describe", id="tab-describe"):
            _describe_tab(xp)
        with gr.Tab("Text to image", id="tab-t2i"):
            _t2i_tab(xp)
    return app


def _short(path) -> str:
    """A checkpoint path relative to the working directory when it is inside it (the page's header)."""
    from pathlib import Path

    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _in_context_tab(xp, max_pairs: int, work: str) -> None:
    gr.Markdown("Show the task with example pairs (input → output), then give a query.")
    n_pairs = gr.State(1)
    rows, slots = [], []
    for i in range(max_pairs):
        with gr.Row(visible=i == 0) as row:
            slots.append(_upload(f"example {i + 1} input", f"ex{i + 1}-in", 160))
            slots.append(_upload(f"example {i + 1} output", f"ex{i + 1}-out", 160))
        rows.append(row)
    with gr.Row():
        add = gr.Button("Add example pair", size="sm", elem_id="add-pair")
        remove = gr.Button("Remove last pair", size="sm", elem_id="remove-pair")

    def show(n):
        return [n] + [gr.Row(visible=i < n) for i in range(max_pairs)]

    def add_pair(n):
        return show(min(max_pairs, n + 1))

    def remove_pair(n):  # the removed pair's images are cleared so they are not used any more
        n2 = max(1, n - 1)
        cleared = [None if i // 2 >= n2 else gr.update() for i in range(2 * max_pairs)]
        return show(n2) + cleared

    add.click(add_pair, n_pairs, [n_pairs, *rows], api_visibility="private")
    remove.click(remove_pair, n_pairs, [n_pairs, *rows, *slots], api_visibility="private")
    with gr.Row():
        with gr.Column():
            query = _upload("query", "query", 256)
            instruction = gr.Textbox(label="instruction (optional)", elem_id="instruction")
            mode = gr.Radio(["xp", "full", "none"], value="xp", label="context mode", elem_id="mode")
            sampling = _sampling_controls()
        with gr.Column():
            out = _output("output", "output")
            status = gr.Markdown(elem_id="status-generate")
            go = gr.Button("Generate", variant="primary", elem_id="generate")
            reuse = gr.Button("Use the output as the query", size="sm", elem_id="reuse-output")
    with gr.Accordion("Compiled task (.xpt)", open=False):
        with gr.Row():
            compile_btn = gr.Button("Compile this task", elem_id="compile")
            task_out = gr.File(label="compiled task (download)", elem_id="task-out")
            task_in = gr.File(label="use a compiled task instead of the pairs", file_types=[".xpt"])
        compile_status = gr.Markdown()

    @page_errors
    def run(progress=PROGRESS, *vals):  # Gradio fills a *positional* Progress parameter, hence first
        slot_vals, (q, instr, m, task, *samp) = vals[: 2 * max_pairs], vals[2 * max_pairs :]
        kw = H.sampling_kwargs(*samp)
        return H.in_context(xp, slot_vals, q, instr, m, task, kw, token_progress(progress))

    @page_errors
    def compile_(*vals):
        return H.compile_task(xp, vals[: 2 * max_pairs], vals[-2], vals[-1], out_dir=work)

    go.click(
        run,
        [*slots, query, instruction, mode, task_in, *sampling],
        [out, status],
        api_name="generate",
        concurrency_id=MODEL,
        concurrency_limit=1,
    )
    reuse.click(lambda im: im, out, query, api_visibility="private")
    compile_btn.click(
        compile_,
        [*slots, instruction, mode],
        [task_out, compile_status],
        api_name="compile",
        concurrency_id=MODEL,
        concurrency_limit=1,
    )


def _edit_tab(xp, stores: H.StoreCache) -> None:
    gr.Markdown(
        "Retrieval-augmented editing: the stored instructions nearest to yours lend their image pairs as "
        "the in-context examples. Paint over a region (or give a box `x0,y0,x1,y1`, or tick *mask from the "
        "instruction's object* for the procedural scenes) to change only it; every pixel outside is kept."
    )
    with gr.Row():
        with gr.Column():
            image = _painter("image (paint over the region to change, optional)", "edit-image")
            instruction = gr.Textbox(label="instruction", elem_id="edit-instruction")
            with gr.Row():
                store = gr.Dropdown(stores.names, value=stores.names[0], label="store")
                k = gr.Slider(
                    0, 8, value=1, step=1, label="k (retrieved examples; 0 = none)", elem_id="edit-k"
                )
            box = gr.Textbox(label="box x0,y0,x1,y1 (optional)", placeholder="e.g. 8,8,40,40")
            auto = gr.Checkbox(
                value=False,
                label="mask from the instruction's object (procedural scenes)",
                elem_id="edit-automask",
            )
            ref = gr.Radio(
                ["empty", "query", "instruction"],
                value="empty",
                label="CFG guides against (query: only what the instruction and example add; with a mask, "
                "try CFG 3)",
                elem_id="edit-cfg-ref",
            )
            sampling = _sampling_controls()
            go = gr.Button("Edit", variant="primary", elem_id="edit")
        with gr.Column():
            table = gr.Markdown(elem_id="retrieved")
            pairs = gr.Gallery(label="retrieved pairs (before, after)", columns=4, height=180)
            out = _output("result", "edit-output")
            status = gr.Markdown(elem_id="status-edit")
            reuse = gr.Button("Edit the result further", size="sm", elem_id="reuse-edit")

    @page_errors
    def run(
        img, instr, st, kk, bx, greedy, seed, top_k, temp, cfg, auto_=False, ref_="empty", progress=PROGRESS
    ):
        samp = H.sampling_kwargs(greedy, seed, top_k, temp, cfg, cfg_ref=ref_)
        res, msg = H.edit(
            xp, img, instr, stores, st, kk, bx, samp, token_progress(progress), from_instruction=auto_
        )
        return H.retrieved_table(res), H.retrieved_gallery(res), res.image, msg

    go.click(
        run,
        # new inputs go last, so older API calls still fit
        [image, instruction, store, k, box, *sampling, auto, ref],
        [table, pairs, out, status],
        api_name="edit",
        concurrency_id=MODEL,
        concurrency_limit=1,
    )
    reuse.click(lambda im: im, out, image, api_visibility="private")  # (Multi-turn keeps a history)


def _turns_tab(xp, stores: H.StoreCache, work: str) -> None:
    gr.Markdown(
        "Edit, then edit the result again: every turn starts from the last output. Undo drops the last "
        "turn; *Download all* saves every turn, the retrieved pairs and `history.json` as one zip."
    )
    session = gr.State(None)
    with gr.Row():
        with gr.Column():
            start = _upload("start image", "turn-start", 200)
            instruction = gr.Textbox(label="instruction for the next turn", elem_id="turn-instruction")
            with gr.Row():
                store = gr.Dropdown(stores.names, value=stores.names[0], label="store")
                k = gr.Slider(0, 8, value=1, step=1, label="k")
            box = gr.Textbox(label="box x0,y0,x1,y1 (optional, pixels of the current image)")
            sampling = _sampling_controls()
            with gr.Row():
                go = gr.Button("Apply edit", variant="primary", elem_id="turn-apply")
                undo = gr.Button("Undo", elem_id="turn-undo")
                zip_btn = gr.Button("Download all", elem_id="turn-zip")
        with gr.Column():
            current = _output("current image", "turn-current")
            status = gr.Markdown(elem_id="status-turns")
            zip_file = gr.File(label="session zip")
    gallery = gr.Gallery(label="history", columns=8, height=160, elem_id="turn-history")
    table = gr.Markdown("No edits yet.")

    def view(sess, msg):
        cur = None if sess is None else sess.current
        return sess, cur, H.session_gallery(sess), H.session_table(sess), msg

    @page_errors
    def begin(img, st, kk):
        if img is None:
            return view(None, "")
        return view(H.session_start(xp, img, stores, st, kk), "new session: type an instruction")

    @page_errors
    def apply(sess, img, instr, st, kk, bx, greedy, seed, top_k, temp, cfg, progress=PROGRESS):
        if sess is None:
            sess = H.session_start(xp, img, stores, st, kk)
        samp = H.sampling_kwargs(greedy, seed, top_k, temp, cfg)
        res = H.session_edit(sess, instr, kk, bx, samp, token_progress(progress), stores, st)
        return view(sess, f"turn {len(sess)}: mode {res.mode}, {len(res.retrieved)} retrieved")

    @page_errors
    def undo_(sess):
        if sess is None:
            raise XPromptError("nothing to undo: no session yet")
        t = sess.undo()
        return view(sess, f"undid {t.instruction!r}")

    @page_errors
    def export(sess):
        return H.session_zip(sess, out_dir=work)

    views = [session, current, gallery, table, status]
    start.change(
        begin, [start, store, k], views, api_name="turn_start", concurrency_id=MODEL, concurrency_limit=1
    )
    go.click(
        apply,
        [session, start, instruction, store, k, box, *sampling],
        views,
        api_name="turn_edit",
        concurrency_id=MODEL,
        concurrency_limit=1,
    )
    undo.click(undo_, session, views, api_name="turn_undo")
    zip_btn.click(export, session, zip_file, api_name="turn_zip")


def _describe_tab(xp) -> None:
    gr.Markdown("Difference description: what changed from the first image to the second, as text.")
    with gr.Row():
        before = _upload("before", "before", 200)
        after = _upload("after", "after", 200)
    question = gr.Textbox(label="question (optional; default: the phrase the model was trained with)")
    n = gr.Slider(1, 256, value=64, step=1, label="max tokens")
    go = gr.Button("Describe", variant="primary", elem_id="describe")
    text = gr.Textbox(label="description", interactive=False, elem_id="description")

    @page_errors
    def run(a, b, q, m, progress=PROGRESS):
        return H.describe(xp, a, b, q, m, token_progress(progress, "writing"))

    go.click(
        run,
        [before, after, question, n],
        text,
        api_name="describe",
        concurrency_id=MODEL,
        concurrency_limit=1,
    )


def _t2i_tab(xp) -> None:
    with gr.Row():
        with gr.Column():
            prompt = gr.Textbox(
                label="prompt", placeholder="a small red circle at the top left, on a grey background"
            )
            sampling = _sampling_controls(greedy=False)
            go = gr.Button("Generate", variant="primary", elem_id="t2i")
        with gr.Column():
            out = _output("image", "t2i-output")
            status = gr.Markdown()

    @page_errors
    def run(p, greedy, seed, top_k, temp, cfg, progress=PROGRESS):
        samp = H.sampling_kwargs(greedy, seed, top_k, temp, cfg)
        return H.text_to_image(xp, p, samp, token_progress(progress))

    go.click(
        run, [prompt, *sampling], [out, status], api_name="t2i", concurrency_id=MODEL, concurrency_limit=1
    )


def launch(
    app: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    queue_size: int = 16,
    block: bool = True,
    quiet: bool = False,
):
    """Serve ``app`` locally: a bounded queue, one job at a time, no share link, nothing from other hosts."""
    app.queue(max_size=queue_size, default_concurrency_limit=1)
    return app.launch(
        server_name=host,
        server_port=port,
        share=False,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        enable_monitoring=False,
        prevent_thread_lock=not block,
        quiet=quiet,
        max_file_size="25mb",
        footer_links=["api"],
        css=CSS,
    )

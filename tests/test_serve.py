"""The web app: its handlers (plain functions over ``XPrompt``), ``EditSession``, the per-token progress hook,
and its HTTP API through ``gradio_client`` against a server started on a free local port."""

import io
import json
import socket
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from gen_helpers import scene_image, tiny_checkpoint, write_png
from test_edit_api import store  # noqa: F401  (the tiny RAIE store fixture)

from xprompt.errors import XPromptError
from xprompt.serve import handlers as H

GREEDY = H.sampling_kwargs(greedy=True)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread (as `xprompt serve --threads 1`): two spinning threads crawl beside a busy core."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ck(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("serve") / "ck", image_size=32)


@pytest.fixture(scope="module")
def xp(ck):
    from xprompt.pipeline import XPrompt

    return XPrompt.from_pretrained(ck)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Example pair, query, a 16 px image, a text file posing as an image, and a too-large (blank) image."""
    d = tmp_path_factory.mktemp("serve-files")
    f = {n: str(write_png(d / f"{n}.png", 32, 32, seed=i)) for i, n in enumerate(["a", "b", "q"])}
    f["small"] = str(write_png(d / "small.png", 16, 16, seed=5))
    (d / "notes.txt").write_text("this is not an image\n")
    f["text"] = str(d / "notes.txt")
    Image.new("L", (4200, 4100)).save(d / "huge.png")  # 17.2 M pixels > H.MAX_PIXELS, compresses to ~20 kB
    f["huge"] = str(d / "huge.png")
    return f


def slots(*pairs, n=H.MAX_PAIRS):
    flat = [x for p in pairs for x in p]
    return flat + [None] * (2 * n - len(flat))


# ------------------------------------------------------------------------------------ progress hook
def test_progress_callback_reports_every_decoded_token(xp, files):
    calls = []
    img = xp.generate(
        [(files["a"], files["b"])], files["q"], greedy=True, progress=lambda d, t: calls.append((d, t))
    )
    h = w = 32 // 8  # grid:8 tokenizer, 32 px
    total = h * (w + 1) + 1  # rows with <eol>, then <eoi>
    assert calls == [(i, total) for i in range(1, total + 1)]
    assert np.array_equal(img, xp.generate([(files["a"], files["b"])], files["q"], greedy=True))
    words = []
    xp.describe(files["a"], files["b"], max_new_tokens=5, progress=lambda d, t: words.append((d, t)))
    assert words and words[0] == (1, 5) and all(t == 5 for _, t in words)


# ------------------------------------------------------------------------------------ handlers
def test_in_context_handler_is_the_pipeline(xp, files):
    img, status = H.in_context(xp, slots((files["a"], files["b"])), files["q"], " ", "xp", None, GREEDY)
    ref = xp.generate([(files["a"], files["b"])], files["q"], mode="xp", greedy=True)
    assert np.array_equal(img, ref) and status.startswith("mode xp, 1 example pair(s): 32x32")
    two = slots((files["a"], files["b"]), (files["b"], files["a"]))
    img2, _ = H.in_context(xp, two, files["q"], "make it so", "full", None, GREEDY)
    ref2 = xp.generate(
        [(files["a"], files["b"]), (files["b"], files["a"])], files["q"], "make it so", "full", greedy=True
    )
    assert np.array_equal(img2, ref2)
    none, status = H.in_context(xp, slots((files["a"], files["b"])), files["q"], "", "none", None, GREEDY)
    assert (
        np.array_equal(none, xp.generate([], files["q"], mode="none", greedy=True)) and "0 example" in status
    )


def test_compiled_task_round_trip(xp, files, tmp_path):
    pairs = slots((files["a"], files["b"]))
    path, status = H.compile_task(xp, pairs, "", "xp", out_dir=tmp_path)
    assert path.endswith(".xpt") and Path(path).is_file() and "1 pair(s), mode xp" in status
    img, status = H.in_context(xp, slots(), files["q"], "", "xp", path, GREEDY)
    assert "compiled task" in status
    assert np.array_equal(img, xp.generate([(files["a"], files["b"])], files["q"], greedy=True))
    with pytest.raises(XPromptError, match="not both"):
        H.in_context(xp, pairs, files["q"], "", "xp", path, GREEDY)
    with pytest.raises(XPromptError, match="holds its own instruction"):
        H.in_context(xp, slots(), files["q"], "paint it", "xp", path, GREEDY)
    with pytest.raises(XPromptError, match="not a compiled task"):
        H.in_context(xp, slots(), files["q"], "", "xp", files["text"], GREEDY)
    with pytest.raises(XPromptError, match="needs at least one example pair"):
        H.compile_task(xp, slots(), "", "xp")
    with pytest.raises(XPromptError, match="mode xp .* or full"):
        H.compile_task(xp, pairs, "", "none")


def test_bad_input_is_one_line_naming_the_field(xp, files):
    good = slots((files["a"], files["b"]))
    cases = [
        (good, files["text"], "query: notes.txt: not a readable image file"),
        (good, None, "query: no image uploaded"),
        (good, files["huge"], "query: huge.png: image is too large (4200x4100"),
        (slots((files["a"], None)), files["q"], "example pair 1 has no output image"),
        (
            slots((files["a"], files["small"])),
            files["q"],
            "example 1: the input is 32x32 but the output is 16x16",
        ),
        (slots(), files["q"], "mode xp needs at least one example pair"),
    ]
    for s, q, msg in cases:
        with pytest.raises(XPromptError) as e:
            H.in_context(xp, s, q, "", "xp", None, GREEDY)
        assert msg in str(e.value) and "\n" not in str(e.value)
        assert "/tmp" not in str(e.value)  # the server-side temp path is not shown, the file name is
    with pytest.raises(XPromptError, match="temperature > 0"):
        H.sampling_kwargs(False, 0, 5, 0.0, 1.0)
    with pytest.raises(XPromptError, match="must be integers"):
        H.sampling_kwargs(False, "x", 5, 1.0, 1.0)
    with pytest.raises(XPromptError, match="cfg_ref must be one of empty, query"):
        H.sampling_kwargs(True, 0, 0, 1.0, 3.0, cfg_ref="prompt")
    assert H.sampling_kwargs(True, 0, 0, 1.0, 3.0, cfg_ref="query")["cfg_ref"] == "query"
    assert "cfg_ref" not in H.sampling_kwargs()
    assert H.sampling_kwargs(False, 3, 0, 0.7, 2.0) == {
        "greedy": False, "seed": 3, "top_k": None, "temperature": 0.7, "cfg_scale": 2.0,
    }  # fmt: skip


def test_edit_handler_shows_what_was_retrieved(xp, store, files):  # noqa: F811
    st, imgs = store
    stores = H.StoreCache({"test": st})
    res, status = H.edit(xp, files["q"], "Make the circle red", stores, "test", 2, "", GREEDY)
    ref = xp.edit(H.read_image(files["q"], "q"), "Make the circle red", store=st, k=2, greedy=True)
    assert np.array_equal(res.image, ref.image) and res.instructions == ref.instructions
    table = H.retrieved_table(res)
    assert "| 1 | make the circle red |" in table and f"{res.scores[0]:.3f}" in table
    gal = H.retrieved_gallery(res)
    assert len(gal) == 4 and np.array_equal(gal[0][0], imgs[0]) and gal[0][1].endswith("before")
    assert status.startswith("mode xp, 2 retrieved")
    boxed, _ = H.edit(xp, files["q"], "Make the circle red", stores, "test", 1, "0,0,16,16", GREEDY)
    q = xp.fit(H.read_image(files["q"], "q"))
    assert np.array_equal(boxed.image[16:], q[16:]) and np.array_equal(boxed.image[:, 16:], q[:, 16:])
    for args, msg in [
        ((files["q"], "  ", stores, "test", 1, ""), "the instruction is empty"),
        ((files["q"], "x", stores, "test", 1, "1,2,3"), "four integers"),
        ((files["q"], "x", stores, "nope", 1, ""), "unknown store 'nope'"),
        ((files["q"], "x", stores, "test", 9, ""), "between 0"),
        ((files["text"], "x", stores, "test", 1, ""), "image: notes.txt"),
    ]:
        with pytest.raises(XPromptError, match=msg):
            H.edit(xp, *args, GREEDY)


def test_edit_with_painted_strokes_keeps_everything_else(xp, store, files):  # noqa: F811
    stores = H.StoreCache({"test": store[0]})
    q = H.read_image(files["q"], "q")
    rgba = np.concatenate([q, np.full((32, 32, 1), 255, np.uint8)], axis=2)  # the editor's RGBA background
    layer = np.zeros((32, 32, 4), np.uint8)
    layer[4:12, 20:30] = (255, 255, 255, 255)  # one white stroke
    img, mask = H.editor_value({"background": rgba, "layers": [layer], "composite": None})
    assert np.array_equal(img, q) and mask.sum() == 8 * 10 and mask[4:12, 20:30].all()
    assert H.editor_value({"background": rgba, "layers": [np.zeros_like(layer)]})[1] is None  # no stroke
    assert H.editor_value({"background": None, "layers": []}) == (None, None)
    res, status = H.edit(xp, {"background": rgba, "layers": [layer]}, "x", stores, "test", 1, "", GREEDY)
    ref = xp.edit(q, "x", store=store[0], k=1, mask=mask, greedy=True)
    assert np.array_equal(res.image, ref.image) and "only the marked region" in status
    keep = ~ref.mask  # the fitted mask (dilated tokens are re-decoded, but pixels outside the mask are kept)
    assert np.array_equal(res.image[keep], xp.fit(q)[keep])
    with pytest.raises(XPromptError, match="either painted strokes or a box"):
        H.edit(xp, {"background": rgba, "layers": [layer]}, "x", stores, "test", 1, "0,0,8,8", GREEDY)
    with pytest.raises(XPromptError, match="the painted region is 16x16 but the image is 32x32"):
        H.editor_value({"background": rgba, "layers": [layer[:16, 16:]]})  # a 16x16 canvas with a stroke
    with pytest.raises(XPromptError, match="image: no image uploaded"):
        H.edit(xp, {"background": None, "layers": []}, "x", stores, "test", 1, "", GREEDY)


def test_edit_mask_from_the_instruction_checkbox(xp, store):  # noqa: F811
    from xprompt.instruction_mask import instruction_mask

    stores = H.StoreCache({"test": store[0]})
    img, text = scene_image(32), "Remove the red square."
    res, status = H.edit(xp, img, text, stores, "test", 1, "", GREEDY, from_instruction=True)
    ref = xp.edit(img, text, store=store[0], k=1, mask_from_instruction=True, greedy=True)
    assert np.array_equal(res.image, ref.image) and "only the instruction's object" in status
    keep = ~instruction_mask(img, text)
    assert np.array_equal(res.image[keep], img[keep])
    with pytest.raises(XPromptError, match="clear the painted strokes and the box"):
        H.edit(xp, img, text, stores, "test", 1, "0,0,8,8", GREEDY, from_instruction=True)
    with pytest.raises(XPromptError, match="could not find the green cross"):
        H.edit(xp, img, "Remove the green cross.", stores, "test", 1, "", GREEDY, from_instruction=True)


def test_edit_session_chains_turns_with_undo_and_zip(xp, store, files, tmp_path):  # noqa: F811
    from xprompt import EditSession

    st, _ = store
    s = EditSession(xp, files["q"], store=st, k=1, greedy=True)
    assert len(s) == 0 and np.array_equal(s.current, H.read_image(files["q"], "q"))
    r1 = s.edit("Make the circle red")
    r2 = s.edit("remove the square", k=0)
    assert np.array_equal(s.turns[1].input, r1.image) and np.array_equal(s.current, r2.image)
    assert np.array_equal(r2.image, xp.edit(r1.image, "remove the square", k=0, greedy=True).image)
    hist = s.history()
    assert [h["instruction"] for h in hist] == ["Make the circle red", "remove the square"]
    assert hist[0]["retrieved"][0]["instruction"] == "make the circle red" and hist[1]["mode"] == "none"
    out = s.export_zip(tmp_path / "s.zip")
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        meta = json.loads(z.read("history.json"))
        first = np.asarray(Image.open(io.BytesIO(z.read("turn_01/output.png"))))
    assert {"start.png", "turn_01/output.png", "turn_01/retrieved_1_source.png", "turn_02/input.png"} <= names
    assert meta["turns"] == hist and np.array_equal(first, r1.image)
    assert s.undo().instruction == "remove the square" and np.array_equal(s.current, r1.image)
    s.undo()
    with pytest.raises(XPromptError, match="nothing to undo"):
        s.undo()
    with pytest.raises(XPromptError, match=r"must end in \.zip"):
        s.export_zip(tmp_path / "s.tar")
    assert not (tmp_path / "s.tar").exists()


def test_session_handlers_table_and_gallery(xp, store, files, tmp_path):  # noqa: F811
    st, _ = store
    stores = H.StoreCache({"test": st})
    sess = H.session_start(xp, files["q"], stores, "test", 1)
    H.session_edit(sess, "Make the circle red", 1, "", GREEDY, None, stores, "test")
    assert "| 1 | Make the circle red | xp | make the circle red (" in H.session_table(sess)
    assert [c for _, c in H.session_gallery(sess)] == ["start", "turn 1: Make the circle red"]
    assert Path(H.session_zip(sess, out_dir=tmp_path)).name == "edits-1turns.zip"
    with pytest.raises(XPromptError, match="no editing session"):
        H.session_edit(None, "x")
    with pytest.raises(XPromptError, match="the instruction is empty"):
        H.session_edit(sess, "")


def test_describe_and_t2i_handlers(xp, files):
    text = H.describe(xp, files["a"], files["b"], "", 8)
    assert text == xp.describe(files["a"], files["b"], max_new_tokens=8)
    img, _ = H.text_to_image(xp, "a red circle", GREEDY)
    assert img.shape == (32, 32, 3) and np.array_equal(img, xp.text_to_image("a red circle", greedy=True))
    with pytest.raises(XPromptError, match="the prompt is empty"):
        H.text_to_image(xp, " ", GREEDY)
    with pytest.raises(XPromptError, match="after: no image"):
        H.describe(xp, files["a"], None)


# ------------------------------------------------------------------------------------ HTTP API
def test_output_image_is_cached_whole_and_never_rewritten(tmp_path):
    from xprompt.serve import app as A

    comp = A._output("output", "out-test")
    comp.GRADIO_CACHE = str(tmp_path)
    img = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    first = Path(comp.postprocess(img).path)
    assert first.is_relative_to(tmp_path) and np.array_equal(np.asarray(Image.open(first)), img)
    stamp = first.stat().st_mtime_ns
    time.sleep(0.01)
    again = Path(comp.postprocess(img.copy()).path)  # the same result for a second user
    # served as it is, not truncated and rewritten
    assert again == first and first.stat().st_mtime_ns == stamp
    other = Path(comp.postprocess(255 - img).path)
    assert other != first and np.array_equal(np.asarray(Image.open(other)), 255 - img)
    assert not [p for p in tmp_path.rglob(".image.png.*")]  # no staging file left behind
    assert comp.postprocess(None) is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(xp, store):  # noqa: F811
    from xprompt.serve.app import build_app, launch

    app = build_app(xp, stores={"test": store[0]})
    _, url, _ = launch(app, port=free_port(), queue_size=8, block=False, quiet=True)
    yield app, url
    app.close()


def client(url):
    from gradio_client import Client

    # a download folder per client: gradio_client names a downloaded file by a hash of its content, so clients
    # sharing /tmp/gradio can read a result while another client is still writing the same path
    return Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix="xprompt-client-"))


def generate_args(files, query):
    from gradio_client import handle_file

    pair = slots((handle_file(files["a"]), handle_file(files["b"])))
    return [*pair, handle_file(query), "", "xp", None, True, 0, 0, 1.0, 1.0]


def test_server_is_local_offline_and_bounded(server):
    import os

    app, url = server
    assert url.startswith("http://127.0.0.1:")
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False" and app.analytics_enabled is False
    assert app._queue.max_size == 8 and app.share is False
    names = set(client(url).view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {
        "/generate",
        "/compile",
        "/edit",
        "/turn_edit",
        "/turn_undo",
        "/turn_zip",
        "/describe",
        "/t2i",
    } <= names


def test_page_wiring_progress_and_errors(server):
    import gradio as gr

    from xprompt.serve.app import page_errors, token_progress

    app, _ = server
    public = [f for f in app.fns.values() if f.api_visibility == "public"]
    tracked = {f.api_name: f.tracks_progress for f in public}
    # every event that runs the model shares one concurrency group of limit 1 (one job at a time, all tabs)
    model = {f.api_name for f in public if f.concurrency_id == "model" and f.concurrency_limit == 1}
    assert model == {"generate", "compile", "edit", "turn_start", "turn_edit", "describe", "t2i"}
    assert tracked == {
        "generate": True, "compile": False, "edit": True, "turn_start": False, "turn_edit": True,
        "turn_undo": False, "turn_zip": False, "describe": True, "t2i": True,
    }  # fmt: skip
    seen = []
    token_progress(lambda p, desc, unit: seen.append((p, desc, unit)))(3, 9)
    assert seen == [((3, 9), "decoding", "tokens")]

    def bad():
        raise XPromptError("the instruction is empty; type one")

    with pytest.raises(gr.Error, match="the instruction is empty; type one"):
        page_errors(bad)()
    with pytest.raises(ZeroDivisionError):  # a bug stays a bug (logged with its traceback)
        page_errors(lambda: 1 / 0)()


def test_http_generate_and_error_keep_serving(server, xp, files):
    from gradio_client.exceptions import AppError

    c = client(server[1])
    path, status = c.predict(*generate_args(files, files["q"]), api_name="/generate")
    got = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(got, xp.generate([(files["a"], files["b"])], files["q"], greedy=True))
    assert status.startswith("mode xp, 1 example pair(s)")
    with pytest.raises(AppError, match="query: notes.txt: not a readable image file"):
        c.predict(*generate_args(files, files["text"]), api_name="/generate")
    path2, _ = c.predict(*generate_args(files, files["q"]), api_name="/generate")  # still serving
    assert np.array_equal(np.asarray(Image.open(path2).convert("RGB")), got)


def test_http_edit_and_multi_turn(server, files, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    c = client(server[1])
    q = handle_file(files["q"])
    editor = {"background": q, "layers": [], "composite": None, "id": None}
    table, gallery, img, status = c.predict(
        editor, "Make the circle red", "test", 2, "", True, 0, 0, 1.0, 1.0, api_name="/edit"
    )
    assert "make the circle red" in table and len(gallery) == 4 and Path(img).is_file()
    Image.fromarray(scene_image(32)).save(tmp_path / "scene.png")  # the "mask from the instruction" checkbox
    scene = {
        "background": handle_file(str(tmp_path / "scene.png")),
        "layers": [],
        "composite": None,
        "id": None,
    }
    *_, status = c.predict(
        scene, "Remove the red square.", "test", 1, "", True, 0, 0, 1.0, 1.0, True, api_name="/edit"
    )
    assert "only the instruction's object" in status
    *_, status = c.predict(  # CFG against the query alone (the last input, after the checkbox)
        editor, "Make the circle red", "test", 1, "8,8,24,24", True, 0, 0, 1.0, 3.0, False, "query",
        api_name="/edit",
    )  # fmt: skip
    assert "only the marked region" in status
    with pytest.raises(AppError, match="not in the list of choices"):  # gradio refuses it before the handler
        c.predict(editor, "Make the circle red", "test", 1, "", True, 0, 0, 1.0, 3.0, False, "prompt",
                  api_name="/edit")  # fmt: skip
    bad = {"background": handle_file(files["text"]), "layers": [], "composite": None, "id": None}
    with pytest.raises(AppError, match="notes.txt: not a readable image file"):
        c.predict(bad, "Make the circle red", "test", 1, "", True, 0, 0, 1.0, 1.0, api_name="/edit")
    c.predict(q, "test", 1, api_name="/turn_start")  # the state lives in the client's session
    for instr in ["Make the circle red", "remove the square"]:
        out = c.predict(None, instr, "test", 1, "", True, 0, 0, 1.0, 1.0, api_name="/turn_edit")
    _, hist, table, status = out
    assert status.startswith("turn 2:") and len(hist) == 3 and "remove the square" in table
    assert c.predict(api_name="/turn_undo")[3].startswith("undid 'remove the square'")
    zpath = c.predict(api_name="/turn_zip")
    with zipfile.ZipFile(zpath) as z:
        assert len(json.loads(z.read("history.json"))["turns"]) == 1


def test_four_clients_at_once_all_get_images(server, files):
    results, errors = [], []

    def one(i):
        try:
            c = client(server[1])
            path, _ = c.predict(*generate_args(files, files["q"]), api_name="/generate")
            results.append(np.asarray(Image.open(path).convert("RGB")))
        except Exception as e:  # noqa: BLE001  (reported below: a failed thread fails the test)
            errors.append(repr(e))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(results) == 4, errors
    assert all(np.array_equal(r, results[0]) for r in results)  # greedy: the same image for everyone
    assert time.perf_counter() - t0 < 120


def test_cli_serve_bad_arguments(tmp_path, capsys):
    from xprompt.cli import main

    assert main(["serve", "--port", "70000"]) == 2
    assert "--port must be an integer >= 1 and <= 65,535" in capsys.readouterr().err
    assert main(["serve", "--store", str(tmp_path)]) == 2
    assert "is not a store (no manifest.json)" in capsys.readouterr().err

"""The serverless page (`lenet5 export --format web`): the folder, and the page in Chromium reading
with its own script (reader.js) as `lenet5 serve` reads with Python, opened from disk and from a
plain static host. Served and static pages load the same checkpoint: the shipped weights."""

import base64
import contextlib
import functools
import http.server
import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import lenet5
from conftest import draw, serving
from lenet5.checkpoint import load_model, normalization
from lenet5.cli import main
from lenet5.data import normalize
from lenet5.export import WEB_MODEL, WEB_PAGE
from lenet5.images import ImageError, open_image, prepare
from lenet5.web.app import create_app
from lenet5.weights import card, shipped
from people import render, write_number

ONE = [[(0.5, 0.15), (0.5, 0.85)]]
SEVEN = [[(0.3, 0.2), (0.7, 0.2)], [(0.7, 0.2), (0.45, 0.85)]]
NUMBER = [[(0.25, 0.2), (0.25, 0.8)], [(0.5, 0.2), (0.65, 0.2)], [(0.65, 0.2), (0.55, 0.8)]]  # 17


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`lenet5 export --format web` of the shipped weights: the folder."""
    out = tmp_path_factory.mktemp("page") / "lenet5-web"
    assert main(["export", str(shipped()), "--format", "web", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def live():
    with serving(create_app(shipped())) as url:
        yield url


@contextlib.contextmanager
def opened(browser, url):
    """A page at `url`, its model line filled in; yields (page, every URL it requested)."""
    page = browser.new_page(viewport={"width": 900, "height": 700})
    page.set_default_timeout(20_000)
    requested = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(url)
    page.wait_for_function("document.querySelector('#model').textContent.includes(' \u00b7 ')")
    try:
        yield page, requested
    finally:
        page.close()


# What the page's reader makes of the pad's pixels right now, as app.js reads them in the page.
READ_PAD = """(number) => {
  const model = Lenet5Reader.loadModel(window.LENET5_MODEL);
  const c = document.querySelector('#pad');
  const gray = Lenet5Reader.toGray(c.getContext('2d').getImageData(0, 0, c.width, c.height).data,
                                   c.width, c.height);
  return number ? Lenet5Reader.readNumber(model, gray, 'drawing.png')
                : Lenet5Reader.readDigit(model, gray, 'drawing.png');
}"""
PAD_PNG = "() => document.querySelector('#pad').toDataURL('image/png')"


def shown(page):
    return page.evaluate("""() => ({digit: document.querySelector('#digit').textContent,
        number: document.querySelector('#number').textContent,
        boxes: [...document.querySelectorAll('#boxes .box')].map((b) => b.style.cssText),
        why: [...document.querySelectorAll('#why-maps span')].map((s) => s.textContent.split(':')[0]),
        status: document.querySelector('#status').textContent})""")


def test_the_folder_holds_the_served_page_and_the_weights_under_500_kb(exported, live, browser):
    files = sorted(p.relative_to(exported).as_posix() for p in exported.rglob("*") if p.is_file())
    assert files == sorted([*WEB_PAGE, WEB_MODEL])
    assert sum((exported / f).stat().st_size for f in files) < 500_000
    # the same page, not a copy of it: every file but the model is the served one, byte for byte
    for f in WEB_PAGE:
        url = f"{live}/{'' if f == 'index.html' else f}"
        assert (exported / f).read_bytes() == httpx.get(url, timeout=10).content, f
    assert "window.LENET5_MODEL = null" in httpx.get(f"{live}/static/model.js", timeout=10).text

    model, _ = load_model(shipped())
    with opened(browser, (exported / "index.html").as_uri()) as (page, _):
        spec = page.evaluate("""() => { const m = window.LENET5_MODEL;
            return {name: m.name, accuracy: m.test_accuracy, mean: m.mean, std: m.std, layout: m.layout,
                    numbers: Lenet5Reader.loadModel(m).tensors['fc3.bias'].length}; }""")
        assert [name for name, _ in spec["layout"]] == list(model.state_dict())
        assert [shape for _, shape in spec["layout"]] == [list(t.shape) for t in model.state_dict().values()]
        assert (spec["name"], spec["accuracy"]) == (card()["name"], card()["test_accuracy"])
        assert (spec["mean"], spec["std"]) == (0.1307, 0.3081) and spec["numbers"] == 10
        line = page.inner_text("#model")
        assert f"{card()['name']} \u00b7 {100 * card()['test_accuracy']:.2f} %" in line and "no server" in line
        assert not page.locator("footer").is_visible()  # its links need a server


def test_the_page_from_disk_reads_as_the_served_page_and_asks_nothing_outside(exported, live, browser):
    folder = exported.as_uri() + "/"
    with opened(browser, f"{live}/") as (served, _), \
            opened(browser, exported.as_uri() + "/index.html") as (static, requested):
        assert served.locator("footer").is_visible()
        for mode, drawings in (("digit", [ONE, SEVEN]), ("number", [NUMBER])):
            for page in (served, static):
                page.check(f"input[name=mode][value={mode}]")
            for strokes in drawings:
                for page in (served, static):
                    page.click("#clear")
                    draw(page, strokes)
                png = static.evaluate(PAD_PNG)
                assert served.evaluate(PAD_PNG) == png  # the same pixels on both pads
                # what the served page sent, read by the server; what the static page read itself
                endpoint = "number" if mode == "number" else "predict"
                want = httpx.post(f"{live}/api/{endpoint}", timeout=30, files={
                    "file": ("drawing.png", base64.b64decode(png.split(",", 1)[1]), "image/png")}).json()
                got = static.evaluate(READ_PAD, mode == "number")
                if mode == "number":
                    assert got["number"] == want["number"] and len(want["number"]) == 2
                    assert [d["box"] for d in got["digits"]] == [d["box"] for d in want["digits"]]
                    assert [d["digit"] for d in got["digits"]] == [d["digit"] for d in want["digits"]]
                    for g, w in zip(got["digits"], want["digits"]):
                        assert g["probability"] == pytest.approx(w["probability"], abs=1e-3)
                    expect = f"document.querySelector('#number').textContent === '{want['number']}'"
                else:
                    assert got["digit"] == want["digit"] and got["image"] == want["image"]
                    assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-3)
                    expect = f"document.querySelector('#digit').textContent === '{want['digit']}'"
                # and both pages show it, the same way (the same boxes over the pad)
                for page in (served, static):
                    page.wait_for_selector("body:not([data-reading])")  # the last reading is shown
                    page.wait_for_function(expect)
                    page.wait_for_function("document.querySelectorAll('#boxes .box').length === "
                                           f"{len(want.get('digits', []))}")
                    if mode == "digit":  # and the why view of the stroke's end, in the page's own script
                        page.wait_for_selector("#why:not(.stale):not(.none)")
                assert shown(static) == shown(served) and shown(static)["status"] == ""
        # uploads are read in the page too; a file that is no picture is one line, as the server's
        static.check("input[name=mode][value=digit]")
        static.set_input_files("#upload", files=[{"name": "seven.png", "mimeType": "image/png",
                                                  "buffer": _paper_seven()}])
        static.wait_for_function("document.querySelector('#digit').textContent === '7'")
        static.set_input_files("#upload", files=[{"name": "note.txt", "mimeType": "text/plain", "buffer": b"hi"}])
        static.wait_for_selector("#status.error")
        assert static.inner_text("#status").startswith("note.txt: not an image file lenet5 reads")
        assert static.inner_text("#digit") == "?"
    assert requested and all(url.startswith(folder) for url in requested), requested


def test_the_pages_why_view_equals_pythons(exported, browser, mnist):
    """reader.js's integrated gradients (its own backward pass) against explain.py's (torch's
    autograd), map for map, on test digits read right and wrong."""
    reader = lenet5.load()
    cases, want = [], []
    for i in (0, 8, 247):
        why = reader.explain(mnist.test_images[i])
        cases.append({"px": mnist.test_images[i].flatten().tolist(), "digits": [m.digit for m in why.maps]})
        want.append(why)
    with opened(browser, exported.as_uri() + "/index.html") as (page, _):
        got = page.evaluate("""(cases) => {
            const model = Lenet5Reader.loadModel(window.LENET5_MODEL);
            return cases.map(({px, digits}) => Lenet5Reader.explain(model, Uint8Array.from(px), digits)); }""",
                            cases)
    for g, w in zip(got, want, strict=True):
        assert g["method"] == w.to_dict()["method"]
        assert [d["digit"] for d in g["digits"]] == [m.digit for m in w.maps]
        for d, m in zip(g["digits"], w.maps, strict=True):
            assert np.abs(np.array(d["map"]) - m.pixels).max() < 1e-5
            assert (d["logit"], d["blank"]) == pytest.approx((m.logit, m.blank), abs=1e-4)


def _paper_seven() -> bytes:
    """A 7 written with a pen on a photo-sized sheet, as a PNG."""
    img = Image.new("RGB", (400, 300), (245, 240, 230))
    ImageDraw.Draw(img).line([(150, 60), (260, 60), (190, 250)], fill=(20, 20, 90), width=14)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_the_page_forward_pass_equals_pytorch_on_the_10000_test_images(exported, browser, mnist):
    model, obj = load_model(shipped())
    images = mnist.test_images
    with torch.no_grad():
        want = model(normalize(images, *normalization(obj))).numpy()
    got = []
    with opened(browser, exported.as_uri() + "/index.html") as (page, _):
        for start in range(0, len(images), 2500):
            batch = images[start:start + 2500].numpy()
            got.append(page.evaluate("""(b64) => {
                const model = window.__model || (window.__model = Lenet5Reader.loadModel(window.LENET5_MODEL));
                const px = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                const out = [];
                for (let i = 0; i < px.length; i += 784) out.push(...Lenet5Reader.logits(model, px.subarray(i, i + 784)));
                return out; }""", base64.b64encode(batch.tobytes()).decode()))
    got = np.concatenate([np.array(g).reshape(-1, 10) for g in got])
    assert got.shape == (10_000, 10)
    assert (got.argmax(1) == want.argmax(1)).all()
    assert np.abs(got - want).max() < 1e-4


def _pictures(mnist):
    """(name, picture bytes) of a few dozen kinds: photographed MNIST digits, pen drawings from
    hairline to marker on sheets small and large, light ink on dark, a noisy one, blank and a speck."""
    rng = np.random.default_rng(7)
    for i in range(14):
        yield f"photo{i}.jpg", render(mnist.test_images[i].numpy(), rng, "PNG" if i % 3 == 0 else "JPEG",
                                      frame=i % 5 == 0)
    strokes = [[(0.5, 0.1), (0.5, 0.9)], [(0.2, 0.2), (0.8, 0.2), (0.4, 0.9)],
               [(0.3, 0.3), (0.5, 0.1), (0.7, 0.3), (0.3, 0.9), (0.75, 0.9)]]
    for (w, h), pen in [((280, 280), 22), ((280, 280), 1), ((600, 400), 2), ((600, 400), 9),
                        ((60, 60), 3), ((1500, 1100), 4), ((1500, 1100), 40), ((90, 200), 5)]:
        for k, line in enumerate(strokes):
            if (w + pen + k) % 2 and k:  # not every pair: a few dozen in all
                continue
            img = Image.new("L", (w, h), 255)
            ImageDraw.Draw(img).line([(x * w, y * h) for x, y in line], fill=0, width=pen)
            yield f"pen{pen}-{w}x{h}-{k}.png", _png(img)
    light = Image.new("L", (200, 200), 10)
    ImageDraw.Draw(light).line([(60, 40), (140, 40), (90, 170)], fill=235, width=12)
    yield "light.png", _png(light)
    noisy = np.array(Image.new("L", (240, 240), 230))
    noisy[rng.random(noisy.shape) < 0.04] = 0
    noisy = Image.fromarray(noisy)
    ImageDraw.Draw(noisy).line([(120, 30), (120, 210)], fill=20, width=16)
    yield "noisy.png", _png(noisy)
    yield "blank.png", _png(Image.new("L", (100, 100), 250))
    speck = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(speck).point([(150, 150), (151, 150)], fill=0)
    yield "speck.png", _png(speck)


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _prepared_both_ways(exported, browser, pictures):
    """(names, Python's 28x28 inputs, the page's) as hex strings, or 'error: ' and the message."""
    cases, want = [], []
    for name, data in pictures:
        gray = open_image(data, name)  # decoded, shrunk, upright and gray, as the server has it
        try:
            want.append(prepare(gray, name).numpy().tobytes().hex())
        except ImageError as e:
            want.append(f"error: {e}")
        cases.append({"name": name, "w": gray.width, "h": gray.height,
                      "px": base64.b64encode(np.asarray(gray).tobytes()).decode()})
    with opened(browser, exported.as_uri() + "/index.html") as (page, _):
        got = page.evaluate("""(cases) => cases.map(({name, w, h, px}) => {
            const gray = {w, h, px: Uint8Array.from(atob(px), (c) => c.charCodeAt(0))};
            try {
              return Array.from(Lenet5Reader.prepare(gray, name), (v) => v.toString(16).padStart(2, '0')).join('');
            } catch (err) {
              if (!(err instanceof Lenet5Reader.ImageError)) throw err;
              return 'error: ' + err.message;
            } })""", cases)
    return [c["name"] for c in cases], want, got


def test_the_page_prepares_pictures_bit_for_bit_as_python(exported, browser, mnist):
    names, want, got = _prepared_both_ways(exported, browser, _pictures(mnist))
    assert len(names) >= 30 and sum(w.startswith("error") for w in want) == 2  # blank, speck
    assert [n for n, g, w in zip(names, got, want) if g != w] == []


def test_the_page_reads_photographed_numbers_as_python(exported, browser, mnist):
    """Numbers written with MNIST test digits and photographed, each way numbers.py handles: the
    page's readNumber finds the same digits in the same boxes as numbers.read_number."""
    from lenet5.numbers import read_number

    reader = lenet5.load()
    rng = np.random.default_rng(3)
    cases, want = [], []
    for way in ({}, {"touching": True}, {"strokes": True}, {"heights": True}):
        for _ in range(2):
            idx = rng.choice(2000, int(rng.integers(2, 6)), replace=False)
            data, _ = write_number([mnist.test_images[i].numpy() for i in idx], rng, **way)
            img = open_image(data, "number.jpg")
            try:
                n = read_number(img, reader, "number.jpg")
                want.append({"number": n.number, "boxes": [list(d.box) for d in n.digits],
                             "p": [d.probabilities for d in n.digits]})
            except ImageError as e:
                want.append({"error": str(e)})
            cases.append({"w": img.width, "h": img.height, "full": list(img.info["full_size"]),
                          "px": base64.b64encode(np.asarray(img).tobytes()).decode()})
    with opened(browser, exported.as_uri() + "/index.html") as (page, _):
        got = page.evaluate("""(cases) => {
            const model = Lenet5Reader.loadModel(window.LENET5_MODEL);
            return cases.map(({w, h, full, px}) => {
              const gray = {w, h, px: Uint8Array.from(atob(px), (c) => c.charCodeAt(0))};
              try {
                const n = Lenet5Reader.readNumber(model, gray, "number.jpg", full);
                return {number: n.number, boxes: n.digits.map((d) => d.box), p: n.digits.map((d) => d.probabilities)};
              } catch (err) {
                if (!(err instanceof Lenet5Reader.ImageError)) throw err;
                return {error: err.message};
              } }); }""", cases)
    assert sum("number" in w for w in want) >= 6
    for g, w in zip(got, want):
        assert {k: g.get(k) for k in ("number", "boxes", "error")} == \
            {k: w.get(k) for k in ("number", "boxes", "error")}
        if "p" in w:
            assert np.allclose(g["p"], w["p"], atol=1e-3)


@pytest.fixture
def static_host(exported):
    """The folder on a plain static file server (python's http.server) in a thread; its URL."""
    handler = functools.partial(_QuietHandler, directory=str(exported))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as srv:
        thread = threading.Thread(target=srv.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{srv.server_address[1]}"
        srv.shutdown()
        thread.join(timeout=10)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the test's output is for failures
        pass


def test_the_folder_on_a_static_host_reads_a_drawing(static_host, browser):
    with opened(browser, f"{static_host}/") as (page, requested):
        draw(page, ONE)
        page.wait_for_function("document.querySelector('#digit').textContent === '1'")
        assert page.inner_text("#status") == "" and "no server" in page.inner_text("#model")
    assert all(url.startswith(static_host + "/") for url in requested), requested


def test_export_refuses_a_file_or_a_folder_of_other_things_in_one_line(exported, tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "photo.jpg").write_bytes(b"mine")
    for out, why in ((a_file, "is a file"), (folder, "is a folder with other files in it")):
        assert main(["export", str(shipped()), "--format", "web", "--out", str(out)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"lenet5: error: --out {out}: {why}") and len(err.splitlines()) == 1, err
    assert a_file.read_text() == "mine" and [p.name for p in folder.iterdir()] == ["photo.jpg"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left

    assert main(["export", str(shipped()), "--format", "web", "--verify", "--out", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err.strip()
    assert "--verify: not available for --format web" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "w").exists()

    # an earlier web export is replaced, and an empty folder is filled; the sizes are said
    before = (exported / WEB_MODEL).stat().st_mtime_ns
    for out in (exported, tmp_path / "empty"):
        out.mkdir(exist_ok=True)
        assert main(["export", str(shipped()), "--format", "web", "--out", str(out)]) == 0
        said = capsys.readouterr().out
        assert f"wrote {out}/ (6 files, " in said and " KiB)" in said
    assert (exported / WEB_MODEL).stat().st_mtime_ns >= before
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]


def test_default_folder_sits_beside_the_checkpoint(small_run, capsys):
    assert main(["export", str(small_run / "best.pt"), "--format", "web"]) == 0
    out = small_run / "best-web"
    assert (out / "index.html").is_file() and (out / WEB_MODEL).is_file()
    assert "small/best.pt" in (out / WEB_MODEL).read_text()[:400]


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_killed_export_leaves_the_old_folder_or_the_new_one(small_run, tmp_path, when):
    """`kill -9` just before the new folder is moved into place, or just after: a whole page, the
    old one or the new one; the next export sweeps what the killed one left."""
    out = tmp_path / "page"
    assert main(["export", str(small_run / "best.pt"), "--format", "web", "--out", str(out)]) == 0
    old = (out / WEB_MODEL).read_text()
    env = {**os.environ, "LENET5_KILL_AT": f"{when}:page", "PYTHONPATH": str(Path(lenet5.__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-m", "lenet5", "export", str(shipped()), "--format", "web",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted([*WEB_PAGE, WEB_MODEL])
    assert ((out / WEB_MODEL).read_text() == old) == (when == "before")
    assert main(["export", str(shipped()), "--format", "web", "--out", str(out)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["page"]  # nothing left beside it


def test_the_pages_reader_uses_pythons_constants():
    """reader.js repeats images.py's and numbers.py's constants; a change to one side alone would
    make the page read differently from the server, so every one is held equal here."""
    import json
    import re

    from lenet5 import explain, images, numbers
    from lenet5.web import STATIC

    found = {}
    for declaration in re.findall(r"^\s*const ([A-Z][^;]*);", (STATIC / "reader.js").read_text(), re.M):
        for name, value in (p.split(" = ", 1) for p in re.split(r",\s*(?=[A-Z_]+ = )", declaration)):
            with contextlib.suppress(ValueError):  # numbers and lists of numbers: JSON
                found[name] = json.loads(value.split("//")[0])
    shared = {**{k: getattr(images, k) for k in ("WORK_SIZE", "SHORT_SIDE", "MIN_CONTRAST", "MIN_SIZE", "STROKE")},
              **{k: getattr(numbers, k) for k in (
                  "ONE_DIGIT", "WIDEST", "NARROWEST", "OVERLAP", "NEAR", "SPECK", "THIN", "DRIFT",
                  "SPACING", "MAX_CUTS", "MAX_PARTS", "PER_GAP", "PER_CUT", "SHORT", "MIN_HEIGHT", "NOT_DIGIT", "IN_A_NUMBER",
                  "MAX_WORK", "ASPECTS", "LOG_SHARE")},
              "STEPS": explain.STEPS}
    assert {name: found.get(name) for name in shared} == shared

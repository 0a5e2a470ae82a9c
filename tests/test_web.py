"""The web demo: the API through FastAPI's test client, a live server under concurrent clients, and
the page in a real browser (Chromium driven by Playwright) drawing a digit and reading the answer."""

import io
import json
import shutil
import math
import os
import queue
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from conftest import draw, serving

import lenet5
from lenet5.cli import main
from lenet5.images import load_digit
from lenet5.web.app import create_app, describe
from lenet5.weights import card, shipped

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, small_run):
    """A briefly trained checkpoint (about 97 % on MNIST): reads a clear digit. Its run folder
    holds test_metrics.json, written by the run's finish as `lenet5 train` writes it."""
    out = tmp_path_factory.mktemp("web") / "r"
    shutil.copytree(small_run, out)
    return out / "best.pt"


@pytest.fixture(scope="module")
def live(ckpt):
    """The app under uvicorn on 127.0.0.1 (a free port), in a thread; its URL."""
    with serving(create_app(ckpt)) as url:
        yield url


@pytest.fixture(scope="module")
def client(ckpt):
    with TestClient(create_app(ckpt, max_upload=300_000)) as c:
        yield c


def png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.numpy() if isinstance(array, torch.Tensor) else array).save(buf, "PNG")
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels: a header and one empty data chunk, a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def paper_digit(image: torch.Tensor, scale: int = 6) -> bytes:
    """An MNIST digit as a person's picture: dark ink on white paper, larger, off-centre."""
    big = Image.fromarray(255 - image.numpy()).resize((28 * scale, 28 * scale), Image.BILINEAR)
    paper = Image.new("L", (28 * scale + 90, 28 * scale + 40), 255)
    paper.paste(big, (70, 10))
    buf = io.BytesIO()
    paper.convert("RGB").save(buf, "JPEG", quality=92)
    return buf.getvalue()


def test_health_reports_the_checkpoint(client, ckpt):
    body = client.get("/api/health").json()
    assert body["status"] == "ok" and body["checkpoint"] == "r/best.pt"
    assert str(ckpt.parent.parent) not in json.dumps(body)  # no path on the server is shown
    assert (body["mean"], body["std"]) == (0.1307, 0.3081) and body["max_upload_bytes"] == 300_000
    accuracy = json.loads((ckpt.parent / "test_metrics.json").read_text())["accuracy"]
    assert body["name"] == "r/best.pt" and body["test_accuracy"] == accuracy > 0.9


def test_health_names_the_shipped_weights_and_their_card_accuracy():
    with TestClient(create_app(shipped())) as c:
        body = c.get("/api/health").json()
    assert (body["name"], body["test_accuracy"]) == (card()["name"], card()["test_accuracy"])
    assert body["checkpoint"] == shipped().name


def test_test_accuracy_is_given_only_where_the_run_measured_that_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    best, last, metrics = run / "best.pt", run / "last.pt", run / "test_metrics.json"
    for f in (best, last):
        f.write_bytes(b"weights")
    metrics.write_text(json.dumps({"accuracy": 0.987}))
    assert describe(best) == ("run/best.pt", 0.987)
    assert describe(last) == ("run/last.pt", None)  # the metrics score best.pt, not this file
    os.utime(best, (metrics.stat().st_mtime + 60,) * 2)  # a resumed run's newer, untested best.pt
    assert describe(best) == ("run/best.pt", None)
    for text in ("{not json", '{"loss": 0.1}', '{"accuracy": NaN}', '{"accuracy": "high"}'):
        metrics.write_text(text)
        os.utime(metrics, (best.stat().st_mtime + 60,) * 2)
        assert describe(best) == ("run/best.pt", None), text
    metrics.unlink()
    assert describe(best) == ("run/best.pt", None)


def test_favicon_is_an_icon(client):
    r = client.get("/favicon.ico")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/")
    icon = Image.open(io.BytesIO(r.content))
    assert icon.format == "ICO" and (32, 32) in icon.info["sizes"]
    assert '<link rel="icon" href="favicon.ico"' in client.get("/").text  # relative: works from disk too


@pytest.mark.parametrize("how", ["multipart", "raw"])
def test_predict_matches_the_file_preprocessing_and_the_model(client, ckpt, mnist, how):
    reader = lenet5.load(ckpt)
    for i in range(8):
        data = paper_digit(mnist.test_images[i])
        if how == "multipart":
            r = client.post("/api/predict", files={"file": (f"d{i}.jpg", data, "image/jpeg")})
        else:
            r = client.post("/api/predict", content=data, headers={"content-type": "image/jpeg"})
        assert r.status_code == 200, r.text
        answer = r.json()
        seen = load_digit(data, "d.jpg")  # what `lenet5 predict FILE` feeds the model
        probs = reader.probabilities(seen.unsqueeze(0))[0]  # calibrated, as every door answers
        assert answer["image"] == seen.tolist()
        assert answer["digit"] == int(probs.argmax())
        assert answer["probabilities"] == pytest.approx(probs.tolist(), abs=1e-6)
        assert sum(answer["probabilities"]) == pytest.approx(1, abs=1e-5)
        assert answer["probability"] == max(answer["probabilities"])
    assert answer["digit"] == int(mnist.test_labels[7])  # and it reads a clear digit right


def test_predict_explains_on_request_what_the_reader_explains(client, ckpt, mnist):
    """?explain=true: the why view of the digit read and its two runners-up, the maps as the
    reader's `explain` draws them for the input the server saw, adding up to each logit's rise."""
    import numpy as np

    data = paper_digit(mnist.test_images[0])
    plain = client.post("/api/predict", files={"file": ("d.jpg", data, "image/jpeg")}).json()
    assert "explain" not in plain  # asked for only: it costs milliseconds, reading microseconds
    answer = client.post("/api/predict?explain=true", files={"file": ("d.jpg", data, "image/jpeg")}).json()
    assert {k: v for k, v in answer.items() if k != "explain"} == plain
    why = answer["explain"]
    want = lenet5.load(ckpt).explain(np.array(answer["image"], np.uint8))
    assert why["method"].startswith("integrated gradients from the blank picture")
    assert [d["digit"] for d in why["digits"]] == [m.digit for m in want.maps]
    assert why["digits"][0]["digit"] == answer["digit"] == 7
    for got, m in zip(why["digits"], want.maps, strict=True):
        assert np.allclose(got["map"], m.pixels, atol=1e-4)
        assert got["probability"] == answer["probabilities"][m.digit]
        assert sum(map(sum, got["map"])) == pytest.approx(got["logit"] - got["blank"], rel=0.1, abs=0.1)
    blank = client.post("/api/predict?explain=true", files={"file": ("w.png", _blank_png(), "image/png")})
    assert blank.json()["reason"] == "no ink" and blank.json()["explain"]["digits"] == []
    params = client.get("/openapi.json").json()["paths"]["/api/predict"]["post"]["parameters"]
    assert [p["name"] for p in params] == ["explain"]


def _blank_png():
    return png(torch.full((40, 40), 255, dtype=torch.uint8))


def test_a_blank_picture_is_answered_no_digit_not_refused(client):
    r = client.post("/api/predict", files={"file": ("w.png", _blank_png(), "image/png")})
    assert r.status_code == 200, r.text
    assert r.json()["is_digit"] is False and r.json()["reason"] == "no ink"


@pytest.mark.parametrize("request_kw, status, reason", [
    (dict(content=b""), 400, "empty"),
    (dict(files={"file": ("e.png", b"", "image/png")}), 400, "e.png: empty"),
    (dict(files={"other": ("x.png", b"123", "image/png")}), 400, "no file in the field `file`"),
    (dict(data={"file": "just text"}, files={"x": ("x", b"1")}), 400, "no file in the field `file`"),
    (dict(content=b"hello, not an image"), 422, "not an image file lenet5 reads"),
    (dict(files={"file": ("t.png", png(torch.zeros(28, 28, dtype=torch.uint8))[:40], "image/png")}),
     422, "t.png: not an image file"),
    (dict(content=b"x" * 300_001), 413, "larger than 300,000 bytes"),
    (dict(content=iter([b"x" * 200_000, b"x" * 200_000])), 413, "larger than 300,000 bytes"),  # chunked
    (dict(files={"file": ("big.png", b"\0" * 300_000, "image/png")}), 413, "larger than"),
    (dict(content=png_header(5000, 5000)), 413, "5000x5000 pixels is more than"),
    (dict(files={"file": ("bomb.png", png_header(100_000, 100_000), "image/png")}), 413, "bomb.png"),
])
def test_bad_requests_get_a_4xx_with_a_reason(client, request_kw, status, reason):
    r = client.post("/api/predict", **request_kw)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and reason in detail, detail


def test_a_parameter_that_is_no_value_it_takes_is_one_line(client):
    r = client.post("/api/predict?explain=maybe", files={"file": ("d.png", png(torch.zeros(28, 28, dtype=torch.uint8)))})
    assert r.status_code == 422 and r.json() == {
        "detail": "query explain: Input should be a valid boolean, unable to interpret input"}


def test_the_model_is_loaded_once(ckpt, monkeypatch, mnist):
    import lenet5.checkpoint

    calls = []
    real = lenet5.checkpoint.load_model
    monkeypatch.setattr(lenet5.checkpoint, "load_model", lambda *a, **k: calls.append(a) or real(*a, **k))
    with TestClient(create_app(ckpt)) as c:
        for i in range(3):
            assert c.post("/api/predict", content=png(mnist.test_images[i])).status_code == 200
    assert len(calls) == 1


def test_page_and_api_docs_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="pad"' in page.text and 'id="upload"' in page.text
    assert client.get("/static/app.js").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    doc = paths["/api/predict"]["post"]
    assert {"multipart/form-data", "image/*"} <= set(doc["requestBody"]["content"])
    assert {"200", "400", "413", "422"} <= set(doc["responses"]) and "/api/health" in paths
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/static-offline-docs/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()  # works offline
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200


def test_concurrent_clients_get_the_same_answers(live, mnist):
    bodies = [png(mnist.test_images[i]) for i in range(12)]
    with httpx.Client(timeout=30) as c:
        expected = [c.post(f"{live}/api/predict", content=b).json()["probabilities"] for b in bodies]

    def client_run(k):
        with httpx.Client(timeout=30) as c:
            return [(i, c.post(f"{live}/api/predict", content=bodies[i]))
                    for i in ((k + 5 * j) % 12 for j in range(6))]

    with ThreadPoolExecutor(8) as pool:
        results = [r for batch in pool.map(client_run, range(8)) for r in batch]
    assert len(results) == 8 * 6
    for i, r in results:
        assert r.status_code == 200 and r.json()["probabilities"] == expected[i]


def test_serve_refuses_a_busy_port_in_one_line(ckpt, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main(["serve", str(ckpt), "--port", str(port), "--device", "cpu"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lenet5: error:") and "cannot listen there" in err and len(err.splitlines()) == 1


def test_serve_refuses_a_port_out_of_range(ckpt, capsys):
    assert main(["serve", str(ckpt), "--port", "99999", "--device", "cpu"]) == 1
    assert capsys.readouterr().err.strip() == (
        "lenet5: error: --port 99999: a TCP port is 1 to 65535 (0 picks a free one)")


def children(pid: int) -> set[int]:
    """A process's children (Linux /proc); empty where there is no /proc."""
    tasks = Path(f"/proc/{pid}/task")
    return {int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()} if tasks.exists() else set()


def test_serve_command_runs_and_stops_on_ctrl_c(ckpt, mnist):
    """`python -m lenet5 serve --port 0`: starts its picture readers, says where it listens,
    answers, and Ctrl-C ends it and its readers."""
    proc = subprocess.Popen([sys.executable, "-m", "lenet5", "serve", str(ckpt), "--port", "0",
                             "--device", "cpu", "--readers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
        first = lines.get(timeout=60)  # printed once the port is bound, the model and readers loaded
        url = re.search(r"at (http://127\.0\.0\.1:\d+/)", first).group(1)
        assert httpx.get(f"{url}api/health", timeout=10).json()["checkpoint"] == "r/best.pt"
        readers = children(proc.pid)
        assert len(readers) == 2 or not Path("/proc").exists()
        r = httpx.post(f"{url}api/predict", content=png(mnist.test_images[0]), timeout=30)
        assert r.status_code == 200 and r.json()["digit"] == int(mnist.test_labels[0])
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "Traceback" not in err and "lenet5: interrupted" in err
    assert not any(Path(f"/proc/{pid}").exists() for pid in readers)  # ended and reaped by the server


def test_drawing_on_the_page_shows_a_prediction(live, browser, mnist):
    page = browser.new_page(viewport={"width": 900, "height": 700})
    page.set_default_timeout(20_000)
    page.goto(live)
    assert page.inner_text("#digit") == "?"
    box = page.locator("#pad").bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + 0.15 * box["height"])
    page.mouse.down()
    page.mouse.move(x, box["y"] + 0.85 * box["height"], steps=15)  # a vertical stroke: a one
    page.mouse.up()
    page.wait_for_selector("body[data-state=answered]:not([data-reading])")
    page.wait_for_function("document.querySelector('#status').textContent === ''")
    assert page.inner_text("#digit") == "1"
    # the bars as rendered, as fractions of their tracks: they add up to one, the longest is the 1
    widths = page.eval_on_selector_all(
        "#bars .fill", "els => els.map(e => e.getBoundingClientRect().width / e.parentElement.getBoundingClientRect().width)")
    assert len(widths) == 10 and sum(widths) == pytest.approx(1, abs=0.02) and max(widths) == widths[1]
    ink = page.evaluate("() => { const c = document.querySelector('#seen').getContext('2d');"
                        " return c.getImageData(0, 0, 28, 28).data.reduce((a, b) => a + b, 0) - 28*28*255; }")
    assert ink > 0  # the 28x28 input is drawn, not blank
    # at the stroke's end, the why view: the 1's map and the runners-up', red where the ink spoke for
    page.wait_for_selector("#why:not(.none):not(.stale)")
    labels = page.locator("#why-maps span").all_inner_texts()
    assert len(labels) == 3 and labels[0].startswith("read 1: ") and all(t.startswith("or ") for t in labels[1:])
    red = page.evaluate("() => { const d = document.querySelector('#why-maps canvas').getContext('2d')"
                        ".getImageData(0, 0, 28, 28).data; let n = 0;"
                        " for (let i = 0; i < d.length; i += 4) n += d[i] > 200 && d[i + 2] < 120; return n; }")
    assert red > 5

    page.click("#clear")
    assert page.inner_text("#digit") == "?"
    data = paper_digit(mnist.test_images[0])
    page.set_input_files("#upload", files=[{"name": "seven.jpg", "mimeType": "image/jpeg", "buffer": data}])
    page.wait_for_function("document.querySelector('#digit').textContent === '7'")
    page.set_input_files("#upload", files=[{"name": "note.txt", "mimeType": "text/plain", "buffer": b"hi"}])
    page.wait_for_selector("#status.error")
    assert "note.txt: not an image file" in page.inner_text("#status")
    page.close()


def test_api_docs_render_offline(live, browser):
    page = browser.new_page()
    page.goto(live + "/docs")
    # Swagger UI built the page from /openapi.json: the operation is listed
    page.wait_for_selector(".opblock-summary-path[data-path='/api/predict']", timeout=15_000)
    page.close()


def touch(context, page, points):
    """One finger along `points` (page coordinates), never lifted until the end, as a phone sends
    it: Chromium's own touch events, through its DevTools protocol."""
    cdp = context.new_cdp_session(page)
    for i, (x, y) in enumerate(points):
        kind = "touchStart" if i == 0 else "touchMove"
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def test_drawing_with_a_finger(live, browser):
    context = browser.new_context(has_touch=True, is_mobile=True, viewport={"width": 400, "height": 800})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(live)
    box = page.locator("#pad").bounding_box()
    touch(context, page, [(box["x"] + box["width"] * (0.5 + 0.25 * math.sin(a * math.pi / 12)),
                           box["y"] + box["height"] * (0.5 - 0.33 * math.cos(a * math.pi / 12)))
                          for a in range(25)])  # a zero
    page.wait_for_function("document.querySelector('#digit').textContent === '0'")
    assert page.evaluate("window.scrollY") == 0  # the finger drew; it did not scroll the page
    context.close()


@pytest.mark.parametrize("width, height", [(1000, 800), (390, 844)], ids=["desktop", "phone"])
def test_page_layout_empty_state_and_model_line(live, browser, tmp_path, width, height):
    """At a desktop's and a phone's width: which model answers and how well it tested, what the page
    says before the first stroke and after it, and where the pad, the answer and the 28x28 view
    sit. Screenshots of both states are left in tmp_path."""
    phone = width < 640
    context = browser.new_context(viewport={"width": width, "height": height}, has_touch=phone,
                                  is_mobile=phone)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(live)
    health = httpx.get(f"{live}/api/health", timeout=10).json()
    page.wait_for_function("document.querySelector('#model').textContent.includes(' on the MNIST')")
    line = page.locator("#model")
    assert line.is_visible() and health["name"] == "r/best.pt"
    assert f"{health['name']} \u00b7 {100 * health['test_accuracy']:.2f} %" in line.inner_text()

    # Before the first stroke: the answer and the 28x28 view say what to do, no black square.
    assert page.locator("#hint").is_visible() and "Draw a digit" in page.inner_text("#hint")
    assert page.locator("#seen-empty").is_visible() and not page.locator("#seen").is_visible()
    page.screenshot(path=tmp_path / f"{width}px-empty.png", full_page=True)

    box = {s: page.locator(s).bounding_box() for s in ("#pad", ".answer", ".reading", ".seen-box")}
    pad, answer, reading, seen = box.values()
    pad_bottom = pad["y"] + pad["height"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing sticks out
    assert 0 <= pad["x"] and pad["x"] + pad["width"] <= width
    assert seen["y"] + seen["height"] <= height  # the 28x28 view is on the first screen
    assert seen["x"] >= reading["x"] + reading["width"] and seen["y"] < reading["y"] + reading["height"]
    if phone:
        assert pad["width"] >= 0.85 * width  # as wide as the screen allows, for a finger
        assert 0 < answer["y"] - pad_bottom <= 80  # right under the pad and its buttons
    else:
        assert answer["x"] >= pad["x"] + pad["width"] and answer["y"] < pad_bottom  # beside the pad

    # A stroke (a finger on the phone, the mouse on the desktop): the answer replaces the hints.
    x = pad["x"] + pad["width"] / 2
    stroke = [(x, pad["y"] + pad["height"] * (0.15 + 0.05 * i)) for i in range(15)]  # a one
    if phone:
        touch(context, page, stroke)
    else:
        page.mouse.move(*stroke[0])
        page.mouse.down()
        for p in stroke[1:]:
            page.mouse.move(*p)
        page.mouse.up()
    page.wait_for_selector("body[data-state=answered]:not([data-reading])")
    assert page.inner_text("#digit") == "1"
    assert not page.locator("#hint").is_visible() and not page.locator("#seen-empty").is_visible()
    assert page.locator("#seen").is_visible()
    page.screenshot(path=tmp_path / f"{width}px-answered.png", full_page=True)

    # The icon the page links is served as an image.
    icon = page.request.get(page.eval_on_selector("link[rel=icon]", "e => e.href"))
    assert icon.status == 200 and icon.headers["content-type"].startswith("image/")
    context.close()


def test_number_mode_reads_a_number_and_shows_its_boxes(live, browser):
    page = browser.new_page(viewport={"width": 900, "height": 700})
    page.set_default_timeout(20_000)
    page.goto(live)
    page.check("input[name=mode][value=number]")
    pad = page.locator("#pad").bounding_box()
    assert pad["width"] == pytest.approx(3 * pad["height"], rel=0.02) and pad["width"] > 600  # wide
    assert page.evaluate("[document.querySelector('#pad').width, document.querySelector('#pad').height]") == [840, 280]
    assert not page.locator("#bars").is_visible() and "number" in page.inner_text("#hint")

    # a 1 (a vertical stroke), then a 7 (a bar and a diagonal) well to its right
    draw(page, [[(0.25, 0.2), (0.25, 0.8)],
                [(0.5, 0.2), (0.65, 0.2)], [(0.65, 0.2), (0.55, 0.8)]])
    # the answer to the last stroke (a bar alone may read as a 7 too): two boxes, the 7's full height
    page.wait_for_function("document.querySelector('#number').textContent === '17' && "
                           "document.querySelectorAll('#boxes .box').length === 2 && "
                           "document.querySelectorAll('#boxes .box')[1].getBoundingClientRect().height > "
                           "0.5 * document.querySelector('#pad').getBoundingClientRect().height")
    assert page.inner_text("#status") == ""
    assert page.locator("#digits li .label").all_inner_texts() == ["1", "7"]
    assert all(re.fullmatch(r"[<>]?\d+\.\d %|not a digit \([<>]?\d+\.\d %\)", t) for t in page.locator("#digits li .pct").all_inner_texts())
    # one box per digit, over the pad, around the ink it stands for, left to right
    boxes = [b.bounding_box() for b in page.locator("#boxes .box").all()]
    assert page.locator("#boxes .box").all_inner_texts() == ["1", "7"]
    for b, (left, right) in zip(boxes, [(0.25, 0.25), (0.5, 0.65)]):
        assert pad["x"] < b["x"] <= pad["x"] + left * pad["width"]
        assert pad["x"] + right * pad["width"] <= b["x"] + b["width"] < pad["x"] + pad["width"]
        assert pad["y"] < b["y"] <= pad["y"] + 0.2 * pad["height"]
        assert pad["y"] + 0.8 * pad["height"] <= b["y"] + b["height"] < pad["y"] + pad["height"]
    assert boxes[0]["x"] + boxes[0]["width"] < boxes[1]["x"]

    # Clear empties pad, answer and boxes
    page.click("#clear")
    assert page.inner_text("#number") == "?" and page.locator("#boxes .box").count() == 0
    assert page.inner_text("#status") == "" and page.locator("#hint").is_visible()
    ink = page.evaluate("() => { const c = document.querySelector('#pad');"
                        " return c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some(v => v < 255); }")
    assert not ink

    # a blot far wider than tall cannot be split into digits: the server's reason, no answer
    draw(page, [[(0.2 + 0.02 * i, 0.4 if i % 2 else 0.6) for i in range(31)]])
    page.wait_for_function("document.querySelector('#status').textContent.includes('could not split')")
    assert page.locator("#status.error").is_visible()
    assert page.inner_text("#number") == "?" and page.locator("#boxes .box").count() == 0

    # back to digit mode: a square pad read by /api/predict, as before
    page.check("input[name=mode][value=digit]")
    pad = page.locator("#pad").bounding_box()
    assert pad["width"] == pytest.approx(pad["height"], rel=0.02)
    draw(page, [[(0.5, 0.15), (0.5, 0.85)]])
    page.wait_for_selector("body[data-state=answered]:not([data-reading])")
    assert page.inner_text("#digit") == "1" and page.locator("#bars").is_visible()
    assert not page.locator("#number").is_visible() and page.locator("#boxes .box").count() == 0
    assert page.inner_text("#status") == ""  # the switch cleared the number mode's error
    page.close()

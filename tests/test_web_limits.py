"""The web server against slow and hostile clients: request deadlines, the connection cap, the pixel
limit and budget, /api/health answering while images decode, and a mixed hostile load with no 5xx.

Servers run under uvicorn on 127.0.0.1 in a thread, with short deadlines so each test takes seconds."""

import contextlib
import io
import os
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

import lenet5.images
from lenet5.cli import main
from lenet5.errors import Lenet5Error
from lenet5.web.app import allowed_hosts, bind, UVICORN_TESTED, check_uvicorn, create_app, server
from lenet5.web.readers import Readers

from test_web import paper_digit, png, png_header


@pytest.fixture(scope="module")
def ckpt(small_run):
    return small_run / "best.pt"


@contextlib.contextmanager
def serving(app, **limits):
    """`app` under uvicorn on a free port with `limits` (server() keywords), in a thread; its URL."""
    sock = bind("127.0.0.1", 0)
    srv = server(app, log_level="critical", **limits)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        deadline = time.monotonic() + 30
        while not srv.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)  # polling a flag uvicorn sets once it serves
        yield url
    finally:
        srv.should_exit = True
        thread.join(timeout=15)
        sock.close()


def connect(url: str, send: bytes = b"") -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    s.sendall(send)
    return s


def read_until_closed(s: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the socket, and when that was; fails after limit_s."""
    start, data = time.monotonic(), b""
    s.settimeout(limit_s)
    try:
        while chunk := s.recv(4096):
            data += chunk
    except socket.timeout:
        pytest.fail(f"the server kept the connection open over {limit_s} s (got {data[:60]!r})")
    finally:
        s.close()
    return data, time.monotonic() - start


def health_ms(url: str) -> float:
    start = time.perf_counter()
    r = httpx.get(f"{url}/api/health", timeout=5)
    assert r.status_code == 200
    return (time.perf_counter() - start) * 1000


def png16(width: int, height: int) -> bytes:
    """A worst-case upload for its size: a 16-bit grayscale PNG (decoded at 2 bytes a pixel and up),
    a dark bar on light paper, so it compresses to a few KB."""
    a = np.full((height, width), 60000, np.uint16)
    a[height // 4: 3 * height // 4, width // 2 - width // 20: width // 2 + width // 20] = 2000
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


SLOW = {
    "silent": b"",
    "partial headers": b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Ag",
    "partial body": b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                    b"Content-Length: 5000\r\n\r\n\x89PNG",
}


def test_slow_clients_are_closed_within_the_deadlines_while_health_answers(ckpt):
    with serving(create_app(ckpt), header_timeout=1, body_timeout=1.5) as url:
        slow = [(kind, connect(url, data)) for kind, data in SLOW.items() for _ in range(8)]
        assert max(health_ms(url) for _ in range(5)) < 500  # 24 stalled sockets hold nothing up
        with ThreadPoolExecutor(len(slow)) as pool:
            closed = list(pool.map(lambda ks: (ks[0], *read_until_closed(ks[1], 5)), slow))
        for kind, data, seconds in closed:
            assert seconds < 3.5, (kind, seconds)  # the deadline (1 or 1.5 s) plus slack
            if kind == "silent":
                assert data == b""  # nothing asked, nothing answered: closed quietly
            else:
                assert data.startswith(b"HTTP/1.1 408 ") and b"longer than" in data, data
        assert health_ms(url) < 500


def test_health_answers_at_once_while_slow_clients_fill_every_connection(ckpt):
    """Every connection held by a client that sent its headers and part of a body, with deadlines
    far off: a new client still gets in, as the slowest of them is told 408 and closed."""
    with serving(create_app(ckpt, readers=0), max_connections=8, header_timeout=20, body_timeout=20) as url:
        slow = [connect(url, SLOW["partial body"]) for _ in range(8)]
        assert health_ms(url) < 1000
        data, seconds = read_until_closed(slow[0], 2)  # the first to stall is the first shed
        assert data.startswith(b"HTTP/1.1 408 ") and b"the server is full" in data, data
        rest = slow[1:]
        assert select.select(rest, [], [], 0)[0] == []  # the rest are left alone
        for s in rest:
            s.close()


def test_a_full_server_answers_503_rather_than_resetting(ckpt):
    """When every connection is busy with a request in the app (none stalled to shed), a new client
    is answered 503 and its request read to the end, so that it sees the answer, not a reset."""
    entered, release = threading.Semaphore(0), threading.Event()
    app = FastAPI()

    @app.get("/wait")
    def wait() -> dict:  # on a worker thread, until the test lets it go
        entered.release()
        release.wait(timeout=20)
        return {}

    with serving(app, max_connections=2) as url, ThreadPoolExecutor(2) as pool:
        try:
            busy = [pool.submit(httpx.get, f"{url}/wait", timeout=30) for _ in range(2)]
            for _ in busy:
                assert entered.acquire(timeout=10)
            start = time.monotonic()
            r = httpx.post(f"{url}/api/predict", content=b"\0" * 2_000_000, timeout=5)
            assert r.status_code == 503 and "too many connections" in r.json()["detail"]
            assert time.monotonic() - start < 1
        finally:
            release.set()
        assert [b.result().status_code for b in busy] == [200, 200]
        assert httpx.get(f"{url}/wait", timeout=5).status_code == 200  # room again


def test_a_2_mb_header_is_answered_431_and_a_malformed_request_400(ckpt):
    """Answered in full, though the server closes before the client has sent its whole request."""
    with serving(create_app(ckpt, readers=0)) as url:
        r = httpx.get(f"{url}/api/health", headers={"x-big": "a" * 2_000_000}, timeout=5)
        assert r.status_code == 431 and r.json()["detail"].startswith("request headers over 16 KiB")
        data, _ = read_until_closed(connect(url, b"GET / HTTP/1.1\r\n\r\n"), 2)
        assert data.startswith(b"HTTP/1.1 400 ") and data.endswith(
            b'{"detail": "not a valid HTTP/1.1 request: Missing mandatory Host: header"}'), data
        assert health_ms(url) < 500


@pytest.mark.parametrize("flag", ["--header-timeout", "--body-timeout", "--max-connections"])
def test_serve_refuses_limits_that_are_not_positive(ckpt, capsys, flag):
    assert main(["serve", str(ckpt), flag, "0", "--port", "0", "--device", "cpu"]) == 1
    assert capsys.readouterr().err.strip() == f"lenet5: error: {flag} 0: must be more than 0"


def test_the_host_header_must_name_the_server(ckpt):
    """Against DNS rebinding: on 127.0.0.1 only the localhost names (and the test client's) are
    answered; on 0.0.0.0 also that address and each --allowed-host, '*.name' for subdomains."""
    local = TestClient(create_app(ckpt, readers=0))
    network = TestClient(create_app(ckpt, readers=0, hosts=allowed_hosts(
        "0.0.0.0", ["digits.example.org", "*.lab.example"])))
    anyone = TestClient(create_app(ckpt, readers=0, hosts=allowed_hosts("::", ["*"])))
    for client, host, status in [
            (local, "testserver", 200), (local, "localhost:8000", 200), (local, "127.0.0.1:8000", 200),
            (local, "[::1]:8000", 200), (local, "rebound.example:8000", 400), (local, "0.0.0.0", 400),
            (network, "0.0.0.0:8000", 200), (network, "Digits.Example.org.:8000", 200),
            (network, "pc7.lab.example", 200), (network, "lab.example", 400), (network, "10.0.0.7", 400),
            (anyone, "10.0.0.7:8000", 200), (anyone, "[::]:8000", 200)]:
        r = client.get("/api/health", headers={"host": host})
        assert r.status_code == status, (host, r.text)
    assert r.json()["status"] == "ok"
    r = local.post("/api/predict", headers={"host": "rebound.example"}, content=b"x")
    assert r.status_code == 400 and r.json()["detail"] == (
        "this server does not answer to the Host 'rebound.example'; start it with --allowed-host "
        "rebound.example to allow it")


@pytest.mark.parametrize("name", ["a*b", "**", "*example.org", ""])
def test_serve_refuses_an_allowed_host_that_is_no_pattern(ckpt, capsys, name):
    assert main(["serve", str(ckpt), "--allowed-host", name, "--port", "0"]) == 1
    assert capsys.readouterr().err.startswith(f"lenet5: error: --allowed-host {name!r}: give a name")


def test_a_uvicorn_whose_protocol_changed_shape_is_one_clear_error():
    check_uvicorn()  # the installed one is fine

    class Renamed:
        def __init__(self):
            self.h11_conn = None

    with pytest.raises(Lenet5Error) as e:
        check_uvicorn(protocol=Renamed)
    assert str(e.value).startswith("uvicorn ") and "\n" not in str(e.value)
    assert "changed Renamed (no config, conn, connection_lost, " in str(e.value)
    assert str(e.value).endswith(f"lenet5 serve needs pip install 'uvicorn{UVICORN_TESTED}'")
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert f'"uvicorn{UVICORN_TESTED}"' in pyproject  # the pin and the message say the same


@pytest.fixture(scope="module")
def client(ckpt):
    with TestClient(create_app(ckpt)) as c:
        yield c


def test_the_pixel_limit_admits_a_phone_photo_and_refuses_more(client):
    phone = client.post("/api/predict", content=png_header(4032, 3024))  # 12 megapixels
    assert phone.status_code == 422, phone.text  # past the limit; this header holds no pixels
    r = client.post("/api/predict", content=png_header(4000, 4000))  # 16 megapixels
    assert r.status_code == 413 and "4000x4000 pixels is more than this server takes" in r.json()["detail"]
    assert client.get("/api/health").json()["max_pixels"] == 13_000_000


def test_a_bomb_past_pillows_own_limit_is_refused_with_its_real_size(client):
    r = client.post("/api/predict", files={"file": ("bomb.png", png_header(20_000, 20_000), "image/png")})
    assert r.status_code == 413, r.text
    assert r.json()["detail"].startswith("bomb.png: 20000x20000 pixels is more than")


def test_large_pictures_decode_one_at_a_time_and_drawings_together(ckpt, monkeypatch):
    """The pixel budget: three 12-megapixel pictures never decode at once, three drawings do, and a
    drawing is decoded beside a large picture, not after it."""
    real, inside, most, lock = Readers.read, [0], [0], threading.Lock()
    barrier = threading.Barrier(2)

    def watched(readers, data, name, trim=False):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            barrier.wait(timeout=1)  # passes only if a second picture is decoded at the same time
        except threading.BrokenBarrierError:
            pass
        finally:
            with lock:
                inside[0] -= 1
        return real(readers, data, name, trim)

    monkeypatch.setattr(Readers, "read", watched)
    with serving(create_app(ckpt, readers=3)) as url:
        def post(data):
            return httpx.post(f"{url}/api/predict", content=data, timeout=30).status_code

        with ThreadPoolExecutor(3) as pool:
            assert list(pool.map(post, [png_header(4032, 3024)] * 3)) == [422] * 3
        assert most[0] == 1
        barrier.reset()
        drawing = png(np.pad(np.full((12, 4), 255, np.uint8), 8))
        with ThreadPoolExecutor(3) as pool:
            assert list(pool.map(post, [drawing] * 3)) == [200] * 3
        assert most[0] >= 2
        barrier.reset()
        most[0] = 0
        with ThreadPoolExecutor(2) as pool:
            assert list(pool.map(post, [png_header(4032, 3024), drawing])) == [422, 200]
        assert most[0] == 2


@pytest.mark.parametrize("processes", [2, 0], ids=["reader processes", "server threads"])
def test_health_answers_while_every_reader_decodes_and_uploads_queue(ckpt, monkeypatch, mnist, processes):
    """/api/health runs on the event loop: with every reader stuck in decoding and ten more uploads
    queued behind them, it answers at once. No more pictures are read at once than there are
    reader processes, or, reading on the server's threads, one a core and at least two: more
    threads only take turns at Python's lock."""
    readers = processes or max(2, os.cpu_count() or 1)
    entered, release = threading.Semaphore(0), threading.Event()
    lock, reading, most = threading.Lock(), [0], [0]

    def stuck(real, *args):
        with lock:
            reading[0] += 1
            most[0] = max(most[0], reading[0])
        entered.release()
        release.wait(timeout=20)
        with lock:
            reading[0] -= 1
        return real(*args)

    if processes:
        real = Readers.read
        monkeypatch.setattr(Readers, "read", lambda *args, **kw: stuck(real, *args, *kw.values()))
    else:
        real_pixels = lenet5.images.load_pixels
        monkeypatch.setattr(lenet5.images, "load_pixels", lambda *args: stuck(real_pixels, *args))
    body = png(mnist.test_images[0])
    uploads = readers + 10
    with serving(create_app(ckpt, readers=processes)) as url, ThreadPoolExecutor(uploads) as pool:
        try:
            answers = [pool.submit(httpx.post, f"{url}/api/predict", content=body, timeout=60)
                       for _ in range(uploads)]
            for _ in range(readers):  # every reader is busy once this many have entered
                assert entered.acquire(timeout=20)
            assert max(health_ms(url) for _ in range(5)) < 500
        finally:
            release.set()
        assert [a.result().status_code for a in answers] == [200] * uploads
    assert most[0] == readers


def test_hostile_mix_gets_no_5xx_and_health_keeps_answering(ckpt, mnist):
    """Slow sockets, worst-case uploads, bombs, broken and garbage requests, and normal clients, all
    at once against one server: no 5xx, every normal request answered right, health answered fast."""
    worst = png16(1000, 1000)  # the limit below, at 16 bits a pixel
    uploads = [
        ("worst", dict(content=worst), {200, 422}),
        ("worst form", dict(files={"file": ("w.png", worst, "image/png")}), {200, 422}),
        ("bomb", dict(content=png_header(30_000, 30_000)), {413}),
        ("over the limit", dict(content=png_header(2000, 2000)), {413}),
        ("truncated", dict(content=worst[: len(worst) // 2]), {422}),
        ("garbage", dict(content=bytes(range(256)) * 40), {422}),
        ("text as png", dict(files={"file": ("t.png", b"hello", "image/png")}), {422}),
        ("png as text", dict(content=png(mnist.test_images[1]), headers={"content-type": "text/plain"}), {200}),
        ("broken form", dict(content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=x"}), {400, 422}),
        ("form no boundary", dict(content=b"abc", headers={"content-type": "multipart/form-data"}), {400, 422}),
        ("too large", dict(content=b"\0" * 300_001), {413}),
    ]
    garbage = [b"GARBAGE\r\n\r\n", b"GET /\r\n\r\n", b"GET / HTTP/1.1\r\nHost x\r\n\r\n", b"GET /\x00 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
               b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
               b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n",
               b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: x\r\n\r\n",
               b"GET /%ff%fe/../../etc/passwd HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"]
    normal = [(paper_digit(mnist.test_images[i]), int(mnist.test_labels[i])) for i in range(8)]
    app = create_app(ckpt, max_upload=300_000, max_pixels=1_000_000)
    with serving(app, header_timeout=1, body_timeout=1) as url:
        slow = [connect(url, data) for data in SLOW.values() for _ in range(5)]
        stop, health = threading.Event(), []

        def poll_health():
            with httpx.Client(timeout=5) as c:  # one connection, as a monitor keeps
                while not stop.is_set():
                    start = time.perf_counter()
                    assert c.get(f"{url}/api/health").status_code == 200
                    health.append((time.perf_counter() - start) * 1000)

        def upload(job):
            kind, kw, allowed = job
            r = httpx.post(f"{url}/api/predict", timeout=30, **kw)
            assert r.status_code in allowed, (kind, r.status_code, r.text[:200])
            return r.status_code

        def raw(data):
            with connect(url, data) as s:
                answer = s.recv(1024)  # the status line; odd but valid requests keep their socket
            status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
            assert 0 < status < 500, (data[:40], answer[:100])
            return status

        def reader(job):
            data, label = job
            r = httpx.post(f"{url}/api/predict", files={"file": ("d.jpg", data, "image/jpeg")}, timeout=30)
            assert r.status_code == 200, r.text
            return r.json()["digit"] == label

        poller = threading.Thread(target=poll_health)
        poller.start()
        try:
            with ThreadPoolExecutor(8) as pool:
                jobs = ([pool.submit(upload, j) for j in uploads * 2] + [pool.submit(raw, g) for g in garbage]
                        + [pool.submit(reader, n) for n in normal])
                statuses = [j.result() for j in jobs]
                closed = list(pool.map(lambda s: read_until_closed(s, 5), slow))
        finally:
            stop.set()
            poller.join()
        assert all(isinstance(s, bool) or s < 500 for s in statuses)
        assert sum(s is True for s in statuses) >= 6  # the normal pictures are read (mostly) right
        assert all(seconds < 3 for _, seconds in closed)
        assert len(health) >= 3 and max(health) < 1000, health


def test_serve_refuses_a_negative_reader_count(ckpt, capsys):
    assert main(["serve", str(ckpt), "--readers", "-1", "--port", "0", "--device", "cpu"]) == 1
    assert capsys.readouterr().err.strip() == ("lenet5: error: --readers -1: must be 0 (read on the "
                                               "server's threads) or more")

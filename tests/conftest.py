"""Shared fixtures: the real MNIST files (loaded once) and helpers to build IDX files."""

import contextlib
import gzip
import os
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# Property-based tests (tests/test_fuzz.py): a few hundred cases each by default, so the suite stays
# quick; HYPOTHESIS_PROFILE=thorough runs 3,400 per property, over 10,000 in all. No deadline: the
# machines running the suite are shared, and a slow case is not a wrong one.
settings.register_profile("quick", max_examples=300, deadline=None)
settings.register_profile("thorough", max_examples=3400, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"


@pytest.fixture(scope="session")
def mnist():
    from lenet5.data import load_mnist

    return load_mnist(DATA, download_missing=False)


@pytest.fixture
def raw_copy(tmp_path):
    """A writable copy of the shipped files in the torchvision layout."""
    dest = tmp_path / "data" / "MNIST" / "raw"
    dest.mkdir(parents=True)
    for f in (DATA / "MNIST" / "raw").glob("*.gz"):
        shutil.copy(f, dest / f.name)
        (dest / f.name).chmod(0o644)
    return tmp_path / "data"


class Crash(Exception):
    """Raised from on_epoch: like a crash right after the epoch's checkpoint was written."""


def crash_after_epoch_1(row):
    if row["epoch"] == 1:
        raise Crash


def _status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))


@contextlib.contextmanager
def peak_memory():
    """How far this process's resident memory rises during the block: {"bytes": ...} once it ends.

    Linux resets the process's peak (VmHWM) on writing 5 to /proc/self/clear_refs, so everything
    counts (Pillow's and torch's own buffers too, which tracemalloc does not see); elsewhere the
    test is skipped.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kb("VmRSS")
    except (OSError, AttributeError):
        pytest.skip("needs Linux's /proc/self/clear_refs to measure peak memory")
    result = {}
    yield result
    result["bytes"] = (_status_kb("VmHWM") - before) * 1024


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = magic if magic is not None else 0x800 + array.ndim
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def write_gz(path: Path, content: bytes) -> Path:
    with gzip.open(path, "wb") as f:
        f.write(content)
    return path


@pytest.fixture(scope="session")
def small_run(mnist, tmp_path_factory):
    """A real short training run (~97 % test accuracy, seconds on a CPU): its run folder."""
    from lenet5.config import from_recipe
    from lenet5.training import fit

    out = tmp_path_factory.mktemp("small_run")
    cfg = from_recipe("default", out_dir=str(out), name="small", limit=12000, val_size=1000,
                      epochs=2, progress=False)
    fit(cfg, mnist)
    return out / "small"


# ---- the web page: a server in a thread, Chromium under Playwright, drawing on the pad ----------

CHROMIUM = os.environ.get("LENET5_CHROMIUM", "/usr/bin/chromium")
# Headless as root, on a machine with no outside network: no sandbox, no GPU, no background calls.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-quic"]


@contextlib.contextmanager
def serving(app):
    """`app` under uvicorn on 127.0.0.1 (a free port), in a thread, while the block runs; its URL."""
    import threading
    import time

    import httpx
    from lenet5.web.app import bind, server

    sock = bind("127.0.0.1", 0)  # listening already: requests queue until the loop runs
    srv = server(app, log_level="warning")
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = time.monotonic() + 30
    while True:
        assert thread.is_alive(), "the server stopped while starting"
        try:
            if httpx.get(f"{url}/api/health", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
    try:
        yield url
    finally:
        srv.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium under Playwright; required in CI (the set-up installs it), else optional."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install playwright)"
    if reason is None and not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set LENET5_CHROMIUM)"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI: {reason}")
        pytest.skip(reason)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def draw(page, strokes):
    """Mouse strokes on the pad, each a list of points as fractions of its width and height."""
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        points = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for p in points[1:]:
            page.mouse.move(*p, steps=8)
        page.mouse.up()

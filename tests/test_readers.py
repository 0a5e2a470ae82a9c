"""The web server's picture reader processes (`lenet5.web.readers`): the same pixels and errors as
reading in the server itself, no torch in them, a dead reader replaced, none outliving the server."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lenet5.images import ImageError, load_pixels
from lenet5.web.readers import PictureProcess, ReaderFailed, Readers

from test_web import paper_digit, png
from test_web_limits import png16

LINUX = Path("/proc/self/maps").exists()


@pytest.fixture(scope="module")
def readers():
    r = Readers(2)
    yield r
    r.close()


def pictures(mnist) -> dict[str, bytes]:
    """Pictures of every kind a server is sent, readable or not."""
    rgba = Image.new("RGBA", (60, 40), (0, 0, 0, 0))
    rgba.paste(Image.new("RGBA", (10, 30), (20, 20, 200, 255)), (25, 5))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    return {"mnist.png": png(mnist.test_images[0]), "paper.jpg": paper_digit(mnist.test_images[1]),
            "big paper.jpg": paper_digit(mnist.test_images[2], scale=40), "transparent.png": buf.getvalue(),
            "16-bit.png": png16(300, 200), "blank.png": png(np.full((40, 40), 255, np.uint8)),
            "speck.png": png(np.pad(np.zeros((2, 2), np.uint8), 20, constant_values=255)),
            "garbage": bytes(range(256)) * 8, "cut short.jpg": paper_digit(mnist.test_images[3])[:900],
            "ünïcode name.png": png(mnist.test_images[4])}


def read_here(data: bytes, name: str):
    try:
        return load_pixels(data, name)
    except ImageError as e:
        return str(e)


def read_there(readers: Readers, data: bytes, name: str):
    try:
        return readers.read(data, name)
    except ImageError as e:
        assert e.__cause__ is None  # no unexpected failure behind any of these
        return str(e)


def test_readers_give_the_pixels_and_errors_of_reading_here(readers, mnist):
    seen = 0
    for name, data in pictures(mnist).items():
        here, there = read_here(data, name), read_there(readers, data, name)
        if isinstance(here, str):
            assert there == here, name
        else:
            assert isinstance(there, np.ndarray) and there.dtype == np.uint8, name
            assert np.array_equal(there, here), name
            seen += 1
    assert seen >= 5
    assert len(readers.pids()) == 1  # one picture at a time: the second reader was never needed


@pytest.mark.skipif(not LINUX, reason="reads a process's mapped libraries from Linux's /proc")
def test_a_reader_does_without_torch(readers, mnist):
    readers.read(png(mnist.test_images[0]), "warm")
    for pid in readers.pids():
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "PIL" in maps and "torch" not in maps
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
        assert rss < 150 * 1024  # KiB: numpy, scipy and Pillow, not torch's 250 MiB


def test_a_reader_that_dies_is_replaced_and_its_picture_read_again(mnist, monkeypatch, caplog):
    readers, data = Readers(1), png(mnist.test_images[0])
    try:
        expected = readers.read(data, "first")
        old = readers.pids()
        os.kill(old[0], signal.SIGKILL)  # the idle reader is gone: the next picture finds it dead
        assert np.array_equal(readers.read(data, "after a kill"), expected)
        assert readers.pids() != old and len(readers.pids()) == 1
        assert "a picture reader ended while reading after a kill" in caplog.text

        real = PictureProcess.read

        def killed_while_reading(reader, *args):  # every reader dies on this picture
            reader.proc.kill()
            reader.proc.wait()
            return real(reader, *args)

        monkeypatch.setattr(PictureProcess, "read", killed_while_reading)
        with pytest.raises(ImageError, match="deadly.png: reading it stopped the picture reader twice"):
            readers.read(data, "deadly.png")
        monkeypatch.undo()
        assert np.array_equal(readers.read(data, "and on"), expected)
    finally:
        readers.close()


@pytest.mark.skipif(not LINUX, reason="watches processes through Linux's /proc")
def test_readers_end_when_their_server_is_killed(mnist, tmp_path):
    """A server killed outright (no atexit, no cleanup) leaves no reader behind: each one sees its
    input close and exits."""
    picture = tmp_path / "d.png"
    picture.write_bytes(png(mnist.test_images[0]))
    script = ("import os, sys; from lenet5.web.readers import Readers; r = Readers(2); r.start(); "
              f"r.read(open({str(picture)!r}, 'rb').read(), 'd.png'); "
              "print(*r.pids(), flush=True); os.kill(os.getpid(), 9)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 20
    while any(alive(p) for p in pids):
        assert time.monotonic() < deadline, "a reader outlived its server"
        time.sleep(0.05)  # polling the process table, not waiting for time to pass


def alive(pid: int) -> bool:
    """Running, not merely a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_readers_that_cannot_start_leave_the_reading_to_the_server(mnist, monkeypatch, caplog):
    """A reader that exits at once (here: a program that is not Python): `start` says so in one
    line, and pictures are still read, in the server's own thread."""
    monkeypatch.setattr("lenet5.web.readers.sys.executable", "false")
    readers, data = Readers(1), png(mnist.test_images[0])
    with pytest.raises(ReaderFailed, match=r"did not start \(exit code 1; .*--readers 0 reads pictures in the server"):
        readers.start()
    assert np.array_equal(readers.read(data, "d.png"), load_pixels(data, "d.png"))
    assert "the server reads pictures itself from now on (first: d.png)" in caplog.text
    caplog.clear()
    assert np.array_equal(readers.read(data, "e.png"), load_pixels(data, "e.png"))
    assert caplog.text == "" and readers.pids() == []  # said once, and not tried for every picture

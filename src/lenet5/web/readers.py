"""Picture readers in processes of their own, for the web server.

Decoding and preparing a picture (`images.load_pixels`) is a few milliseconds of many small numpy
and Pillow steps, and Python's lock is held between them: threads of one process reading pictures
mostly take turns, so a server reading on threads uses about one and a half cores, however many the
machine has. Each reader here is a process (Python running `serve` below) that reads one picture
at a time, so pictures are read side by side on every core. A reader imports numpy, scipy and
Pillow, not torch (about 60 MiB, against the server's 250); the network runs in the server.

The server talks to a reader over its standard input and output:

    server -> reader   header (name length, data length, trim flag: "!IIB"), the name, the bytes
    reader -> server   header (status, length: "!BI"), then the payload:
                         status 0: the 28x28 uint8 pixels, row by row (784 bytes)
                         status 1: an ImageError's message (the picture cannot be read)
                         status 2: the same, then a line break and the traceback of the
                                   unexpected failure behind it (a bug met on a strange picture)

A reader is started when first needed and kept; it exits when its input closes, so readers never
outlive the server, even one that is killed. A reader that dies (killed, out of memory) is
replaced, and the picture it held is read once more by a new one before it counts as unreadable.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from ..errors import Lenet5Error
from ..images import ImageError, NoDigit, load_pixels

log = logging.getLogger("lenet5.web")
ASK = struct.Struct("!IIB")
ANSWER = struct.Struct("!BI")
PIXELS = 28 * 28
READY = b"lenet5 reader ready\n"  # a reader's first line: imports done, waiting for pictures
SRC = Path(__file__).resolve().parents[2]  # the folder that holds this lenet5 package
# A reader's program: this very lenet5 (from a source tree, say), found first; an installed one's
# folder is on the path already, and is left where it is.
START = (
    "import os, sys; here = {os.path.realpath(p or '.') for p in sys.path}; "
    "sys.path.insert(0, sys.argv[1]) if sys.argv[1] not in here else None; "
    "from lenet5.web.readers import serve; serve()"
)


def _libc():
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes, libc.mallopt.argtypes = [ctypes.c_size_t], [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):  # not glibc: its allocator manages on its own
        return None


LIBC = _libc()
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def release_memory() -> None:
    """Hand the heap memory a large picture freed back to the system (glibc keeps it otherwise)."""
    if LIBC is not None:
        LIBC.malloc_trim(0)


class ReaderDied(Exception):
    """A reader process ended while it held a picture."""


class ReaderFailed(Lenet5Error):
    """A reader process could not be started."""


class PictureProcess:
    """One reader process and its pipes; `ready()` waits until it has started."""

    def __init__(self):
        # One thread for numpy's linear algebra: a reader is one of a core's worth already.
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", START, str(SRC)],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
        except OSError as e:
            raise ReaderFailed(
                f"a picture reader process could not be started ({e.strerror or e}); "
                "--readers 0 reads pictures in the server itself"
            ) from None
        assert self.proc.stdin is not None and self.proc.stdout is not None  # both asked for as pipes
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout

    def ready(self) -> PictureProcess:
        said = self.stdout.readline()
        if said != READY:
            self.close()
            raise ReaderFailed(
                f"a picture reader process did not start (exit code "
                f"{self.proc.returncode}; its error is above); --readers 0 reads "
                "pictures in the server itself"
            )
        return self

    def read(self, data: bytes, name: str, trim: bool) -> tuple[int, bytes]:
        """(status, payload) for one picture; ReaderDied if the process ends first."""
        encoded = name.encode("utf-8", "replace")
        try:
            self.stdin.write(ASK.pack(len(encoded), len(data), trim) + encoded)
            self.stdin.write(data)
            self.stdin.flush()
            head = self.stdout.read(ANSWER.size)
            if len(head) == ANSWER.size:
                status, length = ANSWER.unpack(head)
                payload = self.stdout.read(length)
                if len(payload) == length:
                    return status, payload
        except OSError:  # a broken pipe: the process is gone
            pass
        code = self.proc.wait()
        raise ReaderDied(f"exit code {code}")

    def close(self) -> None:
        """End the process: its input closed, it exits; killed if it has not within 5 s."""
        with contextlib.suppress(OSError):
            self.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stdout.close()


class Readers:
    """Up to `count` reader processes, started as pictures need them; `read` is called from worker
    threads and waits for a free reader. Thread-safe."""

    def __init__(self, count: int):
        if count < 1:
            raise ValueError("at least one reader")
        self.count = count
        self.idle: queue.SimpleQueue[PictureProcess] = queue.SimpleQueue()
        self.started: list[PictureProcess | None] = []  # None: a place held while one starts
        self.lock = threading.Lock()
        self.failed = False  # a reader could not be started: pictures are read in the caller
        atexit.register(self.close)

    def pids(self) -> list[int]:
        with self.lock:
            return [r.proc.pid for r in self.started if r is not None]

    def start(self) -> None:
        """Start every reader not yet running, side by side, and wait until they are ready (a
        server does this before it takes requests; otherwise they start as pictures arrive)."""
        with self.lock:
            new = [PictureProcess() for _ in range(self.count - len(self.started))]
            self.started.extend(new)
        for reader in new:
            try:
                self.idle.put(reader.ready())
            except ReaderFailed:
                self._forget(reader)
                raise

    def read(self, data: bytes, name: str, trim: bool = False) -> np.ndarray:
        """The picture's 28x28 uint8 pixels, as `images.load_pixels(data, name)` gives them; its
        ImageError when it cannot be read, with the reader's traceback in the message's cause
        when an unexpected failure was behind it. Should no reader start, the picture is read
        here, in the caller's thread."""
        if self.failed:
            return load_pixels(data, name)
        for attempt in (1, 2):
            try:
                reader = self._take()
            except ReaderFailed as e:
                # Said once: the server reads every picture itself from now on.
                self.failed = True
                log.error("%s; the server reads pictures itself from now on (first: %s)", e, name)
                return load_pixels(data, name)
            try:
                status, payload = reader.read(data, name, trim)
            except ReaderDied as e:
                self._forget(reader)
                log.error(
                    "a picture reader ended while reading %s (%s)%s",
                    name,
                    e,
                    "; reading it again" if attempt == 1 else "",
                )
                continue
            self.idle.put(reader)
            if status == 0:
                return np.frombuffer(payload, dtype=np.uint8).reshape(28, 28).copy()
            message, _, trace = payload.decode("utf-8", "replace").partition("\n")
            if status == 3:
                raise NoDigit(trace, message)
            error = ImageError(message)
            if status == 2:
                error.__cause__ = RuntimeError(f"in the picture reader:\n{trace}")
            raise error
        raise ImageError(
            f"{name}: reading it stopped the picture reader twice; the picture cannot be read here"
        )

    def _take(self) -> PictureProcess:
        """A free reader: an idle one, a new one while fewer than `count` run, else the next to
        come free."""
        try:
            return self.idle.get_nowait()
        except queue.Empty:
            pass
        with self.lock:
            grow = len(self.started) < self.count
            if grow:
                self.started.append(None)  # a place held while the process starts
        if not grow:
            return self.idle.get()
        try:
            reader = PictureProcess().ready()
        except BaseException:
            with self.lock:
                self.started.remove(None)
            raise
        with self.lock:
            self.started[self.started.index(None)] = reader
        return reader

    def _forget(self, reader: PictureProcess) -> None:
        with self.lock:
            if reader in self.started:
                self.started.remove(reader)
        reader.close()

    def close(self) -> None:
        """End every reader (the server has stopped reading by then); a later picture starts them
        again."""
        self.failed = False
        with self.lock:
            readers, self.started = [r for r in self.started if r is not None], []
            self.idle = queue.SimpleQueue()
        for reader in readers:
            reader.close()


def serve() -> None:
    """A reader's loop: pictures in on standard input, answers out on standard output, until the
    input closes."""
    import signal
    import traceback

    # Ctrl-C in the server's terminal reaches its readers too: the server ends them itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if LIBC is not None:
        # Blocks of 1 MiB and more (a large picture's pixels and arrays) mapped on their own and
        # handed back when freed; glibc's default raises this threshold as big blocks are freed,
        # and the next large picture then leaves its arrays in the heap.
        LIBC.mallopt(M_MMAP_THRESHOLD, 1 << 20)

    # The answers go to a private copy of standard output; what a library prints goes to standard
    # error instead, where it cannot break an answer.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    inp = sys.stdin.buffer
    out.write(READY)
    out.flush()
    while True:
        head = inp.read(ASK.size)
        if len(head) < ASK.size:
            return  # the server is gone, or closed this reader
        name_length, data_length, trim = ASK.unpack(head)
        name = inp.read(name_length).decode("utf-8", "replace")
        data = inp.read(data_length)
        try:
            status, payload = 0, load_pixels(data, name).tobytes()
        except NoDigit as e:  # an answer ("no digit"), not an error
            status, payload = 3, (e.reason + "\n" + str(e)).replace("\r", " ").encode()
        except ImageError as e:
            status, payload = 1, str(e).replace("\n", " ").encode()
            if e.__cause__ is not None:
                trace = "".join(traceback.format_exception(e.__cause__))
                status, payload = 2, payload + b"\n" + trace.encode("utf-8", "replace")
        del data
        out.write(ANSWER.pack(status, len(payload)) + payload)
        out.flush()
        if trim:
            release_memory()

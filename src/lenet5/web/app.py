"""The web demo's server: the drawing page at / and the JSON API it calls, as one FastAPI app.

POST /api/predict takes an image (a multipart upload in the field `file`, or the raw bytes as the
body) and answers with the digit, the ten probabilities and the 28x28 input the model saw; with
?explain=true also the why view: a 28x28 map for the digit read and each of its two runners-up
(explain.py). The
image goes through `images.load_pixels`, the same preprocessing as `lenet5 predict FILE`, in one
of the picture reader processes (`readers.py`), so that pictures are read on every core at once;
the model runs here.
GET /api/health says what is loaded (the checkpoint, its name and test accuracy when known);
/docs and /openapi.json describe the API; /favicon.ico is the page's icon. The page's files are
served from static/ as they are, static/model.js included: a stub with no weights, which tells the
page to read through this server (`lenet5 export --format web` writes the one with weights).

Bad requests get a 4xx and {"detail": reason}, never a 500: a Host header the server does not
answer to (400; see below), empty bodies (400), bodies over the
upload limit (413, checked before anything is parsed), too many pixels (413, read from the image
header before decoding), pictures that are not images or hold no digit (422). The model is loaded
once, when the app is made; requests share it read-only (eval mode, no gradients), which PyTorch
allows from many threads. POST /api/number reads on the server's own threads: the model is needed
between its steps.

Under load and against hostile clients the server keeps answering: the pixels decoded at once are
bounded (memory follows pixels, not requests), /api/health runs on the event loop and never waits
behind decoding, and the connection protocol closes clients that are slow to send their headers or
body and caps the connections open at once, so idle sockets cannot use up file descriptors; when
slow clients hold every connection, the slowest makes room for a new one, so that a health check
is answered at once (`GuardedH11`).
The Host header is checked (`HostCheck`), so that a page on another site cannot read this server
through a name it controls that resolves to this machine (DNS rebinding). A server answers to the
address it listens on and the localhost names (localhost, 127.0.0.1, [::1], and testserver, the
name Starlette's TestClient sends); `lenet5 serve --allowed-host NAME` adds a name a network uses
for it ("*.example.org" its subdomains, "*" any). The check is ours rather than Starlette's
TrustedHostMiddleware, which matches the same way but answers in plain text, not {"detail": ...}.

fastapi, uvicorn, python-multipart and Pillow are the `web` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import socket
import warnings
from collections.abc import Sequence
from http import HTTPStatus
from pathlib import Path
from typing import Any, cast

import numpy as np

from .. import __version__
from ..errors import ConfigError, Lenet5Error
from . import STATIC, describe
from .readers import LIBC, Readers, release_memory

try:
    import h11
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from fastapi_offline import FastAPIOffline
    from PIL import Image
    from pydantic import BaseModel, Field
    from starlette.concurrency import run_in_threadpool
    from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle
except ImportError as e:
    raise Lenet5Error(f"the web demo needs {e.name}: pip install 'lenet5[web]'") from None

log = logging.getLogger("lenet5.web")
MAX_UPLOAD = 2 * 1024 * 1024  # bytes per request body; a drawn digit is a PNG of a few KB
# width x height; admits 12- and 13-megapixel phone photos (4032x3024, 4160x3120), far below
# images.MAX_PIXELS as a server decodes for anyone. A drawing from the page is 0.08 megapixels.
MAX_PIXELS = 13_000_000
HEADER_TIMEOUT = 10.0  # seconds from connecting (or a request's first byte) to the end of its headers
BODY_TIMEOUT = 30.0  # seconds from the end of the headers to the end of the body: 2 MB at 70 KB/s
DRAWING_PIXELS = 1_000_000  # pictures this small (the page's drawings) skip the line behind photos
MAX_CONNECTIONS = 200  # open at once (never above half the fd limit); see GuardedH11 for beyond
MAX_HEADERS = 16 * 1024  # bytes of request line and headers (h11's default); more get a 431
LINGER = 2.0  # seconds an answered connection reads and drops what its client still sends


class Prediction(BaseModel):
    digit: int = Field(description="the most probable digit, 0-9 (the closest one when is_digit is false)")
    probability: float = Field(description="its probability, calibrated: right about that often")
    is_digit: bool = Field(
        description="false when the picture holds no digit: blank, or unlike "
        "any digit (a letter, a sign, a scribble)"
    )
    reason: str = Field(description="why it is not a digit ('no ink', 'unlike any digit'); empty for a digit")
    probabilities: list[float] = Field(description="probability of each digit 0-9")
    image: list[list[int]] = Field(
        description="the 28x28 input the model saw, rows of 0-255, white ink on black"
    )
    explain: Why | None = Field(
        None, description="with ?explain=true: which pixels spoke for the digit read and its runners-up"
    )


class DigitMap(BaseModel):
    digit: int = Field(description="the digit this map is for")
    probability: float = Field(description="its probability, calibrated")
    logit: float = Field(description="its logit for the picture")
    blank: float = Field(description="its logit for the blank picture; the map adds up to logit - blank")
    map: list[list[float]] = Field(
        description="28 rows of 28: each pixel's part in the logit, + for the digit, - against it"
    )


class Why(BaseModel):
    method: str = Field(description="how the maps were made")
    digits: list[DigitMap] = Field(
        description="the digit read first, then the two runners-up; none for a picture with no ink"
    )


class Health(BaseModel):
    status: str
    checkpoint: str = Field(
        description="the checkpoint file: its run folder and name "
        "(NAME/best.pt), or the shipped weights' file name; "
        "never a path on the server"
    )
    name: str = Field(
        description="a short name for the checkpoint: its run folder and file, or the shipped weights' name"
    )
    test_accuracy: float | None = Field(
        None, description="accuracy on the 10,000 MNIST test images, 0-1; null when not known for this file"
    )
    device: str
    mean: float
    std: float
    max_upload_bytes: int
    max_pixels: int
    version: str


class Problem(BaseModel):
    detail: str


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before the app reads any of it.

    Content-Length is checked first; the body is then read here with a running count, so a client
    that sends none (chunked) or lies is held to the limit too. Bodies under it are small by
    construction and handed on from memory.
    """

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return await _problem(400, "Content-Length is not a number")(scope, receive, send)
            if int(length) > self.limit:
                return await self._too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await self._too_large(scope, receive, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _too_large(self, scope, receive, send):
        return _problem(413, f"upload is larger than {self.limit:,} bytes")(scope, receive, send)


def _problem(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "testserver")  # testserver: Starlette's TestClient


def allowed_hosts(host: str = "127.0.0.1", extra: Sequence[str] = ()) -> list[str]:
    """The Host names a server listening on `host` answers to: that address, the localhost names,
    and `extra` (--allowed-host: a name or address, "*.example.org" for its subdomains, "*" any)."""
    names = list(LOCAL_HOSTS)
    for name in (host, *extra):
        name = name.strip().lower().rstrip(".")
        if ":" in name and not name.startswith("["):
            name = f"[{name}]"  # an IPv6 address, as it stands in a Host header
        wildcard = name.startswith("*") and name != "*"
        if not name or "*" in name[1:] or (wildcard and not name.startswith("*.")):
            raise ConfigError(
                f"--allowed-host {name!r}: give a name or address, '*.example.org' for "
                "its subdomains, or '*' for any"
            )
        names.append(name)
    return list(dict.fromkeys(names))


class HostCheck:
    """ASGI middleware: a request whose Host header names none of `allowed` gets 400.

    A page on another site can reach a server on this machine through a name it controls that
    resolves here (DNS rebinding); the browser then sends that name as the Host, which this check
    refuses. Starlette's TrustedHostMiddleware matches the same way, but answers in plain text; here
    the answer is {"detail": ...} like every other error, and says which flag allows the name.
    """

    def __init__(self, app, allowed: Sequence[str]):
        self.app = app
        self.any = "*" in allowed
        self.names = {n for n in allowed if not n.startswith("*")}
        self.suffixes = tuple(n[1:] for n in allowed if n.startswith("*."))

    async def __call__(self, scope, receive, send):
        if self.any or scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
        # without its port: "[::1]:8000" is [::1], "example.org:8000" example.org
        name = host.partition("]")[0] + "]" if host.startswith("[") else host.partition(":")[0]
        name = name.rstrip(".")
        if name in self.names or name.endswith(self.suffixes):
            return await self.app(scope, receive, send)
        detail = (
            f"this server does not answer to the Host {name!r}; start it with --allowed-host "
            f"{name} to allow it"
            if name
            else "no Host header; HTTP/1.1 needs one"
        )
        return await _problem(400, detail)(scope, receive, send)


class PixelBudget:
    """At most `total` + `small` pixels decoded at once.

    Decoding memory follows pixels, not requests. Pictures larger than `small` queue first come
    first served, each waiting until its pixels are free: a large photo waits for the one before it
    and is not passed by a stream of others. Pictures up to `small` (drawings) skip that line and
    use the `small` pixels a large one leaves free, so they never wait behind photos, and photos
    never starve behind them. Waiting happens on the event loop, holding no worker thread.
    """

    def __init__(self, total: int, small: int):
        self.total, self.small, self.free = total, small, total + small
        self.line = asyncio.Lock()  # the first in line waits for pixels; the rest wait behind it
        self.freed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def hold(self, pixels: int):
        pixels = min(pixels, self.total)
        line = contextlib.nullcontext() if pixels <= self.small else self.line
        async with line, self.freed:
            await self.freed.wait_for(lambda: self.free >= pixels)
            self.free -= pixels
        try:
            yield
        finally:
            if pixels > self.small:
                release_memory()
            async with self.freed:
                self.free += pixels
                self.freed.notify_all()


M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_arenas(arenas: int = 2) -> None:
    """Few malloc arenas for the server's many worker threads: with one each (glibc's default, up
    to 8 per core), a large picture decoded on each thread in turn leaves its freed memory in
    every arena, and the process keeps hundreds of MB it no longer uses."""
    if LIBC is not None:
        LIBC.mallopt(M_ARENA_MAX, arenas)


@contextlib.contextmanager
def unreadable_is_422(name: str):
    """A picture that cannot be read is the client's 422; an unexpected failure behind it (turned
    into that picture's ImageError) is logged with its traceback."""
    from ..images import ImageError, NoDigit

    try:
        yield
    except NoDigit:
        raise  # a picture with no ink: an answer ("no digit"), not an error
    except ImageError as e:
        if e.__cause__ is not None:
            log.error("reading %s failed", name, exc_info=e.__cause__)
        raise HTTPException(422, str(e)) from None


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image header, nothing decoded; None when Pillow cannot read one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            from ..images import FORMATS

            return Image.open(io.BytesIO(data), formats=FORMATS).size
        except Image.DecompressionBombError:
            # Past Pillow's own limit Image.open gives no size; each format's reader still parses
            # the header without that check, so ask the ones that recognise the first bytes.
            for kind in Image.ID:
                factory, accept = Image.OPEN[kind]
                if accept is None or accept(data[:16]):
                    with contextlib.suppress(Exception):
                        return factory(io.BytesIO(data), "").size  # no file name, as Image.open says
        except Exception:  # not an image Pillow knows: load_digit says so properly
            pass
    return None


DEFAULT_READERS = 2
"""Picture reader processes `lenet5 serve` starts. Two, so that a drawing is read beside a large
photo rather than after it, even on one core; and no more, since each takes about 60 MiB (90 while
it reads a 13-megapixel picture): with two the server stays under 500 MB against the worst uploads
(the README's table). On two cores two also read fastest; `--readers N` trades memory for more."""


_shared: dict[int, Readers] = {}


def shared_readers(count: int) -> Readers:
    """One set of reader processes for every app in this process with the same count."""
    if count not in _shared:
        _shared[count] = Readers(count)
    return _shared[count]


def shown_file(checkpoint: str | os.PathLike) -> str:
    """The checkpoint as /api/health names it: `runs/NAME/best.pt` is NAME/best.pt, the shipped
    weights their file name; where it lies on the server is nobody's business."""
    from ..checkpoint import is_shipped

    path = Path(checkpoint).resolve()
    return path.name if is_shipped(path) else Path(path.parent.name, path.name).as_posix()


class NumberDigit(BaseModel):
    digit: int = Field(description="the most probable digit, 0-9")
    probability: float = Field(description="its probability, calibrated")
    is_digit: bool = Field(description="false for a part that is not a digit (shown as ? in the number)")
    box: list[int] = Field(
        description="[x0, y0, x1, y1]: where it is in the picture, in its pixels (x1, y1 just past the digit)"
    )


class NumberReading(BaseModel):
    number: str = Field(description="the digits, left to right; ? for a part that is not a digit")
    readable: bool = Field(description="false when some part is not a digit")
    problem: str = Field(description="what could not be read, in words; empty when all could")
    digits: list[NumberDigit]


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": text}
    for code, text in (
        (400, "empty body, or a form without the field `file`"),
        (413, "body over the upload limit, or an image with too many pixels"),
        (422, "not a readable image, no digit in it, or a query parameter that is no value it takes"),
    )
}
BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


class Reading:
    """What every request that reads a picture shares: the reader (reader.py), the picture
    reader processes (or none: this process's threads), the pixel budget and how many at once."""

    def __init__(self, reader, pool: Readers | None, max_pixels: int, at_once: int):
        self.reader, self.pool, self.max_pixels = reader, pool, max_pixels
        self.budget = PixelBudget(max_pixels, min(DRAWING_PIXELS, max_pixels))
        self.at_once = asyncio.Semaphore(at_once)

    def pixels(self, data: bytes, name: str, pixels: int):
        """The picture's (28, 28) uint8 input, read by a reader process or on this thread; a
        picture with no ink is (zeros, why) - an answer, not an error."""
        from ..images import NoDigit, load_pixels

        try:
            with unreadable_is_422(name):
                if self.pool is None:
                    return load_pixels(data, name)
                return self.pool.read(data, name, trim=pixels > DRAWING_PIXELS)
        except NoDigit as e:
            return np.zeros((28, 28), np.uint8), e.reason

    def prediction(self, digit, explain: bool = False) -> Response:
        """The answer for the (28, 28) input: a Prediction, as JSON written by pydantic itself
        (FastAPI would check it against the model once more and write it with json.dumps).
        `explain`: with the why view (explain.py), for a picture with ink."""
        blank = ""
        if isinstance(digit, tuple):
            digit, blank = digit
        p = self.reader.read(digit[None])[0]
        reason, why = blank or p.reason, None
        if explain:
            from ..explain import METHOD
            from ..explain import explain as explained
            from ..reader import UNLIKE

            nothing = reason not in ("", UNLIKE)  # no ink, a speck: no maps to draw
            maps = [] if nothing else explained(self.reader, digit, p).to_dict()["digits"]
            why = Why(method=METHOD, digits=[DigitMap(**m) for m in maps])
        answer = Prediction(
            digit=p.digit,
            probability=p.probability,
            probabilities=p.probabilities,
            is_digit=p.is_digit and not blank,
            reason=reason,
            image=digit.tolist(),
            explain=why,
        )
        return Response(answer.model_dump_json(exclude_none=True), media_type="application/json")

    def number(self, data: bytes, name: str, pixels: int) -> NumberReading:
        from ..images import NoDigit

        try:
            with unreadable_is_422(name):
                number = self.reader.read_number(data, name)
        except NoDigit as e:  # a number picture with no ink: nothing to read, as the CLI says
            raise HTTPException(422, str(e)) from None
        d = number.to_dict()
        return NumberReading(
            number=d["number"],
            readable=d["readable"],
            problem=d["problem"],
            digits=[NumberDigit(**digit) for digit in d["digits"]],
        )

    async def read(self, request: Request, reader):
        """The request's image, checked (present, not too many pixels), then
        `reader(data, name, pixels)` on a worker thread, within the pixel budget and `at_once`."""
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=4)
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise HTTPException(400, "the form has no file in the field `file`")
            data, name = await upload.read(), upload.filename or "upload"
        else:
            data, name = await request.body(), "body"
        if not data:
            raise HTTPException(400, f"{name}: empty; send an image file")
        # Huge pixel dimensions are refused from the header alone, before anything is decoded.
        width, height = declared_size(data) or (0, 0)
        if width * height > self.max_pixels:
            raise HTTPException(
                413,
                f"{name}: {width}x{height} pixels is more than this server "
                f"takes ({self.max_pixels:,}); scale it down first",
            )
        async with self.budget.hold(width * height), self.at_once:
            return await run_in_threadpool(reader, data, name, width * height)


def create_app(
    checkpoint: str | os.PathLike,
    device: str = "cpu",
    max_upload: int = MAX_UPLOAD,
    max_pixels: int = MAX_PIXELS,
    readers: int | None = None,
    hosts: Sequence[str] | None = None,
) -> FastAPI:
    """The app for one checkpoint, its model loaded now and shared by every request.

    `readers`: processes that decode and prepare the pictures for /api/predict (`readers.py`;
    default: DEFAULT_READERS); 0 reads them on the server's own threads instead.
    `hosts`: the Host names it answers to (`allowed_hosts`; default: those of 127.0.0.1).
    """
    import torch  # noqa: F401  (once, with the app: never on an answer's path)

    from ..config import choose_device
    from ..reader import Reader

    if readers is None:
        readers = DEFAULT_READERS
    if readers < 0:
        raise ConfigError(f"--readers {readers}: must be 0 (read on the server's threads) or more")
    chosen = choose_device(device)
    reader = Reader.load(checkpoint, str(chosen))
    limit_arenas()
    pool = shared_readers(readers) if readers else None
    # Pictures read at once: one a reader process; on the server's own threads, one a core and at
    # least two (so that one large picture never holds up a drawing): more threads than cores only
    # take turns at Python's lock (under 16 clients the server spent 12.6 ms of CPU a request with
    # every request on its own thread, 9 ms with one a core).
    reading = Reading(reader, pool, max_pixels, readers or max(2, os.cpu_count() or 1))

    # FastAPIOffline: FastAPI whose /docs and /redoc pages serve their scripts from here, not a
    # CDN, so the API documentation works offline too.
    app = FastAPIOffline(
        title="lenet5",
        version=__version__,
        description="Draw a digit at /, or POST an image to /api/predict. The image is prepared "
        "as `lenet5 predict FILE` does (grayscale, ink made white on black, cropped, "
        "scaled to 20x20 and centred by mass in 28x28) and read by LeNet-5.",
    )
    app.add_middleware(BodyLimit, limit=max_upload)
    app.add_middleware(HostCheck, allowed=allowed_hosts() if hosts is None else hosts)  # runs first
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.state.model = reader.model
    app.state.reader = reader
    app.state.start_readers = pool.start if pool is not None else (lambda: None)
    app.state.close_readers = pool.close if pool is not None else (lambda: None)
    model_name, accuracy = describe(checkpoint)
    health = Health(
        status="ok",
        checkpoint=shown_file(checkpoint),
        name=model_name,
        test_accuracy=accuracy,
        device=str(chosen),
        mean=reader.mean,
        std=reader.std,
        max_upload_bytes=max_upload,
        max_pixels=max_pixels,
        version=__version__,
    )
    _routes(app, reading, health)

    @app.exception_handler(RequestValidationError)
    async def one_line(request: Request, exc: RequestValidationError) -> JSONResponse:
        # a query parameter that is no value it takes (?explain=maybe): one line, as every error here
        said = [f"{' '.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(said)}, status_code=422)

    return app


def _routes(app: FastAPI, reading: Reading, health: Health) -> None:
    """The page, its icon, and the API: /api/health, /api/predict, /api/number."""

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:  # browsers ask for it whatever the page links
        return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon")

    @app.get("/api/health", response_model=Health, summary="What is loaded")
    async def get_health() -> Health:  # async: on the event loop, never queued behind decoding
        return health

    @app.post(
        "/api/predict",
        response_model=Prediction,
        responses=ERRORS,
        openapi_extra=BODY_DOC,
        summary="Read the digit in an image",
    )
    async def post_predict(request: Request, explain: bool = False) -> Response:
        """An image file (PNG, JPEG, ...) as the multipart field `file` or as the raw body.
        `?explain=true` adds the why view: for the digit read and its two runners-up, each
        pixel's part in the digit's logit (integrated gradients from the blank picture)."""
        digit = await reading.read(request, reading.pixels)
        if explain:  # milliseconds of autograd: on a worker thread, never holding up the event loop
            return await run_in_threadpool(reading.prediction, digit, True)
        # The network runs here, on the event loop: tens of microseconds for one picture, less
        # than handing it to a thread and back would cost.
        return reading.prediction(digit)

    # POST /api/number: a picture of a whole number, read as `lenet5 predict FILE --number` does.
    # The same body rules, limits and pixel budget as /api/predict.
    @app.post(
        "/api/number",
        response_model=NumberReading,
        responses=ERRORS,
        openapi_extra=BODY_DOC,
        summary="Read the whole number in an image, digit by digit",
    )
    async def post_number(request: Request) -> NumberReading:
        """An image file (PNG, JPEG, ...) of a number, as the multipart field `file` or as the raw
        body: its digits left to right, each with its probability and box."""
        return await reading.read(request, reading.number)


def bind(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A listening socket, so a busy port is one clear error and port 0 can pick a free one."""
    if not 0 <= port <= 65535:  # getaddrinfo would quietly wrap 99999 round to 34463
        raise ConfigError(f"--port {port}: a TCP port is 1 to 65535 (0 picks a free one)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ConfigError(f"--host {host}: not an address this machine can listen on ({e})") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)  # connections queue from now on, even before the server loop runs
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"--host {host} --port {port}: cannot listen there ({e.strerror or e}); choose another --port"
        ) from None
    return sock


def _plain(status: int, detail: str) -> bytes:
    """A whole HTTP response that closes the connection, for answers given outside the app."""
    body = json.dumps({"detail": detail}).encode()
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


UVICORN_TESTED = ">=0.35,<0.56"  # the uvicorn releases GuardedH11 is tested with; pyproject pins them


def check_uvicorn(protocol: type = H11Protocol, cycle: type = RequestResponseCycle) -> None:
    """GuardedH11 builds on uvicorn's private H11Protocol: fail at once, in one line, if a uvicorn
    outside the tested range has changed what it relies on, rather than on some later request."""
    import uvicorn

    wanted = {  # the methods GuardedH11 calls or overrides, and the attributes it reads
        protocol: (
            {"connection_made", "data_received", "connection_lost", "send_400_response", "shutdown"},
            {"config", "conn", "cycle", "connections", "loop", "transport", "timeout_keep_alive_task"},
        ),
        cycle: (set(), {"disconnected", "response_complete", "message_event"}),
    }
    for cls, (methods, attributes) in wanted.items():
        code = getattr(getattr(cls, "__init__", None), "__code__", None)
        assigned = set(code.co_names) if code is not None else set()  # __init__ sets the attributes
        missing = {m for m in methods if not callable(getattr(cls, m, None))} | (attributes - assigned)
        if missing:
            raise Lenet5Error(
                f"uvicorn {uvicorn.__version__} changed {cls.__name__} (no "
                f"{', '.join(sorted(missing))}); lenet5 serve needs "
                f"pip install 'uvicorn{UVICORN_TESTED}'"
            )


class _Connection(h11.Connection):
    """h11's server side of a connection, remembering why it refused what the client sent (its
    error suggests the status: 431 for headers over the size limit)."""

    refusal: h11.RemoteProtocolError | None = None

    def next_event(self):
        try:
            return super().next_event()
        except h11.RemoteProtocolError as e:
            self.refusal = e
            raise


class GuardedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with deadlines for slow clients and a cap on connections.

    uvicorn times out idle keep-alive connections only; a client that connects and sends nothing,
    or trickles its headers or body, would hold its socket (a file descriptor) for good. Here each
    request must finish its headers within `header_timeout` seconds of the connection (or of the
    request's first byte) and its body within `body_timeout` seconds after them, else it gets a 408
    and is closed.

    At most `max_connections` are open, so that sockets stay below the process's file limit; a new
    one beyond it makes room rather than being turned away, so that a health check or a drawing
    gets in while slow clients hold every connection: the connection that has waited longest on
    its client (for a request's headers or body, or idle between requests) is told 408 and closed.
    Only when every connection has a request in the app is the newcomer answered 503. (uvicorn's
    own limit_concurrency answers 503 only once a request arrives, so silent sockets it never
    refuses.)

    An answer given here (408, 503, h11's 400 or 431) is followed by a lingering close: the server
    stops sending, then reads and drops what the client still sends for up to `linger` seconds
    before closing. Closing a socket with unread data in it resets the connection, and the client
    would lose the answer with it.
    """

    header_timeout = HEADER_TIMEOUT
    body_timeout = BODY_TIMEOUT
    max_connections = MAX_CONNECTIONS
    linger = LINGER
    _deadline: asyncio.TimerHandle | None = None
    # "headers" or "body": waiting on the client, against a deadline; None: the request is all in
    # (or none is begun after an answer); "closing": answered, dropping what still comes; "closed".
    _phase: str | None = None
    _since = 0.0  # when the phase began (loop time): the longest waiting is the first shed
    conn: _Connection  # h11's connection as __init__ makes it

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _Connection(h11.SERVER, self.config.h11_max_incomplete_event_size or MAX_HEADERS)

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._watch("headers")
        self._make_room()

    def data_received(self, data: bytes) -> None:
        if self._phase in ("closing", "closed"):
            return  # answered already: what the client still sends is dropped
        super().data_received(data)
        if self._phase in ("closing", "closed"):
            return  # refused just now (send_400_response)
        state = self.conn.their_state
        self._watch("headers" if state is h11.IDLE else "body" if state is h11.SEND_BODY else None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._watch("closed")
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """h11 refused the request (malformed, or headers over the size limit): say why."""
        error = self.conn.refusal
        if error is not None and error.error_status_hint == 431:
            limit = self.config.h11_max_incomplete_event_size or MAX_HEADERS
            self._refuse(431, f"request headers over {limit // 1024} KiB; send fewer or shorter ones")
        else:  # 400 even where h11 suggests 501 (a transfer coding it lacks): the client's to fix
            self._refuse(400, f"not a valid HTTP/1.1 request: {str(error or msg)[:100]}")

    def shutdown(self) -> None:
        if self._phase in ("closing", "closed"):
            self._close()
        else:
            super().shutdown()

    def _make_room(self) -> None:
        """Beyond max_connections: close one that is answered already, or shed the one waiting
        longest on its client, or, when every other one has a request in the app, refuse this one."""
        # The server's connections are all of this class (serve's protocol); uvicorn's types allow any
        # of its own protocols there.
        connections = cast("set[GuardedH11]", self.connections)
        others = [c for c in connections if c is not self and getattr(c, "_phase", None) != "closed"]
        if len(others) < self.max_connections:
            return
        answered = [c for c in others if c._phase == "closing"]
        if answered:
            min(answered, key=lambda c: c._since)._close()
            return
        waiting = [c for c in others if c._waiting()]
        if waiting:
            slowest = min(waiting, key=lambda c: c._since)
            what = slowest._phase or "next request"
            slowest._refuse(
                408,
                f"the server is full and this request's {what} was the slowest to come; send it again",
                quiet=True,
            )
            return
        self._refuse(503, "too many connections; try again shortly")

    def _waiting(self) -> bool:
        """Waiting on its client: for a request's headers or body, or idle after an answer."""
        return self._phase in ("headers", "body") or (
            self._phase is None and self.cycle is not None and self.cycle.response_complete
        )

    def _watch(self, phase: str | None) -> None:
        """Enter `phase` and start its deadline, unless in it already."""
        if phase == self._phase:
            return
        if self._deadline is not None:
            self._deadline.cancel()
        self._phase, self._deadline, self._since = phase, None, self.loop.time()
        timeout = {"headers": self.header_timeout, "body": self.body_timeout, "closing": self.linger}
        if phase in timeout and not self.transport.is_closing():
            expire = self._close if phase == "closing" else self._expire
            self._deadline = self.loop.call_later(timeout[phase], expire)

    def _expire(self) -> None:
        timeout = self.header_timeout if self._phase == "headers" else self.body_timeout
        self._refuse(408, f"the request {self._phase} took longer than {timeout:g} s", quiet=True)

    def _refuse(self, status: int, detail: str, quiet: bool = False) -> None:
        """Answer `status` and close (lingering). `quiet`: only a request begun and not yet answered
        is told why; a socket that sent nothing (a browser's spare connection) or sits idle after an
        answer is closed quietly, as uvicorn closes an idle keep-alive one."""
        if self.transport.is_closing() or self._phase in ("closing", "closed"):
            return
        # The app, if it is waiting for the body, hears a disconnect, and whatever it sends later
        # goes nowhere.
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
        begun = self.conn.their_state is not h11.IDLE or self.conn.trailing_data[0]
        if quiet and not (begun and self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE)):
            self._close()
            return
        self.transport.write(_plain(status, detail))
        self._watch("closing")
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the answer, then end of stream: the client reads it all
        self.transport.resume_reading()  # flow control may have paused reading a large body

    def _close(self) -> None:
        self._watch("closed")
        self.transport.close()


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, noting the signal that stopped it: uvicorn raises it again once it has
        shut down, but asyncio's own Ctrl-C handling can swallow that, and `lenet5 serve` must still
        end as interrupted (exit code 130), not as if it had finished."""

        signum = 0

        def handle_exit(self, sig, frame) -> None:
            self.signum = self.signum or sig
            super().handle_exit(sig, frame)

    return Server


def server(
    app: FastAPI,
    log_level: str = "info",
    header_timeout: float = HEADER_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
):
    """A uvicorn server for `app`; `.run(sockets=[bind(...)])` serves until Ctrl-C."""
    import uvicorn

    check_uvicorn()
    for flag, value in (
        ("--header-timeout", header_timeout),
        ("--body-timeout", body_timeout),
        ("--max-connections", max_connections),
    ):
        if not value > 0:
            raise ConfigError(f"{flag} {value:g}: must be more than 0")
    try:
        import resource

        files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if files != resource.RLIM_INFINITY:
            # Half the file limit for client sockets: the rest is for the model, libraries, logs.
            max_connections = max(1, min(max_connections, files // 2))
    except ImportError:  # Windows: no such limit to respect
        pass
    protocol = type(
        "Protocol",
        (GuardedH11,),
        dict(header_timeout=header_timeout, body_timeout=body_timeout, max_connections=max_connections),
    )
    return _server_class()(
        uvicorn.Config(
            app,
            log_level=log_level,
            timeout_graceful_shutdown=5,
            http=protocol,
            h11_max_incomplete_event_size=MAX_HEADERS,
        )
    )

"""The web demo's server: the drawing page at / and the JSON API it calls, as one FastAPI app.

POST /api/predict takes an image (a multipart upload in the field `file`, or the raw bytes as the
body) and answers with the digit, the ten probabilities and the 28x28 input the model saw. The
image goes through `images.load_digit`, the same preprocessing as `lenet5 predict FILE`.
GET /api/health says what is loaded; /docs and /openapi.json describe the API.

Bad requests get a 4xx and {"detail": reason}, never a 500: empty bodies (400), bodies over the
upload limit (413, checked before anything is parsed), too many pixels (413, read from the image
header before decoding), pictures that are not images or hold no digit (422). The model is loaded
once, when the app is made; requests share it read-only (eval mode, no gradients), which PyTorch
allows from many threads, and a semaphore bounds how many images are decoded at once so memory
stays bounded under load. fastapi, uvicorn, python-multipart and Pillow are the `web` extra.
"""

from __future__ import annotations

import io
import os
import socket
import threading
import warnings
from pathlib import Path

from .. import __version__
from ..errors import ConfigError, Lenet5Error

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from PIL import Image
    from pydantic import BaseModel, Field
    from starlette.concurrency import run_in_threadpool
    from fastapi_offline import FastAPIOffline
except ImportError as e:
    raise Lenet5Error(f"the web demo needs {e.name}: pip install 'lenet5[web]'") from None

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD = 2 * 1024 * 1024  # bytes per request body; a drawn digit is a PNG of a few KB
MAX_PIXELS = 16_000_000  # width x height; below images.MAX_PIXELS as a server decodes for anyone
MAX_DECODING = 4  # images decoded and classified at once; the rest wait their turn


class Prediction(BaseModel):
    digit: int = Field(description="the most probable digit, 0-9")
    probability: float = Field(description="its probability")
    probabilities: list[float] = Field(description="probability of each digit 0-9")
    image: list[list[int]] = Field(description="the 28x28 input the model saw, rows of 0-255, "
                                               "white ink on black")


class Health(BaseModel):
    status: str
    checkpoint: str
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


def create_app(checkpoint: str | os.PathLike, device: str = "cpu", max_upload: int = MAX_UPLOAD,
               max_pixels: int = MAX_PIXELS) -> FastAPI:
    """The app for one checkpoint, its model loaded now and shared by every request."""
    from ..checkpoint import load_model, normalization
    from ..config import choose_device
    from ..images import ImageError, load_digit
    from ..predict import classify

    device = choose_device(device)
    model, obj = load_model(checkpoint, device)
    mean, std = normalization(obj)
    gate = threading.BoundedSemaphore(MAX_DECODING)

    # FastAPIOffline: FastAPI whose /docs and /redoc pages serve their scripts from here, not a
    # CDN, so the API documentation works offline too.
    app = FastAPIOffline(
        title="lenet5", version=__version__,
        description="Draw a digit at /, or POST an image to /api/predict. The image is prepared "
                    "as `lenet5 predict FILE` does (grayscale, ink made white on black, cropped, "
                    "scaled to 20x20 and centred by mass in 28x28) and read by LeNet-5.")
    app.add_middleware(BodyLimit, limit=max_upload)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.state.model = model
    health = Health(status="ok", checkpoint=str(checkpoint), device=str(device), mean=mean, std=std,
                    max_upload_bytes=max_upload, max_pixels=max_pixels, version=__version__)

    def check_size(data: bytes, name: str) -> None:
        """Refuse huge pixel dimensions from the header alone, before anything is decoded."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                width, height = Image.open(io.BytesIO(data)).size
        except Image.DecompressionBombError:
            width, height = max_pixels + 1, 1
        except Exception:  # not an image Pillow knows: load_digit says so properly
            return
        if width * height > max_pixels:
            raise HTTPException(413, f"{name}: {width}x{height} pixels is more than this server "
                                     f"takes ({max_pixels:,}); scale it down first")

    def predict_bytes(data: bytes, name: str) -> Prediction:
        with gate:
            check_size(data, name)
            try:
                digit = load_digit(data, name)  # (28, 28) uint8
            except ImageError as e:
                raise HTTPException(422, str(e)) from None
            probs = classify(model, digit.unsqueeze(0), mean, std, device)[0]
        best = int(probs.argmax())
        return Prediction(digit=best, probability=float(probs[best]),
                          probabilities=[float(p) for p in probs], image=digit.tolist())

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/health", response_model=Health, summary="What is loaded")
    def get_health() -> Health:
        return health

    errors = {code: {"model": Problem, "description": text} for code, text in (
        (400, "empty body, or a form without the field `file`"),
        (413, "body over the upload limit, or an image with too many pixels"),
        (422, "not a readable image, or no digit in it"))}
    body_doc = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary"}}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}}}}}

    @app.post("/api/predict", response_model=Prediction, responses=errors, openapi_extra=body_doc,
              summary="Read the digit in an image")
    async def post_predict(request: Request) -> Prediction:
        """An image file (PNG, JPEG, ...) as the multipart field `file` or as the raw body."""
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
        return await run_in_threadpool(predict_bytes, data, name)

    return app


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
        raise ConfigError(f"--host {host} --port {port}: cannot listen there "
                          f"({e.strerror or e}); choose another --port") from None
    return sock


def server(app: FastAPI, log_level: str = "info"):
    """A uvicorn server for `app`; `.run(sockets=[bind(...)])` serves until Ctrl-C."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))

"""People's digit pictures -> MNIST-style 28x28 inputs, made the way MNIST itself was made.

Grayscale; invert when the background is light; find the ink; scale it to fit a 20x20 box keeping
its aspect ratio (anti-aliased); place it in a 28x28 field with its centre of mass at the centre.
Pillow is imported inside the functions (the `images` extra).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

from .errors import Lenet5Error

MAX_PIXELS = 40_000_000  # larger images are refused (decompression bombs)
MAX_BYTES = 50 * 1024 * 1024


class ImageError(Lenet5Error):
    """An input picture cannot be turned into a digit."""


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise Lenet5Error("reading image files needs Pillow: pip install 'lenet5[images]'") from None
    return Image


def open_image(source: str | os.PathLike | bytes, name: str | None = None):
    """A decoded, single-frame Pillow image in mode 'L' (ink and paper as in the picture)."""
    Image = _pil()
    from PIL import UnidentifiedImageError

    name = name or (str(source) if not isinstance(source, bytes) else "image")
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{name}: no such file")
        if path.stat().st_size > MAX_BYTES:
            raise ImageError(f"{name}: file is larger than {MAX_BYTES // 2**20} MB")
        data = path.read_bytes()
    if not data:
        raise ImageError(f"{name}: file is empty")
    if len(data) > MAX_BYTES:
        raise ImageError(f"{name}: image is larger than {MAX_BYTES // 2**20} MB")
    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_PIXELS:
            raise ImageError(f"{name}: {img.width}x{img.height} pixels is too large "
                             f"(limit {MAX_PIXELS // 1_000_000} megapixels); scale it down first")
        img.seek(0)  # animated: the first frame
        img.load()
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError,
            EOFError) as e:
        raise ImageError(f"{name}: not a readable image ({str(e).splitlines()[0][:120] or type(e).__name__})") from None
    return _to_gray(img)


def _to_gray(img):
    """Mode 'L', compositing transparency on white and scaling 16-bit and float images down."""
    Image = _pil()
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        hi = a.max()
        peak = 65535.0 if img.mode.startswith("I;16") or hi > 255 else 255.0
        if img.mode == "F" and hi <= 1.0:
            peak = 1.0
        return Image.fromarray(np.clip(a / peak * 255.0, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("L")


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold for values in [0, 1]."""
    hist, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    p = hist.astype(np.float64) / max(hist.sum(), 1)
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    between = (mu[-1] * omega - mu) ** 2 / np.maximum(omega * (1 - omega), 1e-12)
    return float(edges[int(np.argmax(between)) + 1])


def prepare(img, name: str = "image") -> torch.Tensor:
    """A Pillow image (any mode) -> uint8 tensor (28, 28): white ink on black, MNIST-style."""
    Image = _pil()
    from PIL import ImageFilter

    gray = _to_gray(img) if img.mode != "L" else img
    # Work at a modest size: enough detail, bounded cost for huge photos.
    if max(gray.size) > 512:
        scale = 512 / max(gray.size)
        gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))),
                           Image.LANCZOS)
    a = np.asarray(gray.filter(ImageFilter.MedianFilter(3)) if min(gray.size) >= 3 else gray,
                   dtype=np.float64) / 255.0
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    if np.median(border) > 0.5:  # light paper: make the ink bright, as in MNIST
        a = 1.0 - a
        border = 1.0 - border
    background = np.median(border)
    ink = np.clip(a - background, 0, None)
    if ink.max() < 0.15:
        raise ImageError(f"{name}: no ink found (the picture is blank or has almost no contrast)")
    ink = ink / ink.max()
    mask = ink > max(_otsu(ink), 0.2)
    # Ignore thin specks: keep rows/columns holding a real share of the ink.
    rows, cols = mask.sum(1), mask.sum(0)
    r = np.nonzero(rows >= max(1, 0.01 * rows.max()))[0]
    c = np.nonzero(cols >= max(1, 0.01 * cols.max()))[0]
    if len(r) == 0 or len(c) == 0:
        raise ImageError(f"{name}: no ink found")
    top, bottom, left, right = r[0], r[-1] + 1, c[0], c[-1] + 1
    crop = np.where(ink[top:bottom, left:right] > 0.1, ink[top:bottom, left:right], 0.0)
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    digit = Image.fromarray((crop * 255).astype(np.uint8), "L").resize((new_w, new_h), Image.LANCZOS)
    d = np.asarray(digit, dtype=np.float64)
    total = d.sum()
    if total <= 0:
        raise ImageError(f"{name}: no ink found")
    ys, xs = np.indices(d.shape)
    cy, cx = (ys * d).sum() / total, (xs * d).sum() / total
    field = np.zeros((28, 28), dtype=np.float64)
    oy, ox = int(round(14 - cy)), int(round(14 - cx))  # MNIST's centre of mass sits at (14, 14)
    oy, ox = min(max(oy, 0), 28 - new_h), min(max(ox, 0), 28 - new_w)
    field[oy:oy + new_h, ox:ox + new_w] = d
    return torch.from_numpy(np.clip(field, 0, 255).astype(np.uint8))


def load_digit(source: str | os.PathLike | bytes, name: str | None = None) -> torch.Tensor:
    """Read an image file (or its bytes) and make it an MNIST-style uint8 (28, 28) input."""
    name = name or (str(source) if not isinstance(source, bytes) else "image")
    return prepare(open_image(source, name), name)

"""Pictures that are not digits, made differently from the ones training sees (outliers.py), to
measure "not a digit" on what the reader never met: other fonts (the system's DejaVu and
matplotlib's Computer Modern and STIX, never Pillow's own), letters bent as a hand would bend
them, Bezier scribbles rather than random walks, other shapes, noise of other kinds, two test
digits touching in one box. `bench/novelty.py` and the tests use it.

Left out on purpose, and reported apart as `lookalikes`: what a digit may honestly look like (O
and 0, l and 1, S and 5, Z and 2, B and 8, g and 9, b and 6, a round circle). A reader that calls
an O "0" reads as a person would.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

# Letters and signs that are no digit in any hand (the same rule as training's, other fonts)
LETTERS = "ACEFHKLMNPRUVWXYacefhkmnprtuvwxy#%@*+=<>^"
LOOKALIKES = "OoDQIlij|!/JZzSs$BbGgqT"
KINDS = ("letters", "scribbles", "shapes", "noise", "pairs")


def fonts() -> list[str]:
    """Font files other than Pillow's own: the system's DejaVu and matplotlib's bundled fonts."""
    found = sorted(str(p) for p in Path("/usr/share/fonts").rglob("*.ttf")) if Path("/usr/share/fonts").is_dir() else []
    try:
        import matplotlib

        mpl = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        found += sorted(str(p) for p in mpl.glob("*.ttf")
                        if p.name.startswith(("cmr", "cmss", "cmti", "cmb", "STIXGeneral", "DejaVuSerif")))
    except ImportError:
        pass
    return [f for f in found if "Math" not in f and "Siz" not in f and "NonUni" not in f] or []


def _letter(rng, chars: str, font_files: list[str]) -> np.ndarray:
    font = (ImageFont.truetype(font_files[rng.integers(len(font_files))], int(rng.integers(70, 120)))
            if font_files else ImageFont.load_default(size=int(rng.integers(70, 120))))
    img = Image.new("L", (180, 180))
    ImageDraw.Draw(img).text((30, 10), chars[rng.integers(len(chars))], fill=255, font=font)
    return _bend(np.asarray(img), rng)


def _bend(canvas: np.ndarray, rng) -> np.ndarray:
    """A hand's unevenness: a smooth random displacement of a few percent of the size."""
    from scipy import ndimage

    h, w = canvas.shape
    dy, dx = (ndimage.zoom(rng.normal(0, 0.03 * h, (3, 3)), (h / 3, w / 3), order=1)[:h, :w] for _ in range(2))
    yy, xx = np.indices((h, w))
    return ndimage.map_coordinates(canvas.astype(float), [yy + dy, xx + dx], order=1).astype(np.uint8)


def _bezier(rng) -> np.ndarray:
    img = Image.new("L", (160, 160))
    d = ImageDraw.Draw(img)
    pts = rng.uniform(20, 140, (int(rng.integers(4, 8)) * 3 + 1, 2))
    width = int(rng.integers(3, 8))
    for k in range(0, len(pts) - 3, 3):
        p0, p1, p2, p3 = pts[k:k + 4]
        t = np.linspace(0, 1, 40)[:, None]
        curve = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3
        d.line([tuple(p) for p in curve], fill=255, width=width, joint="curve")
    return np.asarray(img)


def _shape(rng) -> np.ndarray:
    img = Image.new("L", (160, 160))
    d = ImageDraw.Draw(img)
    w = int(rng.integers(3, 8))
    c, r = 80.0, float(rng.uniform(40, 60))
    k = int(rng.integers(7))
    if k == 0:  # a heart
        t = np.linspace(0, 2 * math.pi, 80)
        pts = np.stack([16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))], 1)
        d.line([tuple(c + r / 17 * p) for p in pts], fill=255, width=w)
    elif k == 1:  # a crescent
        d.ellipse([c - r, c - r, c + r, c + r], fill=255)
        d.ellipse([c - r * 0.5, c - r * 1.1, c + r * 1.4, c + r * 0.9], fill=0)
    elif k == 2:  # a zigzag
        xs = np.linspace(c - r, c + r, int(rng.integers(5, 9)))
        d.line([(x, c + (r * 0.4 if i % 2 else -r * 0.4)) for i, x in enumerate(xs)], fill=255, width=w)
    elif k == 3:  # a flower: a ring of petals
        for a in np.linspace(0, 2 * math.pi, int(rng.integers(5, 8)), endpoint=False):
            px, py = c + r * 0.6 * math.cos(a), c + r * 0.6 * math.sin(a)
            d.ellipse([px - r * 0.35, py - r * 0.35, px + r * 0.35, py + r * 0.35], outline=255, width=w)
    elif k == 4:  # a lightning bolt
        pts = [(c - r * 0.2, c - r), (c + r * 0.3, c - r * 0.1), (c - r * 0.1, c), (c + r * 0.3, c + r)]
        d.line(pts + [(c - r * 0.4, c + r * 0.1), (c, c)], fill=255, width=w)
    elif k == 5:  # a grid of boxes
        for i in range(3):
            for j in range(3):
                x, y = c - r + i * r * 0.7, c - r + j * r * 0.7
                d.rectangle([x, y, x + r * 0.5, y + r * 0.5], outline=255, width=max(2, w // 2))
    else:  # a house
        d.polygon([(c - r, c), (c, c - r), (c + r, c), (c + r * 0.8, c + r), (c - r * 0.8, c + r)],
                  outline=255, width=w)
    return np.asarray(img)


def _noise(rng) -> np.ndarray:
    k = int(rng.integers(3))
    if k == 0:
        return (rng.random((28, 28)) * 255).astype(np.uint8)
    if k == 1:
        return np.clip(rng.normal(128, 60, (28, 28)), 0, 255).astype(np.uint8)
    return ((rng.random((28, 28)) < rng.uniform(0.1, 0.5)) * 255).astype(np.uint8)


def _pair(rng, digits: np.ndarray) -> np.ndarray:
    a, b = digits[rng.integers(len(digits), size=2)]
    cols_a, cols_b = np.nonzero(a.max(0) > 30)[0], np.nonzero(b.max(0) > 30)[0]
    a, b = a[:, cols_a[0]:cols_a[-1] + 1], b[:, cols_b[0]:cols_b[-1] + 1]
    at = a.shape[1] - int(rng.integers(0, 3))  # touching or overlapping a little
    canvas = np.zeros((28, max(at + b.shape[1], a.shape[1])), np.uint8)
    canvas[:, :a.shape[1]] = a
    np.maximum(canvas[:, at:at + b.shape[1]], b, out=canvas[:, at:at + b.shape[1]])
    return canvas


def make(n: int, seed: int, digits: np.ndarray, kinds=KINDS) -> tuple[torch.Tensor, list[str]]:
    """`n` MNIST-style non-digits, uint8 (n, 28, 28), and each one's kind. `digits`: MNIST test
    digits (uint8 (N, 28, 28)) to pair."""
    from lenet5.outliers import mnist_style

    rng = np.random.default_rng(seed)
    font_files = fonts()
    out, names = [], []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if kind in ("letters", "lookalikes"):
            canvas = np.zeros((1, 1), np.uint8)
            while canvas.max() <= 30:  # a letter can land off its canvas: draw another
                canvas = _letter(rng, LETTERS if kind == "letters" else LOOKALIKES, font_files)
        elif kind == "scribbles":
            canvas = _bezier(rng)
        elif kind == "shapes":
            canvas = _shape(rng)
        elif kind == "noise":
            out.append(_noise(rng))
            names.append(kind)
            continue
        else:
            canvas = _pair(rng, digits)
        out.append(mnist_style(canvas))
        names.append(kind)
    return torch.from_numpy(np.stack(out)), names


def photos(n: int, seed: int, digits: np.ndarray, kinds=("letters", "scribbles", "shapes")) -> list[bytes]:
    """`n` non-digits drawn on paper and photographed (people.photograph): JPEG bytes."""
    from people import photograph

    rng = np.random.default_rng(seed)
    font_files = fonts()
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        canvas = np.zeros(1)
        while canvas.max() <= 0.1:  # a letter can land off its canvas: draw another
            canvas = (_letter(rng, LETTERS, font_files) if kind == "letters" else
                      _bezier(rng) if kind == "scribbles" else _shape(rng)).astype(np.float64) / 255
        ys, xs = np.nonzero(canvas > 0.1)
        canvas = canvas[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        h, w = canvas.shape
        out.append(photograph(np.pad(canvas, ((h // 2, h // 2), (w // 2, w // 2))), rng, "JPEG"))
    return out

"""MNIST test digits rendered the way people hand their own digits over, for predict's tests.

Dark ink on light paper, scaled up, off-centre on a larger sheet, slightly uneven paper and sensor
noise, saved as JPEG (or another format). `bench/rendered_digits.py` uses the same renderer to
measure the whole test set.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw


def render(digit: np.ndarray, rng: np.random.Generator, fmt: str = "JPEG", frame: bool = False) -> bytes:
    """One MNIST digit (28, 28) uint8, white on black, as the bytes of a person's picture of it."""
    scale = int(rng.integers(3, 9))  # 84 to 224 px tall
    size = 28 * scale
    big = Image.fromarray(digit, "L").resize((size, size), Image.BICUBIC)
    ink = np.asarray(big, dtype=np.float64) / 255.0  # 1 where the pen was
    # A sheet 1.5-3x the digit, the digit anywhere on it.
    w, h = (int(size * rng.uniform(1.5, 3.0)) for _ in range(2))
    x0, y0 = int(rng.integers(0, w - size + 1)), int(rng.integers(0, h - size + 1))
    coverage = np.zeros((h, w))
    coverage[y0:y0 + size, x0:x0 + size] = ink
    return photograph(coverage, rng, fmt, frame, scale)


def photograph(coverage: np.ndarray, rng: np.random.Generator, fmt: str = "JPEG", frame: bool = False,
               scale: int = 4) -> bytes:
    """Ink coverage (h, w) in [0, 1] as the bytes of a photo of it: pen on paper, uneven light, noise."""
    h, w = coverage.shape
    paper = np.array([rng.uniform(215, 250), rng.uniform(210, 250), rng.uniform(200, 245)])
    pen = np.array([rng.uniform(0, 60), rng.uniform(0, 60), rng.uniform(10, 110)])  # black to blue
    # Light falling across the sheet: up to 15 % darker on one side.
    gx, gy = np.meshgrid(np.linspace(0, 1, w), np.linspace(0, 1, h))
    light = 1.0 - rng.uniform(0, 0.15) * (gx if rng.random() < 0.5 else gy)
    rgb = (paper * (1 - coverage[..., None]) + pen * coverage[..., None]) * light[..., None]
    rgb += rng.normal(0, rng.uniform(2, 8), rgb.shape)  # sensor noise
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    if frame:  # the edge of the sheet or a ruled box around the digit
        ImageDraw.Draw(img).rectangle([2, 2, w - 3, h - 3], outline=(30, 30, 30), width=max(2, scale))
    out = io.BytesIO()
    if fmt == "JPEG":
        img.save(out, "JPEG", quality=int(rng.integers(70, 95)))
    else:
        img.save(out, fmt)
    return out.getvalue()


def _ink_box(digit: np.ndarray) -> np.ndarray:
    """The digit (28, 28) cropped to its ink, as coverage in [0, 1]."""
    ys, xs = np.nonzero(digit > 30)
    return digit[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float64) / 255.0


def write_number(digits: list[np.ndarray], rng: np.random.Generator, touching: bool = False,
                 strokes: bool = False, heights: bool = False, fmt: str = "JPEG") -> tuple[bytes, list[int]]:
    """MNIST digits (28, 28) written side by side as a number on paper and photographed: JPEG bytes,
    and each digit's left edge in the photo's pixels.

    Apart: a gap of 3-6 MNIST pixels between digits. touching: each digit moved left until its ink
    meets its neighbour's (in the same or a diagonal pixel somewhere; nowhere further left). strokes: each digit in two strokes, its
    top third lifted 2 MNIST pixels off the rest (as a 5's top bar often is).
    heights: each digit scaled to 55-100 % of the others' height, standing on the same line.
    """
    pieces = []
    for d in digits:
        c = _ink_box(d)
        if heights:
            f = rng.uniform(0.55, 1.0)
            c = np.asarray(Image.fromarray((c * 255).astype(np.uint8)).resize(
                (max(2, round(c.shape[1] * f)), max(2, round(c.shape[0] * f))), Image.BILINEAR)) / 255.0
        if strokes and c.shape[0] >= 12:  # the top third lifted off the rest, none of the ink lost
            y = c.shape[0] // 3
            c = np.vstack([c[:y], np.zeros((2, c.shape[1])), c[y:]])
        pieces.append(c)
    tall = max(c.shape[0] for c in pieces)
    canvas = np.zeros((tall, sum(c.shape[1] for c in pieces) + 8 * len(pieces)))
    x, lefts = 0, []
    for n, c in enumerate(pieces):
        top = tall - c.shape[0]  # on a line
        if n and touching:
            # As far left as it goes with its ink meeting the ink before it and nowhere crossing
            # it: in each of its rows, at most up to the last inked column of the rows around.
            right = np.array([np.nonzero(r > 0.1)[0].max() if r.max() > 0.1 else -1 for r in canvas])
            reach = np.maximum.reduce([np.r_[-1, right[:-1]], right, np.r_[right[1:], -1]])
            x = max(int(reach[top + y]) - int(np.nonzero(c[y] > 0.1)[0].min())
                    for y in range(c.shape[0]) if c[y].max() > 0.1)
        elif n:
            x += int(rng.integers(3, 7))
        region = canvas[top:top + c.shape[0], x:x + c.shape[1]]
        np.maximum(region, c, out=region)
        lefts.append(x)
        x += c.shape[1]
    canvas = canvas[:, :int(np.nonzero(canvas.max(0) > 0)[0].max()) + 1]
    scale = int(rng.integers(3, 7))
    big = np.asarray(Image.fromarray((canvas * 255).astype(np.uint8)).resize(
        (canvas.shape[1] * scale, canvas.shape[0] * scale), Image.BICUBIC), dtype=np.float64) / 255.0
    mx, my = (int(tall * scale * rng.uniform(0.3, 0.8)) for _ in range(2))
    coverage = np.pad(big, ((my, my), (mx, mx)))
    return photograph(coverage, rng, fmt, scale=scale), [mx + scale * v for v in lefts]

"""Pictures that are not digits, made for training: what the reader learns to call "not a digit".

Outlier exposure (Hendrycks et al., 2019): beside each batch of digits, a few pictures that are
no digit at all are trained towards equal probabilities for all ten digits, so that the network's
highest probability is low for anything unlike a digit. What they are made of:

    letters     letters and signs in Pillow's own font (the one font every Pillow has, so a run
                makes the same pictures on every machine), in random sizes, weights, slants and turns;
                never the ones a digit may honestly look like (O, I, l, S, Z, B, g, q, ...)
    scribbles   a pen wandering on a smooth random walk
    shapes      ellipses, boxes, triangles, stars, polygons, hatching, blobs, faces, arrows
    specks      scattered dots and blotches
    pairs       two training digits side by side in one box: a number is not a digit, and the
                numbers reader relies on hearing so when digits touch

Each is drawn on a 64x64 canvas and made MNIST-style as people's pictures are (its ink fitted in
20x20, centred by mass in 28x28). The set is drawn from the run's seed, so a resumed run trains on
the same pictures. Those the reader is *measured* on are made elsewhere, differently (other fonts,
other strokes and shapes, photographed: tests/nondigits.py), and never trained on.
"""

from __future__ import annotations

import math

import numpy as np
import torch

CANVAS = 64
# Letters and signs that are not digits in any hand. Left out: those a digit can honestly be
# written like (O o Q D for 0, I l i j J | ! / for 1, Z z for 2, S s $ for 5, b G for 6, T for 7,
# B & for 8, g q for 9; ? for 2 or 7; brackets for 1) and marks too small to stand alone.
LETTERS = "ACEFHKLMNPRUVWXYacefhkmnprtuvwxy#%@*+=<>^"
KINDS = ("letters", "scribbles", "shapes", "specks", "pairs")
SHARES = (0.4, 0.15, 0.2, 0.05, 0.2)  # of the set, by kind (pairs: only with digits to pair)


def make(n: int, seed: int, digits: torch.Tensor | None = None) -> torch.Tensor:
    """`n` non-digit pictures, uint8 (n, 28, 28), white ink on black; the same for the same seed.

    `digits` (uint8 (N, 28, 28)): training digits to make pairs of; none, no pairs."""
    rng = np.random.default_rng(seed)
    shares = np.array(SHARES if digits is not None and len(digits) else SHARES[:-1] + (0.0,))
    kinds = rng.choice(len(KINDS), size=n, p=shares / shares.sum())
    font = _font_maker()
    pool = digits.numpy() if digits is not None else None
    out = np.zeros((n, 28, 28), np.uint8)
    for i, k in enumerate(kinds):
        for _ in range(10):  # a drawing can come out empty (a letter turned off the canvas)
            canvas = _DRAW[KINDS[k]](rng, font, pool)
            if canvas.max() > 0:
                out[i] = mnist_style(canvas)
                break
    return torch.from_numpy(out)


def mnist_style(canvas: np.ndarray) -> np.ndarray:
    """Ink (h, w) uint8 -> (28, 28): fitted in 20x20 keeping its aspect, centred by mass."""
    from PIL import Image

    ys, xs = np.nonzero(canvas > 20)
    if not len(ys):
        return np.zeros((28, 28), np.uint8)
    crop = canvas[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = crop.shape
    scale = 20.0 / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS), np.float64)
    total = small.sum()
    if total <= 0:
        return np.zeros((28, 28), np.uint8)
    yy, xx = np.indices(small.shape)
    oy = min(max(int(round(14 - (yy * small).sum() / total)), 0), 28 - small.shape[0])
    ox = min(max(int(round(14 - (xx * small).sum() / total)), 0), 28 - small.shape[1])
    field = np.zeros((28, 28))
    field[oy : oy + small.shape[0], ox : ox + small.shape[1]] = small
    return np.clip(field, 0, 255).astype(np.uint8)


def _font_maker():
    """size -> Pillow's own scalable font, or None where Pillow was built without FreeType."""
    from PIL import ImageFont

    try:
        ImageFont.load_default(size=20).getbbox("A")
    except (AttributeError, TypeError, OSError, ImportError):
        return None
    return lambda size: ImageFont.load_default(size=size)


def _canvas():
    from PIL import Image, ImageDraw

    img = Image.new("L", (CANVAS, CANVAS))
    return img, ImageDraw.Draw(img)


def _letter(rng, font, pool) -> np.ndarray:
    from PIL import Image

    if font is None:
        return _shape(rng, font, pool)
    big = Image.new("L", (128, 128))
    from PIL import ImageDraw

    size = int(rng.integers(50, 90))
    ImageDraw.Draw(big).text(
        (20, 10),
        LETTERS[rng.integers(len(LETTERS))],
        fill=255,
        font=font(size),
        stroke_width=int(rng.integers(0, 4)),
        stroke_fill=255,
    )
    shear, turn = rng.uniform(-0.35, 0.35), rng.uniform(-12, 12)
    big = big.transform(
        big.size, Image.Transform.AFFINE, (1, shear, -shear * 64, 0, 1, 0), Image.Resampling.BILINEAR
    )
    return np.asarray(big.rotate(turn, Image.Resampling.BILINEAR))


def _walk(rng, steps: int, start, spread: float):
    p, v, pts = np.array(start, float), rng.normal(0, 1, 2), []
    for _ in range(steps):
        v = 0.75 * v + rng.normal(0, spread, 2)
        p = np.clip(p + v, 4, CANVAS - 5)
        pts.append(tuple(p))
    return pts


def _scribble(rng, font, pool) -> np.ndarray:
    img, d = _canvas()
    d.line(
        _walk(rng, int(rng.integers(30, 70)), rng.uniform(16, 48, 2), 3.0),
        fill=255,
        width=int(rng.integers(2, 6)),
        joint="curve",
    )
    return np.asarray(img)


def _shape(rng, font, pool) -> np.ndarray:
    img, d = _canvas()
    w = int(rng.integers(2, 6))
    cx, cy = rng.uniform(26, 38, 2)
    r = rng.uniform(14, 26)
    k = int(rng.integers(9))
    if k == 0:  # an ellipse, never round enough to be a 0: wider than tall
        d.ellipse(
            [cx - r, cy - r * rng.uniform(0.3, 0.6), cx + r, cy + r * rng.uniform(0.3, 0.6)],
            outline=255,
            width=w,
        )
    elif k == 1:
        d.rectangle([cx - r, cy - r * rng.uniform(0.4, 1), cx + r, cy + r], outline=255, width=w)
    elif k in (2, 3):  # a triangle, or a polygon of 5 to 8 sides
        sides, a = (3 if k == 2 else int(rng.integers(5, 9))), rng.uniform(0, 2 * math.pi)
        d.polygon(
            [
                (
                    cx + r * math.cos(a + 2 * math.pi * i / sides),
                    cy + r * math.sin(a + 2 * math.pi * i / sides),
                )
                for i in range(sides)
            ],
            outline=255,
            width=w,
        )
    elif k == 4:  # a star
        pts = [
            (
                cx + (r if i % 2 == 0 else r * 0.45) * math.cos(i * math.pi / 5),
                cy + (r if i % 2 == 0 else r * 0.45) * math.sin(i * math.pi / 5),
            )
            for i in range(11)
        ]
        d.line(pts, fill=255, width=w)
    elif k == 5:  # hatching
        for i in range(int(rng.integers(3, 6))):
            x = 10 + i * 11
            d.line([(x, 8), (x + rng.uniform(-8, 8), 56)], fill=255, width=w)
            d.line([(8, x), (56, x + rng.uniform(-8, 8))], fill=255, width=w)
    elif k == 6:  # a filled blob
        d.ellipse([cx - r, cy - r * rng.uniform(0.5, 1), cx + r, cy + r], fill=255)
    elif k == 7:  # a face
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=255, width=w)
        for side in (-1, 1):
            d.ellipse(
                [cx + side * r * 0.4 - 2, cy - r * 0.35 - 2, cx + side * r * 0.4 + 2, cy - r * 0.35 + 2],
                fill=255,
            )
        d.arc([cx - r * 0.55, cy - r * 0.3, cx + r * 0.55, cy + r * 0.6], 20, 160, fill=255, width=w)
    else:  # an arrow
        a = rng.uniform(0, 2 * math.pi)
        tip = (cx + r * math.cos(a), cy + r * math.sin(a))
        d.line([(cx - r * math.cos(a), cy - r * math.sin(a)), tip], fill=255, width=w)
        for s in (-0.5, 0.5):
            d.line(
                [tip, (tip[0] - 0.5 * r * math.cos(a + s), tip[1] - 0.5 * r * math.sin(a + s))],
                fill=255,
                width=w,
            )
    return np.asarray(img)


def _specks(rng, font, pool) -> np.ndarray:
    img, d = _canvas()
    for _ in range(int(rng.integers(6, 40))):
        x, y = rng.uniform(4, 60, 2)
        s = rng.uniform(1, 4)
        d.ellipse([x - s, y - s, x + s, y + s], fill=255)
    return np.asarray(img)


def _pair(rng, font, pool) -> np.ndarray:
    a, b = (_columns(d) for d in pool[rng.integers(len(pool), size=2)])
    gap = int(rng.integers(-2, 4))  # overlapping a little, touching, or apart
    at = a.shape[1] + gap
    canvas = np.zeros((28, max(at + b.shape[1], a.shape[1])), np.uint8)
    canvas[:, : a.shape[1]] = a
    right = canvas[:, at : at + b.shape[1]]
    np.maximum(right, b, out=right)
    return canvas


def _columns(digit: np.ndarray) -> np.ndarray:
    cols = np.nonzero(digit.max(0) > 20)[0]
    return digit[:, cols[0] : cols[-1] + 1] if len(cols) else digit


_DRAW = {"letters": _letter, "scribbles": _scribble, "shapes": _shape, "specks": _specks, "pairs": _pair}

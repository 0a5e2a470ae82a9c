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

"""Whatever a person hands the reader -> uint8 MNIST-style pixels (N, 28, 28).

    a file path or its bytes    prepared as a picture (images.py)
    a PIL image                 prepared as a picture
    (28, 28) or (N, 28, 28)     MNIST-style already: white ink on black, uint8 0-255 or floats
                                (in [0, 1], or 0-255 when larger), numpy or torch
    (H, W), (H, W, 1|3|4)       any other size: a picture, prepared like a file
    a list or tuple of those    one input each

Anything else is one line naming what it got and what it takes (never a traceback), and arrays of
any length are converted in bounded chunks, so memory follows the answer, not a float copy.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import Lenet5Error

CHUNK = 4096  # images converted at once
TAKES = "give a file path, a PIL image, or pixels as (28, 28), (N, 28, 28), (H, W) or (H, W, 3)"


def pixels_of(x) -> tuple[np.ndarray, bool, list[str]]:
    """(pixels uint8 (N, 28, 28), whether `x` was one input, and for each input the reason it
    holds no digit ("" where it may): a blank picture is an answer, not an error)."""
    if isinstance(x, (list, tuple)):
        if not x:
            raise Lenet5Error("predict: an empty list: give at least one picture")
        read = [_one(item) for item in x]
        return np.stack([p for p, _ in read]), False, [r for _, r in read]
    a = _array(x)
    if a is not None and a.ndim == 3 and a.shape[1:] == (28, 28):
        if len(a) == 0:
            raise Lenet5Error("predict: an array of no images (0, 28, 28): give at least one")
        return _uint8(a), False, [""] * len(a)
    pixels, reason = _one(x)
    return pixels[None], True, [reason]


def many(x):
    """`x` itself when it is an (N, 28, 28) array or tensor of MNIST-style images, else None."""
    shape = getattr(x, "shape", None)
    if isinstance(x, (list, tuple)) or shape is None or len(shape) != 3 or tuple(shape[1:]) != (28, 28):
        return None
    return x


def _one(x) -> tuple[np.ndarray, str]:
    from . import images

    try:
        if isinstance(x, (str, os.PathLike)):
            return images.load_pixels(Path(x), str(x)), ""
        if isinstance(x, (bytes, bytearray, memoryview)):
            return images.load_pixels(bytes(x), "bytes"), ""
        a = _array(x)
        if a is None:
            if _is_pil(x):
                return images.prepare_pixels(_pil_checked(x), "image"), ""
            raise Lenet5Error(f"predict: cannot read a {type(x).__name__}: {TAKES}")
        if a.shape == (28, 28):
            return _uint8(a[None])[0], ""
        if a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (1, 3, 4)):
            if min(a.shape[:2]) == 0:
                raise Lenet5Error(f"predict: an empty picture {a.shape}: {TAKES}")
            from PIL import Image

            pixels = _uint8(a[None])[0]
            img = Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels)
            return images.prepare_pixels(img, "array"), ""
        raise Lenet5Error(f"predict: an array of shape {a.shape}: {TAKES}")
    except images.NoDigit as e:
        return np.zeros((28, 28), np.uint8), e.reason


def _is_pil(x) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        return False
    return isinstance(x, Image.Image)


def _pil_checked(img):
    """A PIL image the preparation can take: open, not empty, in a mode that converts to gray."""
    if min(img.size) == 0:
        raise Lenet5Error(f"predict: an empty image ({img.width}x{img.height} pixels)")
    try:
        img.load()
    except (ValueError, OSError) as e:  # closed, or its file gone
        raise Lenet5Error(
            f"predict: the PIL image cannot be read ({str(e)[:80] or type(e).__name__}); "
            "give it open, or its file"
        ) from None
    if img.mode in ("LAB", "HSV", "YCbCr", "CMYK") or img.mode.startswith(("I;16", "BGR")):
        try:
            img = img.convert("RGB") if img.mode in ("LAB", "HSV", "YCbCr", "CMYK") else img.convert("I")
        except (ValueError, OSError):
            raise Lenet5Error(
                f"predict: cannot read a PIL image in mode {img.mode}; convert it to 'L' or 'RGB' first"
            ) from None
    return img


def _array(x) -> np.ndarray | None:
    """x as a numpy array (torch tensors too), or None when it is neither; refused with one line
    when it is a tensor or array of a kind no picture is (sparse, nested, meta, strings, objects)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None  # type: ignore[assignment]  # None marks torch missing; a module to mypy
    if torch is not None and isinstance(x, torch.Tensor):
        if x.is_nested or x.layout != torch.strided or x.device.type == "meta":
            kind = "nested" if x.is_nested else ("meta" if x.device.type == "meta" else str(x.layout))
            raise Lenet5Error(f"predict: a {kind} tensor: give a dense tensor of pixels")
        if (
            x.is_complex()
            or x.dtype == torch.bool
            or not (
                x.is_floating_point()
                or x.dtype in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
            )
        ):
            raise Lenet5Error(f"predict: a tensor of {x.dtype}: give uint8 or floating point pixels")
        return (
            x.detach().cpu().float().numpy()
            if x.dtype in (torch.bfloat16, torch.float16)
            else x.detach().cpu().numpy()
        )
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "uif":
            raise Lenet5Error(f"predict: an array of {x.dtype}: give uint8 or floating point pixels")
        return x
    return None


def _uint8(a: np.ndarray) -> np.ndarray:
    """(N, ...) pixels -> uint8: uint8 as it is; floats in [0, 1] scaled to 0-255 (larger values
    taken as 0-255 already), rounded and clipped; integers clipped. In chunks of CHUNK images."""
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype.kind == "f":
        finite_max = None
        for start in range(0, len(a), CHUNK):
            part = a[start : start + CHUNK]
            if not np.isfinite(part).all():
                raise Lenet5Error("predict: the array holds NaN or infinite values")
            m = float(part.max()) if part.size else 0.0
            finite_max = m if finite_max is None else max(finite_max, m)
        scale = 255.0 if (finite_max or 0.0) <= 1.0 else 1.0
    else:
        scale = 1.0
    out = np.empty(a.shape, np.uint8)
    for start in range(0, len(a), CHUNK):
        part = a[start : start + CHUNK].astype(np.float64) * scale
        out[start : start + CHUNK] = np.clip(np.rint(part), 0, 255)
    return out

"""People's digit pictures -> MNIST-style 28x28 inputs, made the way MNIST itself was made.

Grayscale; invert when the paper is light; find the ink (ignoring frames, page edges and specks of
noise); scale it to fit a 20x20 box keeping its aspect ratio (anti-aliased); place it in a 28x28
field with its centre of mass at the centre. Pillow decodes and resizes; numpy and scipy.ndimage
(connected regions and dilation, in C) do the rest. `numbers.py` reads several digits in one
picture with the same steps: `ink_map`, `regions`, then `to_mnist` for each digit.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:  # torch is imported where a tensor is made (`_tensor`), not to read pictures
    import torch

from .errors import Lenet5Error

MAX_PIXELS = 100_000_000  # larger images are refused (decompression bombs)
MAX_BYTES = 50 * 1024 * 1024
# The formats read, as Pillow names them; any other (EPS, SGI, ICO, ...) is refused unopened, so no
# other decoder (nor Ghostscript, for EPS) ever sees an upload.
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
FORMAT_NAMES = "PNG, JPEG, BMP, GIF, WebP, TIFF"
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")  # looked for in folders
WORK_SIZE = 256  # the ink is found at this size (longest side): detail enough, bounded cost
DRAFT = 3 * WORK_SIZE // 2  # big JPEGs are decoded at a scale that keeps this much (`_draft_size`)
SHORT_SIDE = 128  # ...and shrinking on opening keeps at least this much across the short side
MIN_CONTRAST = 0.15  # ink must stand this far (of black-to-white) above the paper
MIN_SIZE = 5  # pixels across at WORK_SIZE: smaller ink is a speck, not a digit
STROKE = 2.8  # MNIST's median stroke width in its 20x20 box, in pixels; thinner pens are thickened


class ImageError(Lenet5Error):
    """An input picture cannot be turned into a digit."""


class NoDigit(ImageError):
    """A picture that was read but holds no digit: blank, no contrast, or only specks of ink.
    The reader answers "no digit" with `reason`, not an error."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise Lenet5Error("reading image files needs Pillow: pip install 'lenet5[images]'") from None
    return Image


def open_image(source: str | os.PathLike | bytes, name: str | None = None):
    """A decoded, single-frame, upright Pillow image in mode 'L' (ink and paper as in the picture).

    Animated images give their first frame; transparency is composited on white paper (on black
    when the visible strokes are themselves light); 16-bit and float images are scaled to 8 bits.
    Big pictures are averaged down by Pillow (`_shrink`) before anything else is done with them;
    `info["full_size"]` keeps the (upright) size the file has.
    """
    Image = _pil()
    from PIL import UnidentifiedImageError

    name = name or (str(source) if not isinstance(source, bytes) else "image")
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            what = (
                "is a folder"
                if path.is_dir()
                else "not a regular file (a device, a pipe or a socket); give a picture file"
                if path.exists()
                else "no such file"
            )
            raise ImageError(f"{name}: {what}")
        if path.stat().st_size > MAX_BYTES:
            raise ImageError(f"{name}: file is larger than {MAX_BYTES // 2**20} MB")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ImageError(f"{name}: cannot read it ({e.strerror or type(e).__name__})") from None
    if not data:
        raise ImageError(f"{name}: file is empty")
    if len(data) > MAX_BYTES:
        raise ImageError(f"{name}: image is larger than {MAX_BYTES // 2**20} MB")
    too_large = (
        f"{name}: too large to be a digit picture (over {MAX_PIXELS // 1_000_000} megapixels, "
        "or a decompression bomb); scale it down first"
    )
    try:
        with warnings.catch_warnings():
            # Pillow warns below its own hard limit (we refuse by ours instead) and about damaged
            # headers (the damage that matters is an error below): neither is for the person.
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data), formats=FORMATS)
            if img.width * img.height > MAX_PIXELS:
                raise ImageError(f"{too_large} ({img.width}x{img.height})")
            full = img.size
            if img.format == "JPEG":
                img.draft("L", _draft_size(img.size))  # big photos decoded at 1/2 to 1/8 size
            img.seek(0)  # animated: the first frame
            img.load()
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(too_large) from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file lenet5 reads ({FORMAT_NAMES})") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        detail = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise ImageError(f"{name}: not a readable image, damaged or cut short ({detail})") from None
    try:
        orientation = img.getexif().get(0x0112)  # phone photos: which way up the camera was held
    except Exception:  # a damaged EXIF block: the pixels are still good
        orientation = None
    try:
        # Shrunk before turning upright: the turn copies the picture, and the shrunk one is small.
        img = _to_gray(_upright(_shrink(img), orientation))
        # The picture's size as its file has it, upright: where found things are, in its pixels.
        img.info["full_size"] = (full[1], full[0]) if orientation in (5, 6, 7, 8) else full
        return img
    except (OSError, ValueError) as e:  # e.g. a mode Pillow decodes but cannot convert
        raise ImageError(f"{name}: cannot convert its pixels to gray ({str(e)[:120]})") from None


def _draft_size(size: tuple[int, int]) -> tuple[int, int]:
    """The size to ask a JPEG decoder for: DRAFT pixels on the long side, the aspect kept.

    The decoder scales by 1/2, 1/4 or 1/8 inside its inverse DCT, keeping every side at least what
    is asked; dropping the high frequencies there is itself a fair low-pass filter, and costs less
    than decoding them. A 12-megapixel photo (4032x3024) comes out 504x378, and the anti-aliased
    resize to the working size then has half as far to go, for a quarter of its time.
    """
    w, h = size
    if min(size) * DRAFT < SHORT_SIDE * max(size):  # a long row: keep SHORT_SIDE across its height
        return max(1, w * SHORT_SIDE // min(size)), max(1, h * SHORT_SIDE // min(size))
    return max(1, w * DRAFT // max(size)), max(1, h * DRAFT // max(size))


def _shrink(img):
    """A big picture averaged down (Pillow's box filter) to between 2 and 4 times the working size.

    Every step after this one (gray conversion, float arrays) costs memory in proportion to the
    pixels, 8 to 25 bytes each; done on the decoded picture, a 16-megapixel scan would cost
    hundreds of MB. Twice the working size keeps the final anti-aliased resize in `prepare` as it
    was (Pillow's own `reducing_gap` reasoning), so only the cost changes, not the digit.
    """
    Image = _pil()
    # ...and never below SHORT_SIDE across: a long row of digits keeps the pixels its height needs
    factor = min(max(img.size) // (2 * WORK_SIZE), min(img.size) // SHORT_SIDE)
    if factor < 2:
        return img
    if img.mode == "1":
        img = img.convert("L")
    elif img.mode == "P":  # palette indices cannot be averaged; their colours can
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    size = (max(1, round(img.width / factor)), max(1, round(img.height / factor)))
    return img.resize(size, Image.BOX)


def _upright(img, orientation):
    """`img` turned as its EXIF orientation tag (1-8) says; as `ImageOps.exif_transpose` does."""
    Image = _pil()
    T = Image.Transpose
    method = {
        2: T.FLIP_LEFT_RIGHT,
        3: T.ROTATE_180,
        4: T.FLIP_TOP_BOTTOM,
        5: T.TRANSPOSE,
        6: T.ROTATE_270,
        7: T.TRANSVERSE,
        8: T.ROTATE_90,
    }.get(orientation)
    return img.transpose(method) if method is not None else img


def _to_gray(img):
    """Mode 'L', compositing transparency and scaling 16-bit and float images down to 8 bits."""
    Image = _pil()
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        finite = np.isfinite(a)
        hi = max(float(a[finite].max()), 0.0) if finite.any() else 0.0
        # Float pictures may hold NaN and infinities: NaN is paper, +inf the brightest value there is.
        a = np.nan_to_num(a, nan=0.0, posinf=hi, neginf=0.0)
        # The smallest bit depth that holds the data: 12-bit scans in 16-bit files keep their contrast.
        peak = 1.0 if img.mode == "F" and hi <= 1.0 else 2.0 ** max(8, int(np.ceil(np.log2(hi + 1)))) - 1
        return Image.fromarray(np.clip(a / peak * 255.0, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        opaque = np.asarray(rgba.getchannel("A")) > 127
        lum = np.asarray(rgba.convert("RGB").convert("L"))
        # White paper, unless the sheet itself is transparent and the strokes on it are light.
        light_strokes = 0 < opaque.mean() < 0.5 and lum[opaque].mean() > 127
        paper = (0, 0, 0, 255) if light_strokes else (255, 255, 255, 255)
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, paper), rgba)
    return img.convert("L")


def lanczos(img, size: tuple[int, int]):
    """Pillow's anti-aliased (Lanczos) resize, one axis at a time: across, then down.

    Pillow resizes both axes in one call in either order, as its version decides (13 chooses by
    the picture's shape), and the two orders round differently. One axis a call fixes the order,
    so every Pillow gives the same pixels, and the page's script (web/static/reader.js) repeats
    them to the bit.
    """
    Image = _pil()
    if size[0] != img.width:
        img = img.resize((size[0], img.height), Image.LANCZOS)
    if size[1] != img.height:
        img = img.resize(size, Image.LANCZOS)
    return img


EDGES = np.linspace(0.0, 1.0, 257)  # np.histogram's bin edges for 256 bins over [0, 1]


def _histogram(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.histogram(values, bins=256, range=(0, 1)) for values in [0, 1], bin for bin, in a fifth
    of its time. Exact: multiplying by 256 is exact in floating point and the edges are k/256, so
    the floor is the bin numpy's edge checks arrive at; 1.0 goes in the last bin, as there."""
    idx = (values * 256).astype(np.intp).ravel()  # intp: what np.bincount counts, without a copy
    np.minimum(idx, 255, out=idx)
    return np.bincount(idx, minlength=256), EDGES.copy()


def _otsu(values: np.ndarray) -> float:
    """Otsu's threshold for values in [0, 1]."""
    return _otsu_of(_histogram(values)[0])


def _otsu_of(hist: np.ndarray) -> float:
    """Otsu's threshold for values in [0, 1] from their `_histogram` (pixel counts, whole numbers
    in integers or floats)."""
    p = hist.astype(np.float64) / max(hist.sum(), 1)
    omega = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    between = (mu[-1] * omega - mu) ** 2 / np.maximum(omega * (1 - omega), 1e-12)
    return float(EDGES[int(np.argmax(between)) + 1])


EIGHT = np.ones((3, 3), dtype=bool)  # pixels touching at a corner belong to one stroke


@dataclass
class Regions:
    """The 8-connected regions of faint ink that hold some clear ink, and where each lies.

    `labels` numbers every region of the mask 1..n in the order a raster scan meets them (0 is
    paper); `ids` are the regions kept (clear ink in them, 3 pixels or more), `areas` their pixel
    counts and `boxes` their (top, bottom, left, right), inclusive.
    """

    labels: np.ndarray  # (h, w) int32
    ids: np.ndarray  # (k,)
    areas: np.ndarray  # (k,)
    boxes: np.ndarray  # (k, 4)
    count: int  # n: how many regions the labels number

    def mask(self, ids, box=np.s_[:, :]) -> np.ndarray:
        """The pixels of the regions `ids` (within `box`, a pair of slices, when given)."""
        keep = np.zeros(self.count + 1, dtype=bool)
        keep[np.asarray(ids, dtype=np.intp)] = True
        keep[0] = False
        return keep[self.labels[box]]


def regions(strong: np.ndarray, weak: np.ndarray) -> Regions:
    """A region is a connected run of faint ink (`weak`) holding some clear ink (`strong`), so a
    thin stroke that fades in places stays whole. Found by scipy.ndimage in C: one pass."""
    # Labelled inside the box that holds all the faint ink, with less to scan: a raster scan of the
    # box meets the regions in the order one of the whole picture does, so the numbers are the same.
    rows, cols = np.flatnonzero(weak.any(1)), np.flatnonzero(weak.any(0))
    top, left = (int(rows[0]), int(cols[0])) if len(rows) else (0, 0)
    box = np.s_[top : rows[-1] + 1, left : cols[-1] + 1] if len(rows) else np.s_[:, :]
    labels = np.zeros(weak.shape, dtype=np.int32)
    labels[box], n = ndimage.label(weak[box], structure=EIGHT)
    # Counted over the faint ink only (labels 1..n; the paper's count, label 0, is never used):
    # ink is a small part of most pictures.
    areas = np.bincount(labels[weak], minlength=n + 1)
    clear = np.zeros(n + 1, dtype=bool)
    clear[labels[strong & weak]] = True
    ids = np.nonzero(clear & (areas >= 3))[0]
    ids = ids[ids > 0]
    slices = ndimage.find_objects(labels[box])
    boxes = np.array(
        [
            (
                slices[i - 1][0].start,
                slices[i - 1][0].stop - 1,
                slices[i - 1][1].start,
                slices[i - 1][1].stop - 1,
            )
            for i in ids
        ],
        dtype=np.intp,
    ).reshape(-1, 4) + (top, top, left, left)
    return Regions(labels, ids, areas[ids], boxes, n)


def candidates(r: Regions, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Which regions may be ink of digits (`allowed`), and which are big enough to count (`big`).

    Regions at the picture's edge (page edges, shadows) and regions framing other ink (a box drawn
    round the digits) are not allowed when other ink is left.
    """
    ids, areas, boxes = r.ids, r.areas, r.boxes
    h, w = shape
    margin = 2  # touching the edge, give or take a pixel of blur
    at_edge = (
        (boxes[:, 0] < margin)
        | (boxes[:, 1] >= h - margin)
        | (boxes[:, 2] < margin)
        | (boxes[:, 3] >= w - margin)
    )
    big = np.nonzero(areas >= 0.02 * areas.max())[0]
    framing = np.zeros(len(ids), dtype=bool)
    for a in big:
        inner = (
            (boxes[big, 0] > boxes[a, 0])
            & (boxes[big, 1] < boxes[a, 1])
            & (boxes[big, 2] > boxes[a, 2])
            & (boxes[big, 3] < boxes[a, 3])
            & (areas[big] >= 0.05 * areas[a])
        )
        framing[a] = inner.any()
    allowed = ~(at_edge | framing)
    if not allowed[big].any():  # the digit itself touches the edge (a tight crop)
        allowed = ~framing if (~framing)[big].any() else np.ones(len(ids), dtype=bool)
    return allowed, big


def _select_digit(strong: np.ndarray, weak: np.ndarray) -> np.ndarray:
    """The pixels of the digit: the biggest allowed region (`candidates`) and the regions close
    to it; specks, and marks far from the digit, are dropped."""
    r = regions(strong, weak)
    if not len(r.ids):  # only specks of a pixel or two: no digit (the caller says so)
        return np.zeros_like(weak)
    allowed, _ = candidates(r, weak.shape)
    boxes, areas = r.boxes, r.areas
    # Start from the biggest region; take in regions close to what is kept until none is left.
    kept = np.zeros(len(r.ids), dtype=bool)
    kept[np.argmax(np.where(allowed, areas, -1))] = True
    while True:
        top, left = boxes[kept, 0].min(), boxes[kept, 2].min()
        bottom, right = boxes[kept, 1].max(), boxes[kept, 3].max()
        reach = 0.25 * max(bottom - top, right - left) + 2  # a detached stroke sits close by
        near = (
            allowed
            & ~kept
            & (boxes[:, 0] <= bottom + reach)
            & (boxes[:, 1] >= top - reach)
            & (boxes[:, 2] <= right + reach)
            & (boxes[:, 3] >= left - reach)
        )
        if not near.any():
            # Looked up only inside the kept regions' box, where they all lie.
            box = (slice(top, bottom + 1), slice(left, right + 1))
            digit = np.zeros_like(weak)
            digit[box] = r.mask(r.ids[kept], box)
            return digit
        kept |= near


def _max_filter(a: np.ndarray, size: int) -> np.ndarray:
    """Grey dilation by a size x size square: thickens strokes. For an even size the square
    reaches one pixel further right and down than up and left. Values are >= 0, so paper (0)
    beyond the edge changes nothing."""
    if size <= 1:
        return a
    return ndimage.maximum_filter(a, size=size, mode="constant", cval=0.0)


GRAYS = np.arange(256) / 255.0  # the 256 gray levels, each bit for bit as `gray / 255.0` has it
INVERTED = 1.0 - GRAYS  # and as `1.0 - gray / 255.0` has it


def _level_stats(values: np.ndarray, counts: np.ndarray) -> tuple[float, float]:
    """(np.median, _otsu) of a picture whose pixels hold `values[g]`, `counts[g]` of them, for the
    256 gray levels g. Bit for bit the same, but found by counting 256 levels rather than sorting
    and binning every pixel: the pixels' values are these very floats, so the middle one (or the
    mean of the middle two, as np.median takes it) and every pixel's bin are the same."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(counts[order])
    n = int(cum[-1])
    middle = values[order[np.searchsorted(cum, [(n - 1) // 2, n // 2], side="right")]]
    hist = np.bincount(np.minimum((values * 256).astype(np.intp), 255), counts, 256)  # as `_histogram`
    return float(np.mean(middle)), _otsu_of(hist)


def _light_paper(gray: np.ndarray, median: float, otsu: float) -> bool:
    """Whether the paper is lighter than the ink, for a picture's 8-bit gray levels (the median
    and Otsu threshold of their values in [0, 1] given).

    Most of a picture is paper, so its median says, except in a tight crop of bold strokes, where
    ink covers more than half of it. Then the picture's edge tells: mostly paper, touched by the
    strokes here and there. (A dark sheet inside a light margin has light edges too, but nothing
    dark reaches them, so it stays a dark sheet.)
    """
    if median > 0.5:
        return True
    if min(gray.shape) < 3:
        return False
    edge = GRAYS[np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])]
    dark = edge < max(otsu, 0.25)
    return bool(np.median(edge) > 0.5 and dark.mean() >= 0.02)


def _ink(gray, name: str) -> np.ndarray:
    """How much ink is on each pixel, 0 (paper) to 1 (the darkest stroke), for a mode 'L' image."""
    # The whole picture's median and Otsu threshold come from its 256-level histogram (exact),
    # which Pillow counts in C.
    counts = np.array(gray.histogram())
    levels, values = np.asarray(gray), GRAYS
    if _light_paper(levels, *_level_stats(values, counts)):  # light paper: bright ink, as in MNIST
        values = INVERTED
    # Each pixel's value looked up by its level: bit for bit `gray / 255.0` (or 1.0 minus that),
    # in one pass (`take`: numpy's plain gather, faster than indexing with an array).
    a = values.take(levels)
    # Uneven light: subtract the paper's brightness, fitted as a plane to the paper pixels.
    median, otsu = _level_stats(values, counts)
    paper = a <= max(otsu, median)  # the median: paper even where Otsu has no two classes
    count = int(paper.sum())
    if count >= 3:
        step = max(1, count // 4000)
        # Every step-th paper pixel in raster order, as np.nonzero's would be, from one flat index.
        ys, xs = np.divmod(np.flatnonzero(paper)[::step], a.shape[1])
        design = np.stack([ys, xs, np.ones(len(ys))], 1)
        # Fitted to the heights above the first sample's: an even sheet then fits slopes of exactly
        # 0 and stays exactly even (and the page's reader.js, fitting the same way, agrees).
        z = a[ys, xs]
        coef = np.linalg.lstsq(design, z - z[0], rcond=None)[0]
        rows, cols = np.arange(a.shape[0])[:, None], np.arange(a.shape[1])[None, :]
        plane = coef[0] * rows + coef[1] * cols
        plane += coef[2] + z[0]
        a = np.subtract(a, plane, out=plane)
    ink = np.clip(a, 0.0, None, out=a)  # `a` is this function's own array by now
    peak = ink.max()
    if peak < MIN_CONTRAST:
        raise NoDigit(f"{name}: no ink found (the picture is blank or has almost no contrast)", "no ink")
    ink /= peak
    return ink


def _padded(a: np.ndarray) -> np.ndarray:
    """np.pad(a, 1): a border of zeros, one pixel wide (without np.pad's general machinery)."""
    out = np.zeros((a.shape[0] + 2, a.shape[1] + 2), dtype=a.dtype)
    out[1:-1, 1:-1] = a
    return out


def _percentile(values: np.ndarray, q: float) -> float:
    """np.percentile(values, q) for a 1-D float64 array, bit for bit: numpy's linear method (the
    virtual index (n - 1) * q/100, its two neighbours found by partitioning, numpy's lerp) without
    its general machinery."""
    n = values.size
    at = (n - 1) * (q / 100)
    lo = int(at)
    hi = min(lo + 1, n - 1)
    part = np.partition(values, (lo, hi))
    a, b, t = float(part[lo]), float(part[hi]), at - lo
    d = b - a
    return b - d * (1 - t) if t >= 0.5 else a + d * t


def _speckled(mask: np.ndarray) -> bool:
    """True when many ink pixels stand alone or in pairs: impulse noise rather than strokes."""
    p = _padded(mask).view(np.uint8)  # 0/1 bytes; a 3x3 sum is at most 9
    across = p[:, :-2] + p[:, 1:-1] + p[:, 2:]
    neighbours = across[:-2] + across[1:-1] + across[2:]
    return int((mask & (neighbours <= 2)).sum()) > max(20, 0.001 * mask.size)


def ink_map(img, name: str = "image", work_size: int = WORK_SIZE) -> tuple[np.ndarray, float]:
    """A Pillow image (any mode) -> (how much ink is on each pixel, 0 to 1, with `work_size`
    pixels on the longest side; the level above which ink is clear). ImageError when there is none."""
    _pil()
    from PIL import ImageFilter

    gray = img if img.mode == "L" else _to_gray(img)
    if max(gray.size) > work_size:
        scale = work_size / max(gray.size)
        gray = lanczos(gray, (max(1, round(gray.width * scale)), max(1, round(gray.height * scale))))
    ink = _ink(gray, name)
    level = max(_otsu(ink), 0.25)
    if min(gray.size) >= 3 and _speckled(ink > level):
        # Salt-and-pepper noise: a median filter clears it. Only then, since it also erases
        # one-pixel pen strokes.
        ink = _ink(gray.filter(ImageFilter.MedianFilter(3)), name)
        level = max(_otsu(ink), 0.25)
    return ink, level


def ink_masks(ink: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """(clear ink, faint ink): the pixels above `level`, and those above half of it."""
    return ink > level, ink > max(0.5 * level, 0.12)


def _tensor(pixels: np.ndarray):
    """The 28x28 pixels as the uint8 tensor the model's code takes. torch is imported only here,
    so that reading pictures alone (`load_pixels`) does without it."""
    import torch

    return torch.from_numpy(pixels)


def prepare(img, name: str = "image") -> torch.Tensor:
    """A Pillow image (any mode) -> uint8 tensor (28, 28): white ink on black, MNIST-style."""
    return _tensor(prepare_pixels(img, name))


def prepare_pixels(img, name: str = "image") -> np.ndarray:
    """`prepare` as a numpy uint8 array (28, 28)."""
    ink, level = ink_map(img, name)
    return to_mnist_pixels(ink, _select_digit(*ink_masks(ink, level)), name)


def to_mnist(ink: np.ndarray, mask: np.ndarray, name: str = "image") -> torch.Tensor:
    """The digit whose pixels are `mask` in the ink map `ink` -> uint8 tensor (28, 28): cropped to
    its box, a fine pen thickened, scaled to fit 20x20 and centred by mass in 28x28."""
    return _tensor(to_mnist_pixels(ink, mask, name))


def to_mnist_pixels(ink: np.ndarray, mask: np.ndarray, name: str = "image") -> np.ndarray:
    """`to_mnist` as a numpy uint8 array (28, 28)."""
    Image = _pil()
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    top, bottom, left, right = (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) if mask.any() else (0,) * 4
    if max(bottom - top, right - left) < MIN_SIZE:
        raise NoDigit(
            f"{name}: no digit found, only a speck of ink; if the digit is tiny in the "
            "picture, crop closer to it",
            "only a speck of ink",
        )
    # Keep the anti-aliased rim just outside the threshold; drop everything else outside the digit.
    # The rim is the mask dilated by a 3x3 square: the OR of its shifts across, then down. (Nothing
    # of the mask lies outside its box, so the box padded with paper is all the dilation sees.)
    m = mask[top:bottom, left:right]
    pm = _padded(m)
    across = pm[:, :-2] | pm[:, 1:-1] | pm[:, 2:]
    near = across[:-2] | across[1:-1] | across[2:]
    crop = np.where(near, ink[top:bottom, left:right], 0.0)
    crop = np.clip(crop / _percentile(crop[m], 90), 0.0, 1.0)  # solid strokes
    h, w = crop.shape
    long_side = max(h, w)
    # Stroke width ~ area / half the boundary; a fine pen on a big sheet would vanish at 20x20.
    boundary = m & ~(pm[:-2, 1:-1] & pm[2:, 1:-1] & pm[1:-1, :-2] & pm[1:-1, 2:])
    width = m.sum() / max(boundary.sum() / 2, 1) * 20.0 / long_side
    if width < 0.7 * STROKE:
        grow = int(round((STROKE - width) * long_side / 20.0))
        crop = _max_filter(np.pad(crop, grow), grow + 1)
        h, w = crop.shape
        long_side = max(h, w)
    scale = 20.0 / long_side
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    digit = lanczos(Image.fromarray((crop * 255).astype(np.uint8), "L"), (new_w, new_h))
    d = np.asarray(digit, dtype=np.float64)
    total = d.sum()
    if total <= 0:
        raise NoDigit(f"{name}: no ink found", "no ink")
    ys, xs = np.indices(d.shape)
    cy, cx = (ys * d).sum() / total, (xs * d).sum() / total
    field = np.zeros((28, 28), dtype=np.float64)
    oy, ox = int(round(14 - cy)), int(round(14 - cx))  # MNIST's centre of mass sits at (14, 14)
    oy, ox = min(max(oy, 0), 28 - new_h), min(max(ox, 0), 28 - new_w)
    field[oy : oy + new_h, ox : ox + new_w] = d
    return np.clip(field, 0, 255).astype(np.uint8)


def load_digit(source: str | os.PathLike | bytes, name: str | None = None) -> torch.Tensor:
    """Read an image file (or its bytes) and make it an MNIST-style uint8 (28, 28) input.

    Whatever goes wrong with one picture is an ImageError naming it, so a batch goes on past it and
    a server answers 4xx. An error that is not an ImageError is a bug met on a strange picture: its
    exception is kept as the `__cause__`, for whoever logs it with its traceback.
    """
    return _tensor(load_pixels(source, name))


def load_pixels(source: str | os.PathLike | bytes, name: str | None = None) -> np.ndarray:
    """`load_digit` as a numpy uint8 array (28, 28), with no need of torch."""
    name = name or (str(source) if not isinstance(source, bytes) else "image")
    try:
        return prepare_pixels(open_image(source, name), name)
    except ImageError:
        raise
    except Exception as e:
        detail = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}" if str(e) else type(e).__name__
        raise ImageError(f"{name}: cannot be read as a digit picture ({detail})") from e


def save_input(image: torch.Tensor, path: str | os.PathLike, scale: int = 8) -> Path:
    """Write the 28x28 input as the model saw it (white ink on black) as a PNG, each pixel drawn
    as a scale x scale block so it can be looked at, and nothing smoothed."""
    Image = _pil()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(image.cpu().numpy().astype(np.uint8), "L")
    img.resize((28 * scale, 28 * scale), Image.NEAREST).save(path)
    return path

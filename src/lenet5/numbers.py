"""Whole numbers: the digits in one picture, found, read left to right, each with its box.

The picture becomes an ink map as a single digit's does (`images.ink_map`), its regions of ink are
found the same way (`images.regions`; page edges, frames and specks left out), and then:

    group   regions whose columns overlap much are one digit written in several strokes (a 5's top
            bar, a 4 or a 7 written open);
    split   a group too wide for one digit is digits that touch: it is cut at columns of little
            ink, choosing the cuts whose pieces the model reads most surely, with a digit's usual
            width for its height as a guide;
    read    each digit's pixels become an MNIST-style input by `images.to_mnist`, exactly as a single
            digit's do, and are classified.

The model comes in as a reader (reader.py: uint8 (N, 28, 28) -> Predictions), so this module knows
pictures, not checkpoints. What it cannot read it says, as an ImageError naming the picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from . import images
from .images import EIGHT, ImageError

# Widths and heights are in units of a digit's height: MNIST digits fill 20 pixels of height and
# 4 (a 1) to 20 of width.
ONE_DIGIT = 1.2  # a region at most this wide is never cut (wider ones may be digits touching)
WIDEST = 2.0  # wider than this is not one digit (1 in 1,000 of MNIST's is past 1.67): digits not told apart
NARROWEST = 0.12  # cuts leave at least this much on either side (a 1 written straight is ~0.15)
OVERLAP = 0.5  # regions sharing this much of the narrower one's columns are strokes of one digit
NEAR = 0.04  # regions closer than this are strokes of one digit broken where the ink was faint
SPECK = 0.15  # ink smaller than this (either way) is dust, not a digit nor a stroke of one
THIN = 0.3  # cuts crossing more ink than this (pixels, in heights) are never made
DRIFT = 0.3  # what a cut's step sideways costs, in pixels of ink crossed
SPACING = 0.25  # candidate cuts stand at least this far apart
MAX_CUTS = 8  # candidate cuts in one region: the readings to weigh grow with their number
MAX_PARTS = 6  # a digit is made of at most this many parts (strokes, fragments, cut pieces)
# The scores that choose between readings, in log-probability units (tuned on bench/read_numbers.py):
PER_GAP = 8.0  # joining parts across a gap costs this per digit height of gap: digits stand apart
PER_CUT = 10.0  # a digit ending at a cut costs this per height of ink the cut crosses
SHORT = 10.0  # a digit under half the tallest's height costs this per height it falls short
NOT_DIGIT = 6.0  # a piece the reader calls "not a digit" costs this: a reading of digits is sought
# People space the digits of a number about evenly: a digit boundary where two parts stand closer
# than half the number's usual gap (its median) costs this per height of the shortfall; a digit
# whose stroke broke (an open 0, a 5's bar) is then read whole, not as two digits.
CLOSE = 10.0
CLOSEST = 0.25  # the shortfall counted at most (heights): specks far apart are no number to space
# Inside a number its neighbours say a part is meant as a digit: it is one at a score of this share
# of the reader's threshold (a 1 written in two strokes, say). 87 % of tests/nondigits.py's
# non-digits still fall under it, against 93 % under the threshold itself.
IN_A_NUMBER = 0.75
MIN_HEIGHT = 40  # digits shorter than this (pixels, at the working size) are looked at again, larger
MAX_WORK = 1536  # the largest working size (longest side) a second look takes
ROW_HEIGHT = 64  # a picture over 4 times wider than tall is worked on this tall (a row of digits),
MAX_ROW_PIXELS = 4_000_000  # within this many pixels


@dataclass(frozen=True)
class Digit:
    digit: int  # the most probable digit (the closest, where this part is not a digit)
    probability: float  # its probability
    probabilities: list[float]  # one for each digit 0-9
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the picture's pixels (x1, y1 past the end)
    input: torch.Tensor = field(repr=False, compare=False)  # the (28, 28) uint8 input the model saw
    is_digit: bool = True  # False: the reader says this part is no digit (a letter, a sign, ...)


@dataclass(frozen=True)
class Number:
    digits: list[Digit]  # left to right

    @property
    def number(self) -> str:
        """The digits left to right; `?` for a part that is not a digit."""
        return "".join(str(d.digit) if d.is_digit else "?" for d in self.digits)

    @property
    def readable(self) -> bool:
        return all(d.is_digit for d in self.digits)

    def problem(self) -> str:
        """What keeps it from being a number, in words ('' if nothing)."""
        bad = [k for k, d in enumerate(self.digits, 1) if not d.is_digit]
        if not bad:
            return ""
        wide = [k for k in bad if _aspect(self.digits[k - 1].box) > ONE_DIGIT]
        if wide:
            return (
                f"digits touch in part{'s' if len(wide) > 1 else ''} {', '.join(map(str, wide))} "
                f"of {len(self.digits)}; leave a gap between them"
            )
        return (
            f"part{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} of {len(self.digits)} not a digit"
        )

    def to_dict(self) -> dict:
        return {
            "number": self.number,
            "readable": self.readable,
            "problem": self.problem(),
            "digits": [
                {"digit": d.digit, "probability": d.probability, "is_digit": d.is_digit, "box": list(d.box)}
                for d in self.digits
            ],
        }


def _aspect(box) -> float:
    x0, y0, x1, y1 = box
    return (x1 - x0) / max(1, y1 - y0)


@dataclass
class _Part:
    """A piece of ink that is all or part of one digit: a region (or regions that share much of
    their columns or nearly touch), or the ink of one between two cuts."""

    mask: np.ndarray  # (h, w) bool, at the working size
    box: tuple[int, int, int, int]  # top, bottom, left, right, inclusive
    cut_left: bool = False  # made by a cut on that side (a neighbour's sliver may be left there)
    cut_right: bool = False
    cut_ink: float = 0.0  # the ink the cut on its right crosses, in heights


def read_number(img, reader, name: str = "image") -> Number:
    """The digits of the number in a Pillow image, left to right, read by `reader` (reader.py):
    its calibrated probabilities choose the reading, and its threshold, eased by IN_A_NUMBER,
    says which parts are no digit."""
    work = images.WORK_SIZE
    aspect = max(img.size) / max(1, min(img.size))
    if aspect > 4:  # a long row of digits: enough pixels across its short side to see them
        work = int(min(max(img.size), ROW_HEIGHT * aspect, math.sqrt(MAX_ROW_PIXELS * aspect)))
    ink, level = images.ink_map(img, name, work)
    parts, tallest = _parts(ink, level, name)
    larger = min(MAX_WORK, max(img.size), round(work * 1.5 * MIN_HEIGHT / tallest))
    if tallest < MIN_HEIGHT and larger >= 1.25 * work:
        # Small digits in a big picture (a number on a page): look again with more pixels.
        work = larger
        ink, level = images.ink_map(img, name, work)
        parts, tallest = _parts(ink, level, name)
    found = _read_line(ink, parts, tallest, reader, name)
    # Boxes in the picture's own pixels: the working size scaled back, then any shrinking on opening.
    full_w, full_h = img.info.get("full_size", img.size)
    sx, sy = full_w / ink.shape[1], full_h / ink.shape[0]
    digits = []
    for (top, bottom, left, right), image, p in found:
        box = (
            max(0, math.floor(left * sx)),
            max(0, math.floor(top * sy)),
            min(full_w, math.ceil((right + 1) * sx)),
            min(full_h, math.ceil((bottom + 1) * sy)),
        )
        digits.append(
            Digit(
                p.digit, p.probability, p.probabilities, box, image, p.score >= reader.threshold * IN_A_NUMBER
            )
        )
    return Number(digits)


def load_number(source, reader, name: str | None = None) -> Number:
    """Read an image file (or its bytes) as a number; whatever goes wrong is an ImageError naming it,
    as `images.load_digit` does for one digit."""
    name = name or (str(source) if not isinstance(source, bytes) else "image")
    try:
        return read_number(images.open_image(source, name), reader, name)
    except ImageError:
        raise
    except Exception as e:
        detail = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}" if str(e) else type(e).__name__
        raise ImageError(f"{name}: cannot be read as a number picture ({detail})") from e


def _parts(ink: np.ndarray, level: float, name: str) -> tuple[list[_Part], int]:
    """The parts digits are made of, left to right, and the tallest one's height.

    Regions within a few pixels of each other, or sharing much of their columns, are one part
    (strokes of one digit); a part too wide for one digit is cut into narrower parts (`_cut`).
    """
    strong, weak = images.ink_masks(ink, level)
    r = images.regions(strong, weak)
    if not len(r.ids):
        raise ImageError(f"{name}: no digits found, only specks of ink")
    allowed, _ = images.candidates(r, weak.shape)
    boxes = r.boxes
    heights, widths = boxes[:, 1] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 2] + 1
    tallest = heights[allowed].max()
    keep = allowed & (np.maximum(heights, widths) >= max(SPECK * tallest, images.MIN_SIZE))
    # Marks well above or below the line of digits are not part of the number.
    line = boxes[np.argmax(np.where(keep, heights, -1))]
    reach = 0.25 * tallest
    keep &= (boxes[:, 0] <= line[1] + reach) & (boxes[:, 1] >= line[0] - reach)
    if not keep.any():
        raise ImageError(f"{name}: no digits found, only specks of ink")
    # Regions within a few pixels of each other are strokes of one digit, broken where the ink
    # was faint: the kept ink thickened by that much says which touch.
    near = max(1, round(NEAR * tallest))
    kept = np.nonzero(keep)[0]
    thick, _ = ndimage.label(
        ndimage.binary_dilation(r.mask(r.ids[kept]), EIGHT, iterations=near), structure=EIGHT
    )
    together: dict[int, list[int]] = {}
    for i in kept:
        top, _, left, _ = boxes[i]
        ys, xs = np.nonzero(r.labels[top : boxes[i][1] + 1, left : boxes[i][3] + 1] == r.ids[i])
        together.setdefault(int(thick[top + ys[0], left + xs[0]]), []).append(int(i))
    groups = [
        (ids, np.array([boxes[ids, 0].min(), boxes[ids, 1].max(), boxes[ids, 2].min(), boxes[ids, 3].max()]))
        for ids in together.values()
    ]
    merged = True
    while merged:  # merge while any two share enough columns
        merged = False
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                ba, bb = groups[a][1], groups[b][1]
                shared = min(ba[3], bb[3]) - max(ba[2], bb[2]) + 1
                if shared >= OVERLAP * min(ba[3] - ba[2] + 1, bb[3] - bb[2] + 1):
                    box = np.array(
                        [min(ba[0], bb[0]), max(ba[1], bb[1]), min(ba[2], bb[2]), max(ba[3], bb[3])]
                    )
                    groups[a] = (groups[a][0] + groups[b][0], box)
                    del groups[b]
                    merged = True
                    break
            if merged:
                break
    parts = []
    for ids, box in groups:
        top, bottom, left, right = (int(v) for v in box)
        parts += _cut(_Part(r.mask(r.ids[ids]), (top, bottom, left, right)))
    parts.sort(key=lambda p: p.box[2])
    tallest = max(p.box[1] - p.box[0] + 1 for p in parts)
    return parts, tallest


def _cut(part: _Part) -> list[_Part]:
    """A part wider than one digit (maybe digits that touch) cut along the paths from its top to
    its bottom that cross least ink; a narrower one as it is.

    The paths are found as seam carving finds them: the cheapest path ending at each column, one
    row at a time, a step sideways allowed each row at a small cost, so a cut can follow the slant
    of the gap between two leaning digits. Cuts stand apart, leave room for a 1 at either end, and
    cross little ink; each is a candidate, kept or not when the pieces are read.
    """
    top, bottom, left, right = part.box
    height, width = bottom - top + 1, right - left + 1
    if width <= ONE_DIGIT * height:
        return [part]
    sub = part.mask[top : bottom + 1, left : right + 1]
    cost, moves = sub[0].astype(np.float64), np.zeros(sub.shape, dtype=np.intp)
    columns = np.arange(width)
    for y in range(1, height):
        came = np.stack([np.r_[np.inf, cost[:-1]] + DRIFT, cost, np.r_[cost[1:], np.inf] + DRIFT])
        step = came.argmin(0)
        moves[y] = step - 1  # where the path came from, relative to this column
        cost = came[step, columns] + sub[y]
    edge = max(1, int(NARROWEST * height))
    ends: list[int] = []
    for x in sorted(range(edge, width - edge), key=lambda x: (cost[x], x)):
        if cost[x] > THIN * height:  # the rest cross more ink: through a digit, not between two
            break
        if all(abs(x - e) >= max(2, SPACING * height) for e in ends):
            ends.append(x)
        if len(ends) == MAX_CUTS:
            break
    seams, crossed = [], []
    for x in sorted(ends):
        crossed.append(float(cost[x]) / height)
        path = np.empty(height, dtype=np.intp)
        path[-1] = x
        for y in range(height - 1, 0, -1):
            path[y - 1] = path[y] + moves[y, path[y]]
        seams.append(path)
    bounds = [np.zeros(height, dtype=np.intp)] + seams + [np.full(height, width, dtype=np.intp)]
    out = []
    for k in range(len(bounds) - 1):
        inside = (columns[None, :] >= bounds[k][:, None]) & (columns[None, :] < bounds[k + 1][:, None])
        mask = np.zeros_like(part.mask)
        mask[top : bottom + 1, left : right + 1] = sub & inside
        rows = np.nonzero(mask.any(1))[0]
        if len(rows):
            cols = np.nonzero(mask.any(0))[0]
            out.append(
                _Part(
                    mask,
                    (int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])),
                    cut_left=k > 0,
                    cut_right=k < len(bounds) - 2,
                    cut_ink=crossed[k] if k < len(crossed) else 0.0,
                )
            )
    return out


def _read_line(ink: np.ndarray, parts: list[_Part], tallest: int, reader, name: str):
    """The digits, left to right, as (box, input, probabilities): the runs of consecutive parts
    that read best as digits, chosen by dynamic programming. A reading scores the log-probability
    of each digit, less what is unlikely: digits wider or narrower than digits are (`_width_prior`),
    far shorter than the others, made of parts with gaps between them, ending at a cut through
    much ink, or standing much closer to the digit before than the number's digits do (`_close_costs`)."""
    candidates = []  # (i, j, box, input, penalty): parts i..j-1 read as one digit
    for i in range(len(parts)):
        mask, (top, bottom, left, right), gaps = parts[i].mask.copy(), parts[i].box, 0.0
        for j in range(i + 1, min(len(parts), i + MAX_PARTS) + 1):
            if j > i + 1:
                nxt = parts[j - 1]
                gaps += max(0, nxt.box[2] - right - 1)
                mask |= nxt.mask
                top, bottom = min(top, nxt.box[0]), max(bottom, nxt.box[1])
                left, right = min(left, nxt.box[2]), max(right, nxt.box[3])
            height, width = bottom - top + 1, right - left + 1
            digit = _trim(mask, (top, bottom, left, right), parts[i].cut_left, parts[j - 1].cut_right)
            try:
                image = images.to_mnist(ink, digit[0], name)
            except ImageError:  # a sliver of ink: no digit
                continue
            penalty = (
                PER_GAP * gaps / tallest
                - _width_prior(width / height)
                + SHORT * max(0.0, 0.5 - height / tallest)
                + PER_CUT * parts[j - 1].cut_ink
            )
            candidates.append((i, j, digit[1], image, penalty))
    if not candidates:
        raise ImageError(f"{name}: no digits found, only specks of ink")
    close = _close_costs(parts, tallest)
    readings = reader.read(torch.stack([c[3] for c in candidates]))
    lenient = reader.threshold * IN_A_NUMBER
    best = [0.0] + [-math.inf] * len(parts)
    back: list[int | None] = [None] * (len(parts) + 1)
    for k, (i, j, _, _, penalty) in enumerate(candidates):  # in order of i: best[i] is final
        unlike = 0.0 if readings[k].score >= lenient else NOT_DIGIT
        score = best[i] + math.log(max(readings[k].probability, 1e-12)) - penalty - unlike - close[i]
        if score > best[j]:
            best[j], back[j] = score, k
    if back[-1] is None:  # some part could be read in no way
        raise ImageError(f"{name}: no digits found, only specks of ink")
    chosen, j = [], len(parts)
    while j:
        last = back[j]
        assert last is not None  # a reading ends at j only where one ended at its start: back to 0
        chosen.append(last)
        j = candidates[last][0]
    chosen.reverse()
    for n, k in enumerate(chosen):
        top, bottom, left, right = candidates[k][2]
        if right - left + 1 > WIDEST * (bottom - top + 1):
            raise ImageError(
                f"{name}: could not split: digits {n + 1} and {n + 2} touch over their "
                "whole height; leave a gap between them"
            )
    return [(candidates[k][2], candidates[k][3], readings[k]) for k in chosen]


def _close_costs(parts: list[_Part], tallest: int) -> list[float]:
    """What a digit boundary costs before each part (CLOSE): nothing before the first part, or where
    the gap is at least half the number's median gap between parts that are not cut apart (digits
    that all touch have none: no cost)."""
    reach = np.maximum.accumulate([p.box[3] for p in parts])  # the rightmost ink before each part
    gaps = [parts[i].box[2] - int(reach[i - 1]) - 1 for i in range(1, len(parts))]
    apart = [g for g, p in zip(gaps, parts[1:], strict=True) if g > 0 and not p.cut_left]
    if not apart:
        return [0.0] * len(parts)
    usual = 0.5 * float(np.median(apart))
    return [0.0] + [CLOSE * min(CLOSEST, max(0.0, usual - g) / tallest) for g in gaps]


def _trim(mask: np.ndarray, box, cut_left: bool, cut_right: bool):
    """`mask` less slivers of a neighbour that a cut left behind (regions under a tenth of the
    largest), when a side of it is a cut: (mask, box)."""
    top, bottom, left, right = box
    if not (cut_left or cut_right):
        return mask, box
    labels, n = ndimage.label(mask[top : bottom + 1, left : right + 1], structure=EIGHT)
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    areas[0] = 0
    small = areas < 0.1 * areas.max()
    small[0] = False
    if not small.any():
        return mask, box
    mask = mask.copy()
    mask[top : bottom + 1, left : right + 1] &= ~small[labels]
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    return mask, (int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1]))


# How MNIST's training digits are shaped: the log of how common each width (in heights) is,
# relative to the commonest, read off their histogram and smoothed.
ASPECTS = [0.05, 0.15, 1.05, 1.2, 1.4, 1.6]
LOG_SHARE = [-3.0, 0.0, 0.0, -1.0, -2.5, -4.0]


def _width_prior(w: float) -> float:
    """Log of how likely a digit is to be `w` heights wide (up to a constant), as MNIST's digits
    are: two digits read as one are too wide, and strokes read as digits too narrow, to be likely."""
    if w > ASPECTS[-1]:
        return LOG_SHARE[-1] - 10.0 * (w - ASPECTS[-1])
    return float(np.interp(w, ASPECTS, LOG_SHARE))

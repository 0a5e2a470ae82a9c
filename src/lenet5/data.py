"""MNIST (or --dataset's set) on disk and in memory: find, download, verify and parse the IDX
files; cut batches.

The whole data set lives in memory as uint8 tensors (47 MB for the training images). Batches are
cut by index on the training device and normalised there, so no per-sample Python code runs on the
hot path. Which files a set has, where they come from and what they are checked against:
datasets.py.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import time
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import datasets
from .config import MEAN, STD  # the statistics of the MNIST training images, as in the seed
from .errors import DataError
from .files import atomic_path

_MNIST = datasets.DATASETS["mnist"]
# name -> (IDX magic, shape, MD5 of the uncompressed file): MNIST's files
FILES = {n: (*spec, _MNIST.checksums[n]["md5"]) for n, spec in _MNIST.files().items()}
MIRRORS = _MNIST.mirrors  # tried in order; the first is the one torchvision uses

Fetcher = Callable[[str, Path, Callable[[int, int], None]], None]


@dataclass
class MNIST:
    """The four arrays as tensors: images uint8 (N, 28, 28), labels int64 (N,); `dataset` says
    which set they are (MNIST, or one made like it: datasets.py)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    dataset: str = "mnist"


def _check_header(raw: bytes, name: str, expect_magic: int, expect_shape: tuple[int, ...]) -> tuple[int, int]:
    """(header length, data length) from the start of an IDX file, checking magic and dimensions."""
    if len(raw) < 8:
        raise DataError(f"{name}: file is truncated ({len(raw)} bytes); delete it and download again")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expect_magic:
        raise DataError(
            f"{name}: wrong magic number {magic:#010x} (expected {expect_magic:#010x}); "
            "this is not an IDX file of that kind (images or labels)"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: file is truncated inside its header; delete it and download again")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    if tuple(shape) != tuple(expect_shape):
        raise DataError(f"{name}: dimensions {tuple(shape)} do not match the set's {tuple(expect_shape)}")
    return header, int(np.prod(shape))


def parse_idx(raw: bytes, name: str, expect_magic: int, expect_shape: tuple[int, ...]) -> np.ndarray:
    """Parse one uncompressed IDX file, checking magic number, dimensions and length."""
    header, count = _check_header(raw, name, expect_magic, expect_shape)
    if len(raw) != header + count:
        what = "truncated" if len(raw) < header + count else "longer than its header says"
        raise DataError(
            f"{name}: file is {what} ({len(raw) - header} bytes of data, expected {count}); "
            "delete it and download again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(expect_shape)


def _gzipped(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def read_raw(path: Path, expect_magic: int, expect_shape: tuple[int, ...]) -> bytes:
    """The uncompressed content of an IDX file, gzipped or not, as far as its header allows.

    The header is read and checked first, then at most the data it announces and one byte more
    (which `parse_idx` reports as trailing data): a damaged or hostile file, a gzip bomb above all,
    never costs more memory than the real file would.
    """
    try:
        with gzip.open(path, "rb") if _gzipped(path) else open(path, "rb") as f:
            raw = f.read(4 + 4 * len(expect_shape))
            header, count = _check_header(raw, str(path), expect_magic, expect_shape)
            return raw + f.read(header + count + 1 - len(raw))
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot be read ({e}); delete it and download again") from None


def verify(path: Path, name: str, dataset: str = "mnist") -> np.ndarray:
    """Read, check and return one file of a set (MNIST's by default) as a uint8 array."""
    spec = datasets.get(dataset)
    magic, shape = spec.files()[name]
    raw = read_raw(path, magic, shape)
    array = parse_idx(raw, str(path), magic, shape)
    _check_digest(path, name, raw, spec)
    if name.endswith("labels-idx1-ubyte") and array.size and int(array.max()) >= len(spec.classes):
        raise DataError(f"{path}: holds label {int(array.max())}; {spec.title} has labels 0 to 9")
    return array


def _check_digest(path: Path, name: str, raw: bytes, spec: datasets.Dataset) -> None:
    """The file against its published checksum (datasets.py says which kind)."""
    want = spec.checksums[name]
    if spec.checked == "content":
        digest = hashlib.md5(raw).hexdigest()
        if digest != want["md5"]:
            raise DataError(
                f"{path}: MD5 {digest} does not match the canonical {spec.title} file ({want['md5']}); "
                "the file is damaged or altered: delete it and download again"
            )
        return
    if not _gzipped(path):
        raise DataError(
            f"{path}: {spec.title}'s published checksums are of its .gz files, so an unpacked file "
            f"cannot be checked; put {name}.gz, as downloaded, in {path.parent}/"
        )
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            sha256.update(chunk)
            md5.update(chunk)
    if sha256.hexdigest() != want["sha256"] and md5.hexdigest() != want["md5"]:
        raise DataError(
            f"{path}: SHA-256 {sha256.hexdigest()} does not match the published {spec.title} file "
            f"({want['sha256']}); the file is damaged or altered: delete it and download again"
        )


def find_file(root: Path, name: str, dataset: str = "mnist") -> Path | None:
    """Look for `name` in the torchvision layout (<root>/MNIST/raw/, <root>/FashionMNIST/raw/, ...);
    MNIST's also in the plain folder and unpacked. A set checked by its .gz files is found as .gz
    first (torchvision keeps both)."""
    spec = datasets.get(dataset)
    folders = (
        (root / spec.folder / "raw", root) if spec.name == datasets.DIGITS else (root / spec.folder / "raw",)
    )
    packed = spec.checked == "download"
    for folder in folders:
        plain, gz = folder / name, folder / f"{name}.gz"
        for candidate in (gz, plain) if packed else (plain, gz):
            if candidate.is_file():
                return candidate
    return None


def _urllib_fetch(url: str, dest: Path, progress: Callable[[int, int], None]) -> None:
    with urllib.request.urlopen(url, timeout=30) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        while chunk := response.read(1 << 16):
            out.write(chunk)
            progress(len(chunk), total)


def download(
    root: Path,
    names: list[str] | None = None,
    mirrors: tuple[str, ...] | None = None,
    fetch: Fetcher = _urllib_fetch,
    retries: int = 3,
    show_progress: bool = True,
    dataset: str = "mnist",
) -> None:
    """Fetch the missing files into `<root>/<folder>/raw/` (MNIST/raw/ by default) from the set's
    mirrors (or `mirrors`), each verified before it is moved into place."""
    spec = datasets.get(dataset)
    raw_dir = root / spec.folder / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    unreachable: list[str] = []  # mirrors that failed every attempt: tried last for later files
    for name in names or list(spec.checksums):
        dest = raw_dir / f"{name}.gz"
        errors: list[str] = []
        for mirror in sorted(spec.mirrors if mirrors is None else mirrors, key=lambda m: m in unreachable):
            got = _fetch_from(mirror, name, dest, fetch, retries, show_progress, spec.name, errors)
            if got == "ok":
                break
            if got == "down" and mirror not in unreachable:
                unreachable.append(mirror)
        if not dest.exists():
            raise DataError(
                f"could not download {name}.gz ({errors[-1] if errors else 'no mirror'}); if this "
                f"machine is offline, copy the four {spec.title} *-ubyte.gz files into {raw_dir}/"
            )


def _fetch_from(mirror, name, dest, fetch, retries, show_progress, dataset, errors) -> str:
    """One mirror's tries for one file, each failure noted in `errors`: "ok" (`dest` in place,
    verified), "bad" (a file that fails its checks: it will not get better by retrying) or "down"
    (network trouble at every try)."""
    from tqdm import tqdm

    url = f"{mirror}{name}.gz"
    for attempt in range(retries):
        try:
            with atomic_path(dest) as tmp:  # in place only once it verifies
                with tqdm(
                    desc=f"{name}.gz",
                    unit="B",
                    unit_scale=True,
                    disable=None if show_progress else True,
                    leave=False,
                ) as bar:

                    def progress(n: int, total: int) -> None:
                        bar.total = total or None
                        bar.update(n)

                    fetch(url, tmp, progress)
                verify(tmp, name, dataset)
            return "ok"
        except DataError as e:
            errors.append(f"{url}: {e}")
            return "bad"
        except Exception as e:  # network trouble: wait a little and retry
            errors.append(f"{url}: {e}")
            if attempt + 1 < retries:
                time.sleep(min(2**attempt, 4))
    return "down"


def data_home(given: str | os.PathLike | None = None, dataset: str = "mnist") -> Path:
    """Where the data sets live: the folder given (--data-dir), else ./data when it holds the set
    (MNIST by default), else $LENET5_DATA, else the user's cache ($XDG_CACHE_HOME/lenet5/data or
    ~/.cache/lenet5/data): an installed lenet5 finds, or downloads, one copy per user, wherever it
    runs."""
    if given:
        return Path(given)
    here = Path("data")
    if all(find_file(here, name, dataset) for name in datasets.NAMES):
        return here
    if os.environ.get("LENET5_DATA"):
        return Path(os.environ["LENET5_DATA"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "lenet5" / "data"


def load_dataset(
    dataset: str = "mnist",
    root: str | os.PathLike | None = None,
    download_missing: bool = True,
    fetch: Fetcher = _urllib_fetch,
    mirrors: tuple[str, ...] | None = None,
) -> MNIST:
    """Find (or download) and verify a set's four files under `root` (default: `data_home()`);
    return them as tensors."""
    spec = datasets.get(dataset)
    root = data_home(root, dataset)
    missing = [n for n in datasets.NAMES if find_file(root, n, dataset) is None]
    if missing:
        if not download_missing:
            raise DataError(
                f"{spec.title} files not found under {root}/ (missing {', '.join(missing)}); "
                f"put the four *-ubyte.gz files in {root}/{spec.folder}/raw/ or allow downloading"
            )
        download(root, missing, mirrors=mirrors, fetch=fetch, dataset=dataset)
    arrays = {}
    for n in datasets.NAMES:
        path = find_file(root, n, dataset)
        assert path is not None  # found above, or downloaded just now
        arrays[n] = verify(path, n, dataset)
    as_tensor = lambda a, dtype: torch.from_numpy(a.copy()).to(dtype)  # noqa: E731 (copy: owned, writable)
    return MNIST(
        train_images=as_tensor(arrays["train-images-idx3-ubyte"], torch.uint8),
        train_labels=as_tensor(arrays["train-labels-idx1-ubyte"], torch.int64),
        test_images=as_tensor(arrays["t10k-images-idx3-ubyte"], torch.uint8),
        test_labels=as_tensor(arrays["t10k-labels-idx1-ubyte"], torch.int64),
        dataset=spec.name,
    )


def load_mnist(
    root: str | os.PathLike | None = None,
    download_missing: bool = True,
    fetch: Fetcher = _urllib_fetch,
    mirrors: tuple[str, ...] = MIRRORS,
) -> MNIST:
    """MNIST's four files as tensors: `load_dataset("mnist", ...)`."""
    return load_dataset("mnist", root, download_missing, fetch, mirrors)


def split_validation(images: torch.Tensor, labels: torch.Tensor, size: int, seed: int):
    """A fixed, seeded split of the training set: ((train_x, train_y), (val_x, val_y))."""
    if size <= 0:
        return (images, labels), (images[:0], labels[:0])
    if size >= len(images):
        raise DataError(f"--val-size {size} leaves no training images (the set has {len(images)})")
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    val, train = perm[:size], perm[size:]
    return (images[train], labels[train]), (images[val], labels[val])


def normalize(images: torch.Tensor, mean: float = MEAN, std: float = STD) -> torch.Tensor:
    """uint8 (B, 28, 28) -> float (B, 1, 28, 28), scaled to [0, 1] then standardised."""
    # (x / 255 - mean) / std, as two fused-friendly ops on the whole batch
    return images.unsqueeze(1).float().sub_(255.0 * mean).mul_(1.0 / (255.0 * std))


def shift(images: torch.Tensor, offsets: torch.Tensor, pad: int) -> torch.Tensor:
    """Translate each image by its own (dy, dx) in [-pad, pad], filling with background (0).

    images: uint8 (B, H, W); offsets: int (B, 2). One gather for the whole batch.
    """
    b, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))  # (B, H+2p, W+2p)
    rows = torch.arange(h, device=images.device) + (pad - offsets[:, :1])  # (B, H)
    cols = torch.arange(w, device=images.device) + (pad - offsets[:, 1:])  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]


def take(
    images: torch.Tensor,
    idx: torch.Tensor,
    offsets: torch.Tensor | None,
    pad: int,
    norm: tuple[float, float] | None = None,
) -> torch.Tensor:
    """`images[idx]`, each shifted by its row of `offsets` (up to `pad` pixels; None: not shifted);
    with `norm` = (mean, std), normalised as `normalize` does it.

    On the CPU the native kernels do it in one pass (fast/convs.cpp, `take_images`: torch's
    pad-and-gather of the shifts alone took a sixth of a training epoch); elsewhere torch."""
    if (
        (offsets is not None or norm is not None)  # a plain pick: torch's index_select is as fast
        and images.device.type == "cpu"
        and images.dtype == torch.uint8
        and images.shape[1:] == (28, 28)
        and images.is_contiguous()
        and (offsets is None or offsets.device.type == "cpu")
    ):
        from .fast import native

        kernels = native.load()
        if kernels is not None:
            return kernels.take(images, idx, offsets, norm)
    x = images.index_select(0, idx)
    x = shift(x, offsets, pad) if offsets is not None else x
    return normalize(x, *norm) if norm is not None else x


def warp(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Each uint8 (B, 28, 28) image turned, scaled, sheared and bent by its own row of `params`
    (B, 36): rotation (radians), log scale, shear, unused, then a 4x4 grid of displacements (16 dx,
    16 dy, in half-widths of the image) interpolated bilinearly: an elastic distortion. Each output
    pixel samples the input bilinearly, paper (0) beyond the edge. Float (B, 28, 28) out, 0-255.

    On the CPU the native kernels do it (fast/convs.cpp, `warp_images`: a resampling as torch's
    grid_sample takes most of a training step's time); elsewhere torch's grid_sample, the same sums.
    """
    if images.device.type == "cpu":
        from .fast import native

        kernels = native.load()
        if kernels is not None:
            return kernels.warp(images, params)
    import torch.nn.functional as F

    b = len(images)
    turn, scale, shear = params[:, 0], params[:, 1].exp(), params[:, 2]
    cos, sin, zero = turn.cos() * scale, turn.sin() * scale, torch.zeros_like(turn)
    theta = torch.stack(
        [torch.stack([cos, cos * shear - sin, zero], 1), torch.stack([sin, sin * shear + cos, zero], 1)], 1
    )  # (B, 2, 3)
    grid = F.affine_grid(theta, [b, 1, 28, 28], align_corners=False)  # (B, 28, 28, 2): x, y
    w = _bend_weights(images.device)  # (28, 4): pixel centres in the 4x4 grid, bilinearly
    bend = torch.einsum("ik,bckl,jl->bijc", w, params[:, 4:].reshape(b, 2, 4, 4), w)
    return F.grid_sample(
        images.unsqueeze(1).float(), grid + bend, mode="bilinear", padding_mode="zeros", align_corners=False
    ).squeeze(1)


def _bend_weights(device) -> torch.Tensor:
    t = (torch.arange(28, dtype=torch.float32) * 2 + 1) / 28 * 1.5  # pixel centres, grid units 0-3
    k = t.floor().clamp(max=2)
    w = torch.zeros(28, 4)
    w[torch.arange(28), k.long()] = 1 - (t - k)
    w[torch.arange(28), k.long() + 1] = t - k
    return w.to(device)


def warp_params(n: int, strength: float, generator: torch.Generator) -> torch.Tensor:
    """(n, 36) random `warp` parameters; strength 1: turns up to 12 degrees, scale 0.87-1.1, shear
    up to 0.25, bends of about 0.6 pixel. Drawn in one call, so a resumed epoch redraws the same."""
    u = torch.rand(n, 36, generator=generator, device=generator.device) * 2 - 1  # [-1, 1)
    reach = torch.tensor([0.21, 0.12, 0.25, 0.0] + [0.08] * 32, device=u.device)  # 12 deg = 0.21 rad
    return u * reach * strength


def restyle(images: torch.Tensor, seed: int) -> torch.Tensor:
    """MNIST digits (uint8 (N, 28, 28)) re-drawn the ways other writers and scanners differ, each
    one way or two: thicker or thinner strokes, slanted, turned and bent more than training does,
    or scanned coarsely (8x8 to 16x16) and scaled back up. uint8 out. What the reader's
    calibration is fitted on (reader.fit_calibration), and, drawn from the MNIST test digits, the
    other-writer set its figures are measured on (bench/novelty.py)."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    x = images.float()
    n = len(x)
    kind = torch.randint(0, 5, (n,), generator=gen)
    out = x.clone()

    def pick(k):
        return (kind == k).nonzero().flatten()

    if len(i := pick(0)):  # thicker: a 3x3 maximum, blended in part
        a = torch.rand(len(i), 1, 1, generator=gen) * 0.6 + 0.4
        thick = F.max_pool2d(x[i].unsqueeze(1), 3, 1, 1).squeeze(1)
        out[i] = a * thick + (1 - a) * x[i]
    if len(i := pick(1)):  # thinner: a 3x3 minimum, blended, the ink kept at full strength
        a = torch.rand(len(i), 1, 1, generator=gen) * 0.5 + 0.3
        thin = -F.max_pool2d(-x[i].unsqueeze(1), 3, 1, 1).squeeze(1)
        t = a * thin + (1 - a) * x[i]
        out[i] = (t * 255 / t.amax((1, 2), keepdim=True).clamp_min(1)).clamp(0, 255)
    if len(i := pick(2)):  # slanted hard one way or the other
        p = torch.zeros(len(i), 36)
        p[:, 2] = (torch.rand(len(i), generator=gen) * 0.3 + 0.25) * torch.sign(
            torch.rand(len(i), generator=gen) - 0.5
        )
        out[i] = warp(images[i], p)
    if len(i := pick(3)):  # bent and turned further than training's augmentation
        out[i] = warp(images[i], warp_params(len(i), 1.7, gen))
    if len(i := pick(4)):  # a coarse scan, scaled back up: each its own scan size
        sizes = torch.randint(8, 17, (len(i),), generator=gen)
        for size in sizes.unique().tolist():
            j = i[sizes == size]
            small = F.interpolate(x[j].unsqueeze(1), size=(size, size), mode="area")
            out[j] = F.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False).squeeze(1)
        out[i] = (out[i] * 255 / out[i].amax((1, 2), keepdim=True).clamp_min(1)).clamp(0, 255)
    return out.round().clamp(0, 255).to(torch.uint8)


IGNORE = -100  # the label of a non-digit picture in a batch: cross-entropy's ignore_index


AHEAD_ROWS = 2048  # images a CPU epoch without per-step drawing prepares in one pass (EpochPlan._ahead)


class EpochPlan:
    """One epoch's order and augmentation, drawn up front from a generator.

    Drawing everything at the epoch's start means a run stopped at any step resumes exactly: the
    generator state saved at the epoch's start redraws the same plan.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shift_px: int,
        generator: torch.Generator,
        device: torch.device,
        outliers: torch.Tensor | None = None,
        per_step: int = 0,
        augment: float = 0.0,
    ):
        self.batch_size = batch_size
        self.shift_px = shift_px
        self.made: tuple | None = None  # the batches `_ahead` made: (their key, x, y)
        self.order = torch.randperm(n, generator=generator, device=generator.device).to(device)
        self.offsets = None
        if shift_px > 0:
            self.offsets = torch.randint(
                -shift_px, shift_px + 1, (n, 2), generator=generator, device=generator.device
            ).to(device)
        self.steps = (n + batch_size - 1) // batch_size
        # Random turns, scales, shears and bends (`warp`), drawn only when asked for.
        self.bends = warp_params(n, augment, generator).to(device) if augment > 0 else None
        # Non-digit pictures (outliers.py) after each step's digits, labelled IGNORE: drawn only
        # when asked for, so a run without them draws exactly what it always drew.
        self.outliers, self.picks, self.pick_offsets = outliers, None, None
        if outliers is not None and per_step > 0:
            self.picks = torch.randint(
                len(outliers), (self.steps, per_step), generator=generator, device=generator.device
            ).to(device)
            if shift_px > 0:
                self.pick_offsets = torch.randint(
                    -shift_px,
                    shift_px + 1,
                    (self.steps, per_step, 2),
                    generator=generator,
                    device=generator.device,
                ).to(device)
            self.pick_bends = (
                warp_params(self.steps * per_step, augment, generator)
                .to(device)
                .reshape(self.steps, per_step, -1)
                if augment > 0
                else None
            )

    def batch(
        self,
        step: int,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: float,
        std: float,
        rank: int = 0,
        world: int = 1,
    ):
        """The (x, y) of one step; under data parallelism each rank takes every world-th sample."""
        if world == 1 and self.picks is None and self.bends is None and images.device.type == "cpu":
            return self._ahead(step, images, labels, mean, std)
        sl = slice(step * self.batch_size + rank, (step + 1) * self.batch_size, world)
        x, y = self._cut(sl, images, labels, mean, std)
        if self.picks is None or self.outliers is None:  # picks are drawn only when there are outliers
            return x, y
        offsets = None if self.pick_offsets is None else self.pick_offsets[step, rank::world]
        picks = take(self.outliers, self.picks[step, rank::world], offsets, self.shift_px)
        if self.pick_bends is not None:
            picks = warp(picks, self.pick_bends[step, rank::world])
        return (
            torch.cat([x, normalize(picks, mean, std)]),
            torch.cat([y, torch.full((len(picks),), IGNORE, dtype=y.dtype, device=y.device)]),
        )

    def _ahead(self, step: int, images, labels, mean: float, std: float):
        """`batch` where nothing is drawn per step (no bends, no non-digits): the batches of
        AHEAD_ROWS images at once, in one native pass, each step then a view. A step's own pass
        cost more in calls than in copying (bench/epoch_split.py)."""
        steps = max(1, AHEAD_ROWS // self.batch_size)
        first = step - step % steps
        key = (first, id(images), id(labels), mean, std)  # the same tensors: their ids
        if self.made is None or self.made[0] != key:
            rows = slice(first * self.batch_size, (first + steps) * self.batch_size)
            self.made = (key, *self._cut(rows, images, labels, mean, std))
        at = (step - first) * self.batch_size
        return self.made[1][at : at + self.batch_size], self.made[2][at : at + self.batch_size]

    def outlier_rows(self, rank: int = 0, world: int = 1) -> int:
        """How many of this process's rows in each step are non-digit pictures."""
        return 0 if self.picks is None else len(range(rank, self.picks.shape[1], world))

    def whole(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float):
        """Every batch of the epoch at once, in step order: batch k is rows k*B to (k+1)*B.

        The same values as `batch()`, made with a handful of kernels instead of a handful per
        step: on a GPU, where each launch costs more than LeNet-5's arithmetic, that matters.
        """
        return self._cut(slice(None), images, labels, mean, std)

    def _cut(self, sl: slice, images, labels, mean, std):
        idx = self.order[sl]
        offsets = None if self.offsets is None else self.offsets[sl]
        if self.bends is None:
            return take(images, idx, offsets, self.shift_px, (mean, std)), labels.index_select(0, idx)
        x = take(images, idx, offsets, self.shift_px)
        return normalize(warp(x, self.bends[sl]), mean, std), labels.index_select(0, idx)

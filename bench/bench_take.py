"""Making training batches natively (`take`: pick, shift, normalise) at every x86-64 level this
CPU runs, in one run: milliseconds per 2,000 images, unshifted and shifted, best of 5 rounds.

    python bench/bench_take.py

Its results: the README's table (where a training epoch's time goes).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lenet5.data import load_mnist  # noqa: E402
from lenet5.fast import native  # noqa: E402


def main() -> int:
    images = load_mnist(ROOT / "data").train_images
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(60_000, generator=gen)
    shifts = torch.randint(-2, 3, (60_000, 2), generator=gen)
    print(f"{torch.get_num_threads()} threads")
    for level in native.levels():
        kernels = native.load(level)
        if kernels is None:
            print(f"{level}: {native.status(level)}")
            continue
        for name, offsets in (("unshifted", None), ("shifted", shifts)):
            best = float("inf")
            for _ in range(5):
                t = time.perf_counter()
                for r in range(30):
                    rows = slice(r * 2000, (r + 1) * 2000)
                    shift = None if offsets is None else offsets[rows]
                    kernels.take(images, idx[rows], shift, (0.1307, 0.3081))
                best = min(best, (time.perf_counter() - t) / 30)
            print(f"{level}  {name:9s}  {1000 * best:.3f} ms per 2,000 images")
    return 0


if __name__ == "__main__":
    sys.exit(main())

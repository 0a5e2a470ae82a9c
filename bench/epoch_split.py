"""Where an epoch's time goes, inside one training run: the steps against everything around them.

    python bench/epoch_split.py                          # the seed recipe (batch 64), 2 epochs
    python bench/epoch_split.py --recipe default --epochs 2

Runs lenet5's own `fit` with its loop's parts wrapped in timers: the training step itself (forward,
backward, update), making each batch (order, shifts, bends, non-digits, normalisation), the
validation pass, the epoch's files, and the rest (progress bar, stop checks, schedule). The first
epoch warms up (native kernels measured and chosen, allocations); the figures are the later
epochs'. Run it alone: a second busy process skews every figure. Its results: the README's table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lenet5 import training  # noqa: E402
from lenet5.config import from_recipe  # noqa: E402
from lenet5.data import load_mnist  # noqa: E402

spent: dict[str, float] = defaultdict(float)


def timed(name, fn):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] += time.perf_counter() - t

    return wrapper


def instrument() -> None:
    """Wrap the loop's parts where `_fit` looks them up (lenet5.training's module globals)."""
    make_step, batches = training.make_step, training.batches

    def make_step_timed(*args, **kwargs):
        step, path = make_step(*args, **kwargs)
        call = type(step).__call__

        class Timed(type(step)):  # the same object, its __call__ timed
            def __call__(self, *a, **k):
                t = time.perf_counter()
                try:
                    return call(self, *a, **k)
                finally:
                    spent["step"] += time.perf_counter() - t

        step.__class__ = Timed
        return step, path

    def batches_timed(*args, **kwargs):
        return timed("batch", batches(*args, **kwargs))

    training.make_step, training.batches = make_step_timed, batches_timed
    training.EpochPlan = timed("epoch plan", training.EpochPlan)
    training.end_of_epoch = timed("validation and figures", training.end_of_epoch)
    training.save_epoch = timed("epoch files", training.save_epoch)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="seed")
    p.add_argument("--epochs", type=int, default=3, help="epochs; the first is the warm-up")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    data = load_mnist(ROOT / "data")
    instrument()
    walls: list[float] = []
    marks: list[dict] = []
    last = [time.perf_counter()]

    def on_epoch(row):
        now = time.perf_counter()
        walls.append(now - last[0])
        marks.append(dict(spent))
        last[0] = now

    def on_start(path):
        last[0] = time.perf_counter()
        spent.clear()

    cfg = from_recipe(
        args.recipe,
        epochs=args.epochs,
        patience=0,
        progress=False,
        out_dir=tempfile.mkdtemp(prefix="lenet5-split-"),
        threads=args.threads,
    )
    training.fit(cfg, data, on_start=on_start, on_epoch=on_epoch, test=False)
    wall = sum(walls[1:])
    parts = {k: marks[-1].get(k, 0.0) - marks[0].get(k, 0.0) for k in marks[-1]}
    parts["rest (bar, stop checks, schedule, loop)"] = wall - sum(parts.values())
    steps = -(-(60_000 - cfg.val_size) // cfg.batch_size)
    n = len(walls) - 1
    print(
        f"recipe {args.recipe}, batch {cfg.batch_size}, {steps} steps an epoch; "
        f"{n} epoch(s) after the warm-up: {wall / n:.3f} s an epoch"
    )
    for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<42} {seconds / n:7.3f} s  {100 * seconds / wall:5.1f} %")
    outside = wall - parts.get("step", 0.0)
    print(f"outside the step: {100 * outside / wall:.1f} % of the epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())

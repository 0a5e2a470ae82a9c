"""Accuracy on MNIST test digits handed over the way people hand over their own, against the same
model's accuracy on the same digits as MNIST gives them.

Each digit is rendered dark on light paper, scaled up 3-8x, off-centre on a larger sheet with
uneven light and sensor noise, saved as JPEG (a quarter of them with a box drawn round the edge),
then read back through `lenet5.images.load_digit`, as `lenet5 predict FILE` does.

    python bench/rendered_digits.py runs/NAME/best.pt [--count 10000] [--seed 0]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from people import render  # noqa: E402  (the renderer the tests use)

from lenet5.checkpoint import load_model, normalization, resolve  # noqa: E402
from lenet5.data import load_mnist  # noqa: E402
from lenet5.images import ImageError, load_digit  # noqa: E402
from lenet5.predict import classify  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="checkpoint or run folder (default: newest run)")
    parser.add_argument("--count", type=int, default=10000, help="test digits to render (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args()

    path = resolve(args.checkpoint)
    model, obj = load_model(path)
    mean, std = normalization(obj)
    data = load_mnist(args.data_dir)
    rng = np.random.default_rng(args.seed)
    n = min(args.count, len(data.test_images))
    inputs, unread, t0 = [], 0, time.perf_counter()
    for i in range(n):
        picture = render(data.test_images[i].numpy(), rng, frame=i % 4 == 3)
        try:
            inputs.append(load_digit(picture, f"test image {i}"))
        except ImageError:
            inputs.append(torch.zeros(28, 28, dtype=torch.uint8))  # counted as wrong
            unread += 1
    seconds = time.perf_counter() - t0
    labels = data.test_labels[:n]
    rendered = (classify(model, torch.stack(inputs), mean, std).argmax(1) == labels).double().mean().item()
    plain = (classify(model, data.test_images[:n], mean, std).argmax(1) == labels).double().mean().item()
    print(f"{path}: {n} MNIST test digits")
    print(f"  as MNIST gives them:      {100 * plain:.2f} %")
    print(f"  rendered as people's JPEGs: {100 * rendered:.2f} %  ({unread} unreadable; "
          f"{1000 * seconds / n:.1f} ms per picture to render and read)")


if __name__ == "__main__":
    main()

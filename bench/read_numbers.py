"""How often whole numbers are read exactly: numbers written with MNIST test digits, photographed as
people hand them over (dark ink on light paper, scaled up 3-6x, uneven light, noise, JPEG), read back
by `lenet5.numbers.load_number` (what `lenet5 predict FILE --number` does) with a trained model.

Four ways of writing each number: apart (3-6 MNIST pixels between digits), touching (each digit's
ink meeting its neighbour's), in two strokes (each digit cut across a third of the way down) and
of different heights (55-100 %). Prints the share read exactly, digit for digit, and the share of
single digits the model reads right as MNIST gives them (the ceiling: a 4-digit number is read
exactly at most about that share to the 4th power), and the share read exactly among the numbers
whose digits the model reads right one by one (what the finding of the digits loses).

    python bench/read_numbers.py [CHECKPOINT] [--count 500] [--digits 4] [--seed 0]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from people import write_number  # noqa: E402  (the writer the tests use)

import lenet5  # noqa: E402
from lenet5.data import load_mnist  # noqa: E402
from lenet5.images import ImageError  # noqa: E402
from lenet5.numbers import load_number  # noqa: E402

WAYS = {"apart": {}, "touching": {"touching": True}, "two strokes": {"strokes": True},
        "heights": {"heights": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="checkpoint or run folder (default: the shipped weights)")
    parser.add_argument("--count", type=int, default=500, help="numbers per way of writing (default: 500)")
    parser.add_argument("--digits", default="4", help="digits per number: N or MIN-MAX (default: 4)")
    parser.add_argument("--ways", default=",".join(WAYS), help=f"some of {', '.join(WAYS)} (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args()

    reader = lenet5.load(args.checkpoint)
    data = load_mnist(args.data_dir)
    images, labels = data.test_images.numpy(), data.test_labels.numpy()
    lo, _, hi = args.digits.partition("-")
    lo, hi = int(lo), int(hi or lo)
    own = reader.probabilities(data.test_images).argmax(1).numpy()  # each digit as MNIST gives it
    single = (own == labels).mean()
    print(f"model: {reader.source}; MNIST test digits read right: {100 * single:.2f}% "
          f"(so at most ~{100 * single ** lo:.1f}% of {lo}-digit numbers)")
    for way in args.ways.split(","):
        rng = np.random.default_rng(args.seed)
        exact = failed = flagged = silent = digits_right = digits_total = fair = fair_exact = 0
        start = time.perf_counter()
        for _ in range(args.count):
            idx = rng.choice(len(images), int(rng.integers(lo, hi + 1)), replace=False)
            data_bytes, _ = write_number([images[i] for i in idx], rng, **WAYS[way])
            truth = "".join(str(labels[i]) for i in idx)
            try:
                got = load_number(data_bytes, reader, "number.jpg").number
            except ImageError:
                failed += 1
                got = ""
            flagged += "?" in got  # said what it could not read, digit by digit
            silent += got != truth and got != "" and "?" not in got  # wrong, and sure of it
            exact += got == truth
            if all(own[i] == labels[i] for i in idx):  # the model reads every digit right alone
                fair += 1
                fair_exact += got == truth
            if len(got) == len(truth):
                digits_right += sum(a == b for a, b in zip(got, truth))
            digits_total += len(truth)
        took = (time.perf_counter() - start) / args.count
        print(f"{way:12s} {args.count} numbers of {args.digits} digits: read exactly "
              f"{100 * exact / args.count:5.1f}%, digits right {100 * digits_right / digits_total:5.1f}%, "
              f"could not read {failed} + {flagged} with a ? part, wrong without a word "
              f"{100 * silent / args.count:4.1f}%; where the model reads each digit right on its own "
              f"{100 * fair_exact / max(fair, 1):5.1f}% of {fair}; {1000 * took:.0f} ms a number "
              "(writing it included)")


if __name__ == "__main__":
    main()

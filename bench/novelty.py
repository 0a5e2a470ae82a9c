"""How well a reader knows what it reads: "not a digit", calibration, other writers. One run.

    python bench/novelty.py                          # the shipped weights
    python bench/novelty.py runs/NAME --against old.pth --photos 1000

For each checkpoint, side by side:
  MNIST test         accuracy; share accepted as digits and read right; ECE (15 bins)
  digit photos       MNIST test digits photographed on paper (tests/people.py), read from JPEG
  other writers      MNIST test digits re-drawn as other writers and scanners differ (data.restyle)
  non-digits         tests/nondigits.py: letters and signs in fonts training never used, Bezier
                     scribbles, shapes, noise, two digits touching in one box; as 28x28 arrays and
                     photographed; share said "not a digit", by kind
  lookalikes         O, l, S, Z, B, g, ...: reported apart, not a target
and, for the max-probability baseline, the same figures with temperature 1 and a threshold set to
accept as many MNIST test digits as the checkpoint's own does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import nondigits  # noqa: E402
from people import render  # noqa: E402

from lenet5.data import load_mnist, restyle  # noqa: E402
from lenet5.images import ImageError, load_pixels  # noqa: E402
from lenet5.metrics import calibration_error  # noqa: E402
from lenet5.reader import Calibration, Reader  # noqa: E402


def sets(data, photos: int, count: int, seed: int) -> dict:
    """Every set measured, as uint8 pixels (and labels where they are digits)."""
    test_x, test_y = data.test_images, data.test_labels
    rng = np.random.default_rng(seed)
    pick = torch.from_numpy(rng.choice(len(test_x), photos, replace=False))
    photo_x = torch.from_numpy(np.stack([load_pixels(render(test_x[i].numpy(), rng), "photo") for i in pick]))
    others = restyle(test_x, seed + 1)
    non, kinds = nondigits.make(count, seed + 2, test_x.numpy())
    look, _ = nondigits.make(count // 5, seed + 3, test_x.numpy(), ("lookalikes",))
    shots, read = nondigits.photos(count // 3, seed + 4, test_x.numpy()), []
    for jpeg in shots:
        try:
            read.append(load_pixels(jpeg, "photo"))
        except ImageError:  # no digit found there: said so, which counts as rejected
            read.append(np.zeros((28, 28), np.uint8))
    return {"mnist": (test_x, test_y), "photos": (photo_x, test_y[pick]), "others": (others, test_y),
            "non": (non, kinds), "non_photos": (torch.from_numpy(np.stack(read)), None),
            "lookalikes": (look, None)}


def figures(reader: Reader, data: dict) -> dict:
    out = {}
    for name in ("mnist", "photos", "others"):
        x, y = data[name]
        readings = reader.read(x)
        probs = torch.tensor([p.probabilities for p in readings])
        right = probs.argmax(1) == y
        accepted = torch.tensor([p.is_digit for p in readings])
        out[name] = {"accuracy": right.float().mean().item(), "accepted": accepted.float().mean().item(),
                     "accepted_right": (accepted & right).float().mean().item(),
                     "ece": calibration_error(probs, y)["ece"]}
    for name in ("non", "non_photos", "lookalikes"):
        x, kinds = data[name]
        rejected = np.array([not p.is_digit for p in reader.read(x)])
        out[name] = {"rejected": float(rejected.mean())}
        if kinds:
            k = np.array(kinds)
            out[name]["by_kind"] = {kind: float(rejected[k == kind].mean()) for kind in sorted(set(kinds))}
    return out


def baseline(reader: Reader, data: dict) -> Reader:
    """The same weights read by their plain maximum probability (temperature 1), the threshold
    accepting as many MNIST test digits as `reader` does."""
    plain = Reader(reader.model, reader.mean, reader.std, reader.source, reader.device, Calibration(1.0, 0.0))
    accepted = np.mean([p.is_digit for p in reader.read(data["mnist"][0])])
    top = plain.probabilities(data["mnist"][0]).max(1).values.numpy()
    threshold = float(np.quantile(top, 1 - accepted)) if accepted < 1 else 0.0
    return Reader(reader.model, reader.mean, reader.std, reader.source, reader.device,
                  Calibration(1.0, threshold, "baseline"))


def show(name: str, f: dict) -> None:
    pct = lambda v: f"{100 * v:6.2f}%"  # noqa: E731
    print(f"\n{name}")
    for s in ("mnist", "photos", "others"):
        r = f[s]
        print(f"  {s:<12} accuracy {pct(r['accuracy'])}  accepted {pct(r['accepted'])}  accepted and right "
              f"{pct(r['accepted_right'])}  ECE {pct(r['ece'])}")
    print(f"  non-digits   rejected {pct(f['non']['rejected'])}  ("
          + ", ".join(f"{k} {100 * v:.0f}%" for k, v in f["non"]["by_kind"].items()) + ")")
    print(f"  their photos rejected {pct(f['non_photos']['rejected'])}")
    print(f"  lookalikes   rejected {pct(f['lookalikes']['rejected'])}  (O l S Z B g ...: not a target)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", nargs="?", help="a checkpoint or run folder (default: the shipped weights)")
    ap.add_argument("--against", action="append", default=[], help="another checkpoint, measured beside it")
    ap.add_argument("--photos", type=int, default=500, help="digit photos (default 500)")
    ap.add_argument("--count", type=int, default=3000, help="non-digits (default 3000)")
    ap.add_argument("--seed", type=int, default=2024)
    args = ap.parse_args()
    data = sets(load_mnist(ROOT / "data", download_missing=False), args.photos, args.count, args.seed)
    for source in [args.checkpoint, *args.against]:
        reader = Reader.load(source)
        print(f"\n== {reader.source}: temperature {reader.temperature:.3f}, not a digit below "
              f"{100 * reader.threshold:.1f}% ({reader.calibration.fitted or 'not fitted'})")
        show("this reader", figures(reader, data))
        show("max-probability baseline (same weights, temperature 1, same MNIST acceptance)",
             figures(baseline(reader, data), data))
    return 0


if __name__ == "__main__":
    sys.exit(main())

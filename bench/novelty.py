"""How well a reader knows what it reads: "not a digit", calibration, other writers. One run.

    python bench/novelty.py                          # the shipped weights
    python bench/novelty.py runs/NAME --against old.pth --photos 1000

For each checkpoint, side by side:
  MNIST test         accuracy; share accepted as digits and read right; ECE (15 bins), of all
                     and of those accepted
  digit photos       MNIST test digits photographed on paper (tests/people.py), read from JPEG
  other writers      MNIST test digits re-drawn as other writers and scanners differ (data.restyle)
  non-digits         tests/nondigits.py: letters and signs in fonts training never used, Bezier
                     scribbles, shapes, noise, two digits touching in one box; as 28x28 arrays and
                     photographed; share said "not a digit", by kind
  lookalikes         O, l, S, Z, B, g, ...: reported apart, not a target
  real writers       where scikit-learn is installed (or --uci FILE): the 1,797 digits of the UCI
                     optdigits test set, written by 43 people on NIST forms and scanned, kept as 8x8
                     counts of ink; drawn as ink on paper 4x over and read as a picture. Real other
                     writers, but coarse: a bench figure, never used to train or tune
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
from lenet5.images import ImageError, load_pixels, prepare_pixels  # noqa: E402
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


def real_writers(path: str | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """UCI optdigits as uint8 pixels and labels: from `path` (digits.csv.gz, or optdigits.tes: 64
    counts from 0 to 16 and the digit on each line), else from scikit-learn; None without either."""
    if path is None:
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            return None
        counts, labels = load_digits(return_X_y=True)
    else:
        rows = np.loadtxt(path, delimiter=",")
        counts, labels = rows[:, :64], rows[:, 64]
    from PIL import Image

    pixels = []
    for c in counts.reshape(-1, 8, 8):
        paper = Image.fromarray((255 - c * 255 / 16).astype(np.uint8)).resize((32, 32), Image.LANCZOS)
        try:
            pixels.append(prepare_pixels(paper, "optdigits"))
        except ImageError:  # no digit found: a blank, rejected and wrong
            pixels.append(np.zeros((28, 28), np.uint8))
    return torch.from_numpy(np.stack(pixels)), torch.from_numpy(labels.astype(np.int64))


def figures(reader: Reader, data: dict) -> dict:
    out = {}
    for name in ("mnist", "photos", "others", "real"):
        if name not in data:
            continue
        x, y = data[name]
        readings = reader.read(x)
        probs = torch.tensor([p.probabilities for p in readings])
        right = probs.argmax(1) == y
        accepted = torch.tensor([p.is_digit for p in readings])
        kept = calibration_error(probs[accepted], y[accepted])["ece"] if accepted.any() else 0.0
        out[name] = {"accuracy": right.float().mean().item(), "accepted": accepted.float().mean().item(),
                     "accepted_right": (accepted & right).float().mean().item(),
                     "ece": calibration_error(probs, y)["ece"],
                     "ece_accepted": kept}
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
    for s in ("mnist", "photos", "others", "real"):
        if s not in f:
            continue
        r = f[s]
        print(f"  {s:<12} accuracy {pct(r['accuracy'])}  accepted {pct(r['accepted'])}  accepted and right "
              f"{pct(r['accepted_right'])}  ECE {pct(r['ece'])} (of those accepted {pct(r['ece_accepted'])})")
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
    ap.add_argument("--uci", help="UCI optdigits as CSV (default: scikit-learn's copy, where installed)")
    args = ap.parse_args()
    data = sets(load_mnist(ROOT / "data", download_missing=False), args.photos, args.count, args.seed)
    real = real_writers(args.uci)
    if real is not None:
        data["real"] = real
    else:
        print("real writers: not measured (pip install scikit-learn, or --uci optdigits.tes)")
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

"""`images.prepare` against an earlier revision of itself, side by side in one process: the same
pictures, the same moment, so the ratio holds on a busy machine. Checks first that both give the
same 28x28 input bit for bit, then times each (best of 3 rounds, in turn).

The earlier `images.py` is taken from git (default: the last revision before scipy.ndimage, whose
connected regions were found by min-label propagation in numpy).

    python bench/bench_prepare.py [--against REV] [--count 40]
"""

import argparse
import importlib.util
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
from people import render  # noqa: E402  (the renderer the tests use)

from lenet5 import images  # noqa: E402
from lenet5.data import load_mnist  # noqa: E402


def earlier(rev: str):
    """lenet5.images as it was at `rev`, imported under another name."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:src/lenet5/images.py"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "images_earlier.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("lenet5.images_earlier", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pictures(count: int) -> dict[str, list]:
    """Opened pictures of MNIST test digits, four kinds."""
    from PIL import Image

    mnist = load_mnist(ROOT / "data")
    rng = np.random.default_rng(0)
    digits = [mnist.test_images[i].numpy() for i in range(count)]
    out = {"260x210 JPEG (load_web.py's)": [], "people (rendered_digits.py's)": [],
           "12-megapixel phone photo": [], "salt and pepper": []}
    for i, d in enumerate(digits):
        paper = Image.new("L", (260, 210), 255)
        paper.paste(Image.fromarray(255 - d).resize((168, 168), Image.BILINEAR), (20 + 7 * (i % 10), 10))
        buf = io.BytesIO()
        paper.save(buf, "JPEG", quality=90)
        out["260x210 JPEG (load_web.py's)"].append(images.open_image(buf.getvalue()))
        out["people (rendered_digits.py's)"].append(images.open_image(render(d, rng, frame=i % 3 == 0)))
        sheet = np.full((240, 300), 255, np.uint8)
        sheet[40:180, 70:210] = np.asarray(Image.fromarray(255 - d).resize((140, 140)))
        noise = rng.random(sheet.shape)
        sheet[noise < 0.03], sheet[noise > 0.97] = 0, 255
        out["salt and pepper"].append(Image.fromarray(sheet))
        if i < max(4, count // 8):  # large: a few are enough
            photo = Image.new("L", (3024, 4032), 235)
            photo.paste(Image.fromarray(255 - d).resize((1200, 1200), Image.BICUBIC), (700 + 20 * i, 1400))
            buf = io.BytesIO()
            photo.save(buf, "JPEG", quality=90)
            out["12-megapixel phone photo"].append(images.open_image(buf.getvalue()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="cdd9711", help="git revision to compare with (default: cdd9711)")
    parser.add_argument("--count", type=int, default=40, help="pictures of each kind (default: 40)")
    args = parser.parse_args()

    old = earlier(args.against)
    sets = pictures(args.count)
    differ = sum(not torch.equal(old.prepare(im), images.prepare(im)) for ims in sets.values() for im in ims)
    print(f"inputs that differ from {args.against}'s: {differ} of {sum(map(len, sets.values()))}")
    for kind, ims in sets.items():
        best = {"earlier": float("inf"), "now": float("inf")}
        for _ in range(3):
            for label, module in (("earlier", old), ("now", images)):
                start = time.perf_counter()
                for im in ims:
                    module.prepare(im)
                best[label] = min(best[label], (time.perf_counter() - start) / len(ims) * 1000)
        print(f"{kind:32s} {ims[0].size[0]}x{ims[0].size[1]}: {args.against} {best['earlier']:6.2f} ms, "
              f"now {best['now']:6.2f} ms ({best['earlier'] / best['now']:.1f}x)")


if __name__ == "__main__":
    main()

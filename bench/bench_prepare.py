"""`images` against an earlier revision of itself, side by side in one process: the same picture
files, the same moment, so the ratio holds on a busy machine. Each revision opens the files itself
(`open_image`: decoding, shrinking); the bench counts the 28x28 inputs that differ, then times
`prepare` on each revision's own opened pictures, and the whole reading, `open_image` + `prepare`
(best of --rounds, in turn).

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


def pictures(count: int) -> dict[str, list[bytes]]:
    """Picture files (their bytes) of MNIST test digits, four kinds."""
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
        out["260x210 JPEG (load_web.py's)"].append(buf.getvalue())
        out["people (rendered_digits.py's)"].append(render(d, rng, frame=i % 3 == 0))
        sheet = np.full((240, 300), 255, np.uint8)
        sheet[40:180, 70:210] = np.asarray(Image.fromarray(255 - d).resize((140, 140)))
        noise = rng.random(sheet.shape)
        sheet[noise < 0.03], sheet[noise > 0.97] = 0, 255
        buf = io.BytesIO()
        Image.fromarray(sheet).save(buf, "PNG")
        out["salt and pepper"].append(buf.getvalue())
        if i < max(4, count // 8):  # large: a few are enough
            photo = Image.new("L", (3024, 4032), 235)
            photo.paste(Image.fromarray(255 - d).resize((1200, 1200), Image.BICUBIC), (700 + 20 * i, 1400))
            buf = io.BytesIO()
            photo.save(buf, "JPEG", quality=90)
            out["12-megapixel phone photo"].append(buf.getvalue())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="cdd9711", help="git revision to compare with (default: cdd9711)")
    parser.add_argument("--count", type=int, default=40, help="pictures of each kind (default: 40)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, the best kept (default: 5)")
    args = parser.parse_args()

    old = earlier(args.against)
    sets = pictures(args.count)
    modules = {args.against: old, "now": images}
    differ = sum(not torch.equal(old.load_digit(f), images.load_digit(f)) for fs in sets.values() for f in fs)
    print(f"28x28 inputs that differ from {args.against}'s: {differ} of {sum(map(len, sets.values()))}")
    print(f"ms per picture, best of {args.rounds} rounds: prepare alone, and open_image + prepare")
    for kind, files in sets.items():
        opened = {label: [m.open_image(f) for f in files] for label, m in modules.items()}
        best = {(label, what): float("inf") for label in modules for what in ("prepare", "read")}
        for _ in range(args.rounds):
            for label, m in modules.items():
                start = time.perf_counter()
                for im in opened[label]:
                    m.prepare(im)
                best[label, "prepare"] = min(best[label, "prepare"], (time.perf_counter() - start) / len(files) * 1e3)
                start = time.perf_counter()
                for f in files:
                    m.prepare(m.open_image(f))
                best[label, "read"] = min(best[label, "read"], (time.perf_counter() - start) / len(files) * 1e3)
        sizes = " / ".join(f"{opened[label][0].size[0]}x{opened[label][0].size[1]}" for label in modules)
        cells = ", ".join(f"{what} {best[args.against, what]:.2f} -> {best['now', what]:.2f} "
                          f"({best[args.against, what] / best['now', what]:.1f}x)" for what in ("prepare", "read"))
        print(f"{kind:30s} opened {sizes}: {cells}")


if __name__ == "__main__":
    main()

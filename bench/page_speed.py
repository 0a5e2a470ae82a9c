"""The serverless page's time per reading in Chromium: `lenet5 export --format web` of a checkpoint
(default: the shipped weights), opened from disk, a digit drawn on the pad (a number on the wide
pad), then the page's own reading timed N times in a row, each from the pad's pixels to the answer
on the page (app.js: getImageData, toGray, reader.js, show). Prints the median and the spread, with
the CPU that ran it; the README's figures table holds the result. Then the page's own forward
pass on the 10,000 MNIST test images against PyTorch's: predictions identical, the largest logit
difference, and the time per image.

    python bench/page_speed.py [CHECKPOINT] [--repeat 50]

Wait while /tmp/lenet5-bench.lock exists: on a shared machine another timing run makes this one
meaningless (and the other way round).
"""

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))
from conftest import CHROMIUM, CHROMIUM_ARGS, draw  # noqa: E402  (the tests' browser set-up)

from lenet5.cli import main as lenet5  # noqa: E402
from lenet5.fast.native import cpu_model  # noqa: E402
from lenet5.weights import shipped  # noqa: E402

DRAWINGS = {  # mode -> strokes, as fractions of the pad: a 7, and the number 17
    "digit": [[(0.3, 0.2), (0.7, 0.2)], [(0.7, 0.2), (0.45, 0.85)]],
    "number": [[(0.25, 0.2), (0.25, 0.8)], [(0.5, 0.2), (0.65, 0.2)], [(0.65, 0.2), (0.55, 0.8)]],
}
# app.js's own path, called as the pad calls it (predictPad), timed inside the page.
TIME_READINGS = """async (repeat) => {
  const times = [];
  for (let i = 0; i < repeat; i++) {
    const start = performance.now();
    await predictPad();
    times.push(performance.now() - start);
  }
  return times;
}"""


def measure(page, mode: str, repeat: int) -> list[float]:
    page.check(f"input[name=mode][value={mode}]")
    draw(page, DRAWINGS[mode])
    page.wait_for_selector("body[data-state=answered]")
    page.evaluate(TIME_READINGS, 5)  # warm-up: the JIT compiles the reader's loops
    times = page.evaluate(TIME_READINGS, repeat)
    if page.inner_text("#status"):
        raise SystemExit(f"the page did not read the {mode}: {page.inner_text('#status')}")
    return times


# The page's forward pass over a batch of uint8 28x28 images (base64): their logits, and the time.
FORWARD = """(b64) => {
  const model = window.__model || (window.__model = Lenet5Reader.loadModel(window.LENET5_MODEL));
  const px = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const out = [];
  const start = performance.now();
  for (let i = 0; i < px.length; i += 784) out.push(...Lenet5Reader.logits(model, px.subarray(i, i + 784)));
  return [out, performance.now() - start];
}"""


def forward_check(page, checkpoint: str) -> tuple[int, float, float]:
    """(predictions identical to PyTorch's, the largest |logit difference|, ms per image) over the
    10,000 MNIST test images, through the page's own forward pass."""
    import base64

    import numpy as np
    import torch

    from lenet5.checkpoint import load_model, normalization
    from lenet5.data import load_mnist, normalize

    images = load_mnist(ROOT / "data").test_images
    model, obj = load_model(checkpoint, "cpu")
    with torch.no_grad():
        want = model(normalize(images, *normalization(obj))).numpy()
    got, ms = [], 0.0
    for start in range(0, len(images), 2500):
        out, t = page.evaluate(FORWARD, base64.b64encode(images[start:start + 2500].numpy().tobytes()).decode())
        got.append(np.array(out).reshape(-1, 10))
        ms += t
    got = np.concatenate(got)
    return int((got.argmax(1) == want.argmax(1)).sum()), float(np.abs(got - want).max()), ms / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", help="checkpoint (default: the shipped weights)")
    parser.add_argument("--repeat", type=int, default=50, help="readings timed per mode (default: 50)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "page"
        if lenet5(["export", args.checkpoint or str(shipped()), "--format", "web", "--out", str(out)]):
            raise SystemExit(1)
        version, answer, rows, check = run(out, args.repeat, args.checkpoint or str(shipped()))
    print(f"\nChromium {version} (headless), {cpu_model()}, {os.cpu_count()} CPUs; {args.repeat} "
          f"readings each, pad pixels -> answer shown (last number read: {answer})")
    print(f"{'reading':<26} {'median ms':>10} {'min':>8} {'max':>8}")
    for mode, times in rows:
        what = "a digit, 280x280 pad" if mode == "digit" else "a number, 840x280 pad"
        print(f"{what:<26} {statistics.median(times):>10.2f} {min(times):>8.2f} {max(times):>8.2f}")
    same, diff, ms = check
    print(f"the page's forward pass on the 10,000 MNIST test images: {same:,}/10,000 predictions as "
          f"PyTorch's, max |logit difference| {diff:.1e}, {ms:.2f} ms an image")


def run(out: Path, repeat: int, checkpoint: str):
    """(Chromium's version, the number last read, [(mode, ms per reading)], `forward_check`) for
    the page in `out`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 900, "height": 700})
        page.goto((out / "index.html").as_uri())
        rows = [(mode, measure(page, mode, repeat)) for mode in DRAWINGS]
        answer = page.inner_text("#number")
        check = forward_check(page, checkpoint)
        version = browser.version
        browser.close()
    return version, answer, rows, check


if __name__ == "__main__":
    main()

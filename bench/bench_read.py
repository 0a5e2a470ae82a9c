"""Reading speed: lenet5's Reader beside onnxruntime on lenet5's own ONNX export, in one run.

    python bench/bench_read.py                     # torch's thread count (all cores)
    python bench/bench_read.py --threads 1 --rounds 7

Both take uint8 pixels (N, 28, 28) and normalise inside, with the same number of threads, in
turns (so a passing load on the machine hits both alike); the best of each round's repeats is
kept and the median over rounds printed. Columns:
  reader     Reader.probabilities(pixels): the forward fast/choose.py chose (native or torch's),
             the calibrated softmax included
  torch      the model itself in eager torch (what every door ran before the reader's forward)
  ort        InferenceSession(intra_op_num_threads=threads).run on the export's logits
and, last, `Reader.predict(array)` for one (28, 28) digit and `Reader.predict(photo path)`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

import lenet5  # noqa: E402
from lenet5.data import load_mnist, normalize  # noqa: E402
from lenet5.environment import describe  # noqa: E402
from lenet5.export import export  # noqa: E402


def best_time(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="threads for all three (0: torch's default)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", default="1,64,1024,10000")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    import onnxruntime as ort

    reader = lenet5.load()
    data = load_mnist(ROOT / "data", download_missing=False)
    out = Path(tempfile.mkdtemp()) / "lenet5.onnx"
    export(reader, "onnx", out)
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    env = describe("cpu")
    print(f"CPU {env['cpu']}; {threads} threads; reader path: {reader.path.line()}; "
          f"onnxruntime {ort.__version__}; torch {torch.__version__}")
    model = reader.model

    @torch.no_grad()
    def eager(px):
        return torch.softmax(model(normalize(torch.from_numpy(px), reader.mean, reader.std)), 1)

    print(f"\n{'batch':>6} {'reader':>12} {'torch':>12} {'ort':>12} {'reader/ort':>11} {'img/s reader':>13}")
    for batch in [int(b) for b in args.batches.split(",")]:
        px = np.ascontiguousarray(data.test_images[:batch].numpy()) if batch <= 10000 else \
            np.ascontiguousarray(data.train_images[:batch].numpy())
        repeats = max(3, min(2000, 20000 // batch))
        rounds = {"reader": [], "torch": [], "ort": []}
        for _ in range(args.rounds):
            rounds["reader"].append(best_time(lambda: reader.probabilities(px), repeats))
            rounds["torch"].append(best_time(lambda: eager(px), repeats))
            rounds["ort"].append(best_time(lambda: session.run(["logits"], {"pixels": px}), repeats))
        med = {k: statistics.median(v) for k, v in rounds.items()}
        print(f"{batch:>6} {med['reader'] * 1e6:>10.1f}us {med['torch'] * 1e6:>10.1f}us "
              f"{med['ort'] * 1e6:>10.1f}us {med['ort'] / med['reader']:>10.2f}x {batch / med['reader']:>13,.0f}")
    one = np.ascontiguousarray(data.test_images[0].numpy())
    t_one = statistics.median(best_time(lambda: reader.predict(one), 2000) for _ in range(args.rounds))
    print(f"\nReader.predict of one (28, 28) array: {t_one * 1e6:.1f} us")
    from people import render

    photo = Path(tempfile.mkdtemp()) / "photo.jpg"
    photo.write_bytes(render(data.test_images[0].numpy(), np.random.default_rng(0)))
    t_photo = statistics.median(best_time(lambda: reader.predict(photo), 50) for _ in range(args.rounds))
    print(f"Reader.predict of a photo ({photo.stat().st_size // 1024} KiB JPEG): {t_photo * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

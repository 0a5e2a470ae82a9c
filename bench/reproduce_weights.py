"""Train the shipped weights again, as their model card says, and compare.

    python bench/reproduce_weights.py            # about half a minute on 2 CPU cores, more on fewer

Runs the card's command (the default recipe, its seed) into a temporary folder, scores the result
on the MNIST test set, and prints it beside the card: the test accuracy within 0.1 % of the card's
is a reproduction. The SHA-256 matches only on a machine whose kernels round exactly as the one that
made them did (float sums in another order, another CPU's vector width, differ in the last bits,
and training amplifies those): reported, not required.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lenet5 import api  # noqa: E402
from lenet5.weights import card  # noqa: E402


def main() -> int:
    info = card()
    out = Path(tempfile.mkdtemp(prefix="lenet5-reproduce-"))
    command = shlex.split(info["command"]) + ["--out-dir", str(out), "--name", "again", "--no-test",
                                              "--no-progress", "--data-dir", str(ROOT / "data")]
    print("running:", " ".join(command), flush=True)
    subprocess.run([sys.executable, "-m", *command], check=True)
    weights = out / "again" / "mnist_lenet5.pth"
    accuracy = api.evaluate(weights, data_dir=str(ROOT / "data"))["accuracy"]
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    print(f"card:  test accuracy {100 * info['test_accuracy']:.2f}%  sha256 {info['sha256'][:16]}...")
    print(f"again: test accuracy {100 * accuracy:.2f}%  sha256 {sha[:16]}... "
          f"({'identical' if sha == info['sha256'] else 'other bits: another CPU or thread count'})")
    ok = abs(accuracy - info["test_accuracy"]) <= 0.001
    print("reproduced" if ok else "NOT reproduced: test accuracy differs by more than 0.1 %")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Where a training step's time goes: torch.profiler over steps of lenet5's own training loop.

    python bench/profile_step.py                          # CPU, the seed's batch of 64, 200 steps
    python bench/profile_step.py --device cuda --batch-size 256 [--no-cuda-graphs]

Runs `fit` (the seed recipe: no augmentation, no validation pass) once to warm up, then again under
the profiler, and prints each op's time per step, host and device, largest first. Run it alone:
a second busy process skews every figure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lenet5.config import choose_device, from_recipe  # noqa: E402
from lenet5.data import load_mnist  # noqa: E402
from lenet5.errors import Lenet5Error  # noqa: E402
from lenet5.training import fit  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True,
                   help="on CUDA, record each step as a graph, as training does by default")
    p.add_argument("--rows", type=int, default=25, help="ops to list")
    p.add_argument("--by-shape", action="store_true", help="one row per op and input shape (conv1 apart from conv2)")
    args = p.parse_args()
    device = choose_device(args.device)
    data = load_mnist(ROOT / "data")
    out = tempfile.mkdtemp(prefix="lenet5-profile-")

    def run(name):
        cfg = from_recipe("seed", epochs=1, batch_size=args.batch_size, limit=args.steps * args.batch_size,
                          progress=False, out_dir=out, name=name, device=str(device),
                          cuda_graphs=args.cuda_graphs)
        return fit(cfg, data)

    run("warm-up")
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=args.by_shape) as prof:
        seconds = run("profiled")["history"][0]["seconds"]
    steps = args.steps
    rows = []
    for e in prof.key_averages(group_by_input_shape=args.by_shape):
        host = e.self_cpu_time_total / steps
        dev = getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)) / steps
        shape = f" {[s for s in e.input_shapes if s][:1]}" if args.by_shape and e.input_shapes else ""
        rows.append((max(host, dev), e.key + shape, e.count / steps, host, dev))
    rows.sort(reverse=True)
    label = f"{device}" + (", CUDA graphs" if args.cuda_graphs and device.type == "cuda" else "")
    print(f"{steps} steps at batch {args.batch_size} on {label}: {1e3 * seconds / steps:.3f} ms a step "
          f"under the profiler (it adds its own overhead)")
    width = 72 if args.by_shape else 52
    print(f"{'op':<{width}} {'calls/step':>10} {'host us/step':>13} {'device us/step':>15}")
    for _, name, calls, host, dev in rows[:args.rows]:
        print(f"{name[:width]:<{width}} {calls:>10.1f} {host:>13.1f} {dev:>15.1f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Lenet5Error as e:
        sys.exit(f"profile_step: {e}")

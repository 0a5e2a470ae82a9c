"""Speed, side by side in one run: the seed's pipeline against lenet5's own training path.

    python bench/bench_speed.py                 # CPU or the best device; writes bench/results/*.json
    python bench/bench_speed.py --full          # also the default and best recipes (~2 min more on CPU)
    python bench/bench_speed.py --cpu-level x86-64-v3   # as on an AVX2-only CPU (torch's kernels too)

(a) a faithful stand-in of the seed's pipeline: a per-sample Dataset doing what torchvision's MNIST
    + ToTensor + Normalize do (uint8 array -> PIL image -> float tensor -> normalise) through
    DataLoader(batch_size=64, shuffle=True), the seed's loop with loss.item() every step;
(b) lenet5's path (data resident on the device, batches cut by index, no per-step host sync).
It prints epoch seconds for each and their ratio, time-to-accuracy for `--recipe fast`, images/s for
batched inference on the test set, and peak memory. On CUDA the recipes run twice: as shipped (each
step replayed as one CUDA graph) and with plain steps (`--no-cuda-graphs`). On the CPU it names the
CPU model and its ISA levels, and times an epoch at batch 64 and inference with lenet5's native
kernels built for each x86-64 level the CPU runs (v2: SSE4.2, v3: AVX2, v4: AVX-512) beside
torch's kernels (`LENET5_NATIVE=0`) and the path lenet5 chooses by itself. `--cpu-level` caps
everything at one level, torch's own kernels included (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA):
an AVX-512 machine then measures what an AVX2-only one would.
Never run it beside other heavy work: on a 2-core machine a second busy process makes every figure
meaningless.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # seed_code.py: the seed's own model class
sys.path.insert(0, str(ROOT / "bench"))  # time_to_accuracy.py: one timed run of a recipe

from lenet5 import LeNet5  # noqa: E402
from lenet5.fast import choose as compute, native as kernels  # noqa: E402
from lenet5.config import choose_device, from_recipe  # noqa: E402
from lenet5.data import MEAN, STD, load_mnist  # noqa: E402
from lenet5.errors import Lenet5Error  # noqa: E402
from lenet5.metrics import predict_logits  # noqa: E402
from lenet5.training import fit  # noqa: E402
from seed_code import SeedLeNet5  # noqa: E402
from time_to_accuracy import one_run  # noqa: E402


class SeedStyleMNIST(torch.utils.data.Dataset):
    """What torchvision's MNIST(transform=Compose([ToTensor(), Normalize(...)])) does per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images.numpy(), labels.numpy()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image

        img = Image.fromarray(self.images[i], mode="L")  # torchvision: Image.fromarray(img.numpy(), mode="L")
        x = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))  # ToTensor: HWC uint8 ...
        x = x.view(28, 28, 1).permute(2, 0, 1).contiguous().float().div(255)  # ... -> CHW float [0, 1]
        x = (x - torch.tensor([MEAN]).view(1, 1, 1)) / torch.tensor([STD]).view(1, 1, 1)  # Normalize
        return x, int(self.labels[i])


def seed_epoch(data, device, workers: int = 0) -> float:
    """One epoch of the seed's loop; returns seconds."""
    loader = torch.utils.data.DataLoader(SeedStyleMNIST(data.train_images, data.train_labels),
                                         batch_size=64, shuffle=True, num_workers=workers)
    model = SeedLeNet5().to(device)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    sync(device)
    t0 = time.perf_counter()
    running_loss = 0.0
    for inputs, labels in loader:
        inputs, labels = inputs.to(device), labels.to(device)
        optimizer.zero_grad()
        loss = criterion(model(inputs), labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
    sync(device)
    return time.perf_counter() - t0


def lenet5_epoch(data, device, batch_size: int, **overrides) -> float:
    """One epoch of lenet5's own training path (fit), at the seed's batch size; returns seconds.

    A few untimed steps at the same batch size come first: cuDNN's choice of algorithms for a new
    shape is start-up, not an epoch's work (and the other timed runs here find it made)."""
    def cfg(**kw):
        return from_recipe("seed", epochs=1, batch_size=batch_size, progress=False, out_dir=str(TMP),
                           name=f"epoch-{batch_size}-{time.monotonic_ns()}", device=str(device),
                           **overrides, **kw)

    fit(cfg(limit=8 * batch_size), data)
    t0 = time.perf_counter()
    result = fit(cfg(), data)
    return result["history"][0]["seconds"] if result["history"] else time.perf_counter() - t0


@contextlib.contextmanager
def cpu_kernels(native: str, level: str | None = None):
    """Run the block as with LENET5_NATIVE=`native` ("0": torch's kernels, "1": the native ones)
    and LENET5_ISA=`level`."""
    saved = {k: os.environ.get(k) for k in ("LENET5_NATIVE", "LENET5_ISA")}
    os.environ["LENET5_NATIVE"] = native
    if level:
        os.environ["LENET5_ISA"] = level
    kernels.forget()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        kernels.forget()


# what caps torch's own CPU kernels at an x86-64 level: aten's vector code and oneDNN's
TORCH_CAPS = {"x86-64-v2": ("default", "SSE41"), "x86-64-v3": ("avx2", "AVX2"),
              "x86-64-v4": ("avx512", "AVX512_CORE")}


def cap_cpu_level(level: str) -> None:
    """Re-run this benchmark with every CPU path capped at `level` (torch reads its caps at start)."""
    if os.environ.get("LENET5_ISA") == level:
        return
    if level not in TORCH_CAPS:
        sys.exit(f"bench_speed: --cpu-level {level}: one of {', '.join(TORCH_CAPS)}")
    aten, onednn = TORCH_CAPS[level]
    os.environ.update(LENET5_ISA=level, ATEN_CPU_CAPABILITY=aten, ONEDNN_MAX_CPU_ISA=onednn)
    os.execv(sys.executable, [sys.executable, *sys.argv])


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_to_accuracy(data, device, recipe: str, **overrides) -> dict:
    """One run of a recipe (seed 0): fit's wall time and the test accuracy of its best.pt."""
    return {"recipe": recipe, **one_run(data, device, recipe, overrides, 0, str(TMP))}


def training_peak_rss_mb(device) -> float:
    """Peak RSS of a `lenet5 train` process of its own (one epoch of the default recipe).

    Measured inside the child as VmHWM (the peak of its own address space): ru_maxrss survives
    exec and would count this benchmark's memory too.
    """
    import subprocess

    child = ("import runpy, sys\n"
             "sys.argv = ['lenet5'] + sys.argv[1:]\n"
             "try:\n    runpy.run_module('lenet5', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
             "print('RSS', hwm.split()[1])\n")
    proc = subprocess.run([sys.executable, "-c", child, "train", "--epochs", "1", "--no-test",
                           "--no-progress", "--data-dir", str(ROOT / "data"), "--out-dir", str(TMP),
                           "--name", "rss", "--device", str(device)],
                          check=True, capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT / "src")})
    return int(proc.stdout.rsplit("RSS", 1)[1]) / 1024


def inference_rate(data, device, batch_size: int = 1024, repeats: int = 5,
                   channels_last: bool = False) -> float:
    model = LeNet5().to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    images = data.test_images.to(device)
    predict_logits(model, images, MEAN, STD, batch_size, device, channels_last)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        predict_logits(model, images, MEAN, STD, batch_size, device, channels_last)
    sync(device)
    return repeats * len(images) / (time.perf_counter() - t0)


def targets(out: dict, device) -> dict:
    """The speed issue's targets for this kind of device, each met, missed or not measured (None)."""
    def reached(keys, accuracy, seconds):
        runs = [out[k] for k in keys if k in out]
        if not runs:
            return None
        return any(r["test_accuracy"] >= accuracy and r["train_seconds"] < seconds for r in runs)

    if device.type == "cuda":
        rates = [v for k, v in out.items() if k.startswith("inference_")]
        return {
            ">= 99.0% in < 0.5 s": reached(["fast_recipe"], 0.990, 0.5),
            ">= 99.4% in < 5 s": reached(["default_recipe", "best_recipe"], 0.994, 5.0),
            ">= 5M images/s inference": max(rates) >= 5e6 if rates else None,
        }
    return {
        "batch 64 >= 3x the seed pipeline": out["speedup_batch64"] >= 3.0,
        "default path within 5% of torch's kernels or faster": out["default_vs_torch"] >= 0.95,
        "native >= 1.5x torch's kernels (step and inference)": any(
            r["step_vs_torch"] >= 1.5 and r["inference_vs_torch"] >= 1.5
            for k, r in out["cpu_paths"].items() if k == out["level"]),
        "fast >= 99.0% in less than one seed-pipeline epoch": reached(
            ["fast_recipe"], 0.990, out["seed_epoch_s"]),
        "fast >= 99.0% in < 15 s": reached(["fast_recipe"], 0.990, 15.0),
        "default >= 99.3% in < 60 s": reached(["default_recipe"], 0.993, 60.0),
        "training RSS < 1 GB": out["training_peak_rss_mb"] < 1024,
    }


def main() -> int:
    global TMP
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--full", action="store_true", help="also train the default and best recipes")
    p.add_argument("--out", default=None, help="JSON file (default: bench/results/speed-<time>.json)")
    p.add_argument("--cpu-level", default=None, metavar="LEVEL",
                   help="x86-64-v2 | x86-64-v3 | x86-64-v4: measure as on a CPU of that level")
    args = p.parse_args()
    if args.cpu_level:
        cap_cpu_level(args.cpu_level)
    device = choose_device(args.device)
    import tempfile

    TMP = Path(tempfile.mkdtemp(prefix="lenet5-bench-"))
    data = load_mnist(ROOT / "data")
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "cpu": kernels.cpu_model(), "cpu_levels": kernels.levels(),
           "level": kernels.default_level(), "capped": bool(args.cpu_level),
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(f"{out['cpu']} (runs {', '.join(out['cpu_levels'])}); measuring at {out['level']}"
          f"{' (capped: torch too)' if args.cpu_level else ''}; torch {torch.__version__}, "
          f"{out['threads']} threads", flush=True)

    def report(key, value, text):
        out[key] = value
        print(text, flush=True)

    seed_s = seed_epoch(data, device)
    report("seed_epoch_s", round(seed_s, 3), f"seed pipeline, epoch at batch 64:     {seed_s:6.2f} s")
    ours_s = lenet5_epoch(data, device, 64)
    if device.type == "cpu":
        path = compute.for_training(LeNet5().to(memory_format=torch.channels_last), device)
        report("path", path.line(), f"lenet5's own choice: {path.line()}")
    report("lenet5_epoch_s", round(ours_s, 3), f"lenet5 path, epoch at batch 64:       {ours_s:6.2f} s")
    report("speedup_batch64", round(seed_s / ours_s, 2), f"speed-up at batch 64:                 {seed_s / ours_s:6.2f}x")
    if device.type == "cuda":  # the default records each step as a CUDA graph; plain steps for comparison
        alt_key, alt_label, alt = "lenet5_epoch_plain_s", "batch 64, plain steps", {"cuda_graphs": False}
    else:  # the default is channels-last on the CPU
        alt_key, alt_label, alt = "lenet5_epoch_nchw_s", "batch 64, NCHW", {"channels_last": False}
    alt_s = lenet5_epoch(data, device, 64, **alt)
    report(alt_key, round(alt_s, 3), f"{'lenet5 path, ' + alt_label + ':':<38}{alt_s:6.2f} s")
    if device.type == "cpu":  # each CPU path by itself: torch's kernels, the native ones per level
        levels = kernels.levels()
        if args.cpu_level and args.cpu_level in levels:
            levels = levels[:levels.index(args.cpu_level) + 1]
        runs = [("torch", "0", None)] + [(level, "1", level) for level in levels]
        rows = {}
        for name, native, level in runs:
            with cpu_kernels(native, level):
                if native == "1" and kernels.load() is None:
                    print(f"{name}: {kernels.status()}")
                    continue
                epoch_s = lenet5_epoch(data, device, 64)
                rate = inference_rate(data, device, 1024, channels_last=True)
                step = compute.step_ms(kernels.load() if native == "1" else None, True, reps=40)
            rows[name] = {"epoch_b64_s": round(epoch_s, 3), "step_b64_ms": step,
                          "inference_b1024_images_per_s": round(rate)}
        torch_row = rows["torch"]
        for name, row in rows.items():
            row["epoch_vs_torch"] = round(torch_row["epoch_b64_s"] / row["epoch_b64_s"], 2)
            row["step_vs_torch"] = round(torch_row["step_b64_ms"] / row["step_b64_ms"], 2)
            row["inference_vs_torch"] = round(row["inference_b1024_images_per_s"]
                                              / torch_row["inference_b1024_images_per_s"], 2)
            row["epoch_vs_seed"] = round(seed_s / row["epoch_b64_s"], 2)
            label = "torch's kernels" if name == "torch" else f"native {name}"
            print(f"{label:<18} epoch at batch 64 {row['epoch_b64_s']:6.2f} s ({row['epoch_vs_seed']:.2f}x "
                  f"the seed pipeline, {row['epoch_vs_torch']:.2f}x torch's kernels); step "
                  f"{row['step_b64_ms']:.2f} ms ({row['step_vs_torch']:.2f}x); inference "
                  f"{row['inference_b1024_images_per_s']:>9,} images/s ({row['inference_vs_torch']:.2f}x)",
                  flush=True)
        out["cpu_paths"] = rows
        out["default_vs_torch"] = round(torch_row["epoch_b64_s"] / ours_s, 2)
    big_s = lenet5_epoch(data, device, 256)
    report("lenet5_epoch_b256_s", round(big_s, 3), f"lenet5 path, epoch at batch 256:      {big_s:6.2f} s "
                                                   f"({seed_s / big_s:.2f}x the seed pipeline)")
    # On CUDA the recipes run twice: as shipped (each step one CUDA graph), and with plain steps.
    variants = [("", {})] + ([("_plain", {"cuda_graphs": False})] if device.type == "cuda" else [])
    for suffix, kw in variants:
        label = " (plain steps)" if kw else ""
        fast = time_to_accuracy(data, device, "fast", **kw)
        report(f"fast_recipe{suffix}", fast, f"--recipe fast{label}: {100 * fast['test_accuracy']:.2f}% test "
                                             f"accuracy in {fast['train_seconds']:.2f} s ({fast['epochs']} epochs)")
        for recipe in ("default", "best") if args.full else ():
            if kw and recipe == "best":
                continue  # plain steps: the default recipe shows the difference
            full = time_to_accuracy(data, device, recipe, **kw)
            report(f"{recipe}_recipe{suffix}", full, f"--recipe {recipe}{label}: {100 * full['test_accuracy']:.2f}% "
                                                     f"test accuracy in {full['train_seconds']:.2f} s "
                                                     f"({full['epochs']} epochs)")
    for batch in (1024, 10000):
        for cl in (True, False):
            rate = inference_rate(data, device, batch, channels_last=cl)
            layout = "NHWC" if cl else "NCHW"
            report(f"inference_b{batch}_{layout.lower()}_images_per_s", round(rate),
                   f"inference, test set, batch {batch:>5} {layout}: {rate:>10,.0f} images/s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report("peak_rss_mb", round(peak), f"peak RSS of this benchmark:           {peak:6.0f} MB")
    train_rss = training_peak_rss_mb(device)  # after the timings: it is a heavy process of its own
    report("training_peak_rss_mb", round(train_rss), f"peak RSS of `lenet5 train`:           {train_rss:6.0f} MB")
    if device.type == "cuda":
        gpu = torch.cuda.max_memory_allocated(device) / 2**20
        report("peak_gpu_mb", round(gpu), f"peak GPU memory:                      {gpu:6.0f} MB")
    out["targets"] = targets(out, device)
    for name, met in out["targets"].items():
        print(f"target {name}: {'met' if met else 'MISSED' if met is not None else 'not measured'}")
    path = Path(args.out) if args.out else ROOT / "bench" / "results" / f"speed-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


TMP = Path(".")

if __name__ == "__main__":
    try:
        sys.exit(main())
    except Lenet5Error as e:  # a wrong --device, missing data: one line, as the CLI says it
        sys.exit(f"bench_speed: {e}")

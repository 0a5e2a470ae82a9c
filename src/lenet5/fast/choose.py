"""Which arithmetic runs a training step or an inference: the one place that chooses, and says so.

The reference is the model itself with autograd (`model.py`); every faster path is checked
against it by the tests. Paths, by where they apply:

  cuda-graphs   CUDA, plain SGD, one process, uncompiled: the whole step recorded once as a CUDA
                graph and replayed (fast/cuda_graph.py)
  native        the CPU, a plain float32 LeNet5 in NHWC, no label smoothing: the convolutions in
                lenet5's kernels (native.py, convs.cpp), the rest written out without autograd's
                graph (cpu_step.py)
  written-out   the same written-out step on torch's kernels, where the native ones are off,
                cannot be built, or measured no faster than torch's on this CPU
  autograd      everything else: CUDA with --no-cuda-graphs, torchrun's DDP, --compile, label
                smoothing, NCHW

Native or torch kernels: `LENET5_NATIVE=1` takes the native kernels wherever they build, `0` never;
unset (or `auto`) they run only where they measured faster than torch's kernels on this CPU at
this thread count, for training and for inference apart. That measurement takes a fraction of a
second, once per library, thread count and torch version, and is kept beside the library.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TypeGuard

import torch

from ..model import LeNet5
from . import cpu_step, native
from .forward import Forward
from .native import Kernels

FASTER = 0.97  # native runs where it takes less than this share of torch's kernels' time


@dataclass(frozen=True)
class Path:
    """A chosen path: its name, the native kernels it runs (if any) and why, in words."""

    name: str
    kernels: Kernels | None = None
    why: str = ""

    def line(self) -> str:
        return f"{self.name} ({self.why})" if self.why else self.name


def for_training(
    model,
    device: torch.device,
    *,
    label_smoothing: float = 0.0,
    world: int = 1,
    compiled: bool = False,
    cuda_graphs: bool = False,
) -> Path:
    """The path a training step of `model` takes (model already on `device`, in its layout)."""
    if cuda_graphs:  # the caller's word that they apply: CUDA, plain SGD, one process, uncompiled
        return Path("cuda-graphs", why="the whole step replayed as one CUDA graph")
    if world > 1 or compiled or not cpu_step.applies(model, label_smoothing):
        return Path("autograd", why=_why_autograd(model, device, label_smoothing, world, compiled))
    kernels, why = native_kernels("train")
    return Path("native" if kernels else "written-out", kernels, why)


def for_inference(model) -> Path:
    """The path reading takes on the CPU for `model` (fast/forward.py): lenet5's native whole
    forward where it measured faster than torch's, else the model itself."""
    if not _plain(model):
        return Path("autograd", why="the model as it is")
    kernels, why = native_kernels("infer")
    return Path("native", kernels, why) if kernels else Path("autograd", why=why)


def for_reading(model, device: torch.device) -> Path:
    """The forward a Reader runs for `model` on `device`: `for_inference`'s on the CPU, torch's
    elsewhere."""
    if torch.device(device).type != "cpu":
        return Path("autograd", why=f"{torch.device(device).type}: torch's kernels")
    return for_inference(model)


def _plain(model) -> bool:
    """A plain float32 LeNet5 on the CPU, unhooked: what the native forward computes exactly."""
    return (
        type(model) is LeNet5
        and not cpu_step._hooked(model)
        and model.conv1.weight.device.type == "cpu"
        and model.conv1.weight.dtype == torch.float32
    )


def native_kernels(purpose: str) -> tuple[Kernels | None, str]:
    """The native kernels to use for `purpose` ("train" or "infer"), or None; and why, in words."""
    kernels = native.load()
    if kernels is None:
        return None, native.status()
    threads = kernels.threads()
    where = f"{kernels.describe()}, {threads} thread{'s' if threads > 1 else ''}"
    mode = os.environ.get("LENET5_NATIVE", "auto").strip().lower() or "auto"
    if mode == "1":
        return kernels, f"{where}; LENET5_NATIVE=1"
    times = measured(kernels)[purpose]
    ratio = times["torch_ms"] / times["native_ms"]
    if times["native_ms"] < FASTER * times["torch_ms"]:
        return kernels, f"{where}; measured {ratio:.2f}x torch's kernels"
    return None, (
        f"torch's kernels: lenet5's native kernels ({where}) measured no faster "
        f"({ratio:.2f}x); LENET5_NATIVE=1 forces them"
    )


def measured(kernels: Kernels) -> dict:
    """{"train"|"infer": {"native_ms", "torch_ms"}} at this thread count: from the cache beside the
    library, else measured now (well under a second) and kept there."""
    key = f"torch {torch.__version__}, {kernels.threads()} threads"
    decisions = native.read_decisions(kernels)
    entry = decisions.get(key)
    if _valid(entry):
        return entry
    entry = {"train": _time_pair(kernels, train=True), "infer": _time_pair(kernels, train=False)}
    decisions[key] = entry
    native.write_decisions(kernels, decisions)
    return entry


def _valid(entry) -> TypeGuard[dict]:
    return isinstance(entry, dict) and all(
        isinstance(entry.get(p), dict)
        and all(
            isinstance(entry[p].get(k), (int, float)) and entry[p][k] > 0 for k in ("native_ms", "torch_ms")
        )
        for p in ("train", "infer")
    )


def step_ms(kernels: Kernels | None, train: bool, batch: int | None = None, reps: int = 0) -> float:
    """The best of a few timed calls (ms): a training step's forward and backward at batch 64, or
    reading a batch of 1024 (fast/forward.py), on `kernels` (None: torch's kernels)."""
    return _time_pair(kernels, train, batch, reps, only=True)["native_ms"]


def _time_pair(
    kernels: Kernels | None, train: bool, batch: int | None = None, reps: int = 0, only: bool = False
) -> dict:
    """Both paths timed in alternation, so a passing load on the machine hits them alike."""
    batch = batch or (64 if train else 1024)
    reps = reps or (12 if train else 5)
    gen = torch.Generator().manual_seed(0)
    model = LeNet5().to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack memory_format
    x = torch.randn(batch, 1, 28, 28, generator=gen).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), generator=gen)

    pixels = torch.randint(0, 256, (batch, 28, 28), generator=gen, dtype=torch.uint8).numpy()
    forwards = {} if train else {id(k): Forward(model, 0.1307, 0.3081, k) for k in (kernels, None)}

    def run(k):
        if train:
            cpu_step.grads(model, x, y, 1 / batch, k)
        else:
            forwards[id(k)](pixels)

    contenders = [kernels] if only else [kernels, None]
    best = [float("inf")] * len(contenders)
    for k in contenders:  # warm up: first calls allocate and spin up threads
        run(k)
        run(k)
    for _ in range(reps):
        for i, k in enumerate(contenders):
            t0 = time.perf_counter()
            run(k)
            best[i] = min(best[i], time.perf_counter() - t0)
    out = {"native_ms": round(best[0] * 1e3, 4)}
    if not only:
        out["torch_ms"] = round(best[1] * 1e3, 4)
    return out


def survey() -> list[dict]:
    """Every CPU path this machine has, each timed now: a training step's forward and backward at
    batch 64 and the forward over 1024 images (ms). What `lenet5 info` prints."""
    rows = []
    for level in native.levels():
        k = native.load(level)
        if k is not None:
            rows.append(
                {
                    "path": "native",
                    "kernels": k.describe(),
                    "threads": k.threads(),
                    "train_ms": step_ms(k, True),
                    "infer_ms": step_ms(k, False),
                }
            )
    rows.append(
        {
            "path": "written-out",
            "kernels": "torch's",
            "threads": torch.get_num_threads(),
            "train_ms": step_ms(None, True),
            "infer_ms": step_ms(None, False),
        }
    )
    rows.append(
        {
            "path": "autograd",
            "kernels": "torch's",
            "threads": torch.get_num_threads(),
            "train_ms": _autograd_ms(True),
            "infer_ms": _autograd_ms(False),
        }
    )
    return rows


def _autograd_ms(train: bool) -> float:
    import torch.nn.functional as F

    batch, reps = (64, 12) if train else (1024, 5)
    model = LeNet5().to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack memory_format
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    best = float("inf")
    for i in range(reps + 2):
        t0 = time.perf_counter()
        if train:
            model.zero_grad()
            F.cross_entropy(model(x), y, reduction="sum").backward()
        else:
            with torch.no_grad():
                model(x)
        if i >= 2:
            best = min(best, time.perf_counter() - t0)
    return round(best * 1e3, 4)


def _why_autograd(model, device, label_smoothing, world, compiled) -> str:
    if world > 1:
        return f"{world} processes: DistributedDataParallel"
    if compiled:
        return "--compile"
    if device.type != "cpu":
        return f"{device.type}" + (": --no-cuda-graphs or not plain SGD" if device.type == "cuda" else "")
    if label_smoothing:
        return "--label-smoothing"
    if type(model) is not LeNet5:
        return f"a {type(model).__name__}, not a plain LeNet5"
    if not model.conv2.weight.is_contiguous(memory_format=torch.channels_last):
        return "NCHW (--no-channels-last)"
    return "float64 or hooked model"

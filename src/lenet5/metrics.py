"""Metrics: loss, accuracy, per-class accuracy and the confusion matrix of a model on a set."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .fast import choose, cpu_step
from .data import normalize


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, mean: float, std: float,
                   batch_size: int = 1024, device: torch.device | str = "cpu",
                   channels_last: bool | None = None) -> torch.Tensor:
    """Logits for uint8 images (N, 28, 28), computed in batches on `device`; returned on `device`.

    channels_last (NHWC weights and inputs; None: on the CPU only) with batches of ~1024 is about
    1.5x faster on the CPU than NCHW, and batches of 10,000 fall out of cache; on CUDA NCHW is
    faster (measured in bench/bench_speed.py). On the CPU in NHWC, a plain LeNet5 runs its
    convolutions in the native kernels where fast/choose.py chooses them (fast/cpu_step.py).
    """
    was_training = model.training
    model.eval()
    if channels_last is None:
        channels_last = torch.device(device).type == "cpu"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    cpu = torch.device(device).type == "cpu"
    path = choose.for_inference(model) if channels_last and cpu else choose.Path("autograd")
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize(images[i:i + batch_size].to(device, non_blocking=True), mean, std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if path.name == "native":
            out.append(cpu_step.forward(model, x, path.kernels))
        else:
            out.append(model(x).float())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 10, device=device)


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, mean: float,
             std: float, batch_size: int = 1024, device: torch.device | str = "cpu",
             channels_last: bool | None = None) -> dict:
    """Metrics as plain Python values: loss, accuracy, per_class accuracy, confusion[true][pred]."""
    logits = predict_logits(model, images, mean, std, batch_size, device, channels_last)
    labels = labels.to(logits.device)
    return metrics_from_logits(logits, labels)


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    n = len(labels)
    if n == 0:
        return {"loss": float("nan"), "accuracy": float("nan"), "count": 0,
                "per_class": [float("nan")] * 10, "confusion": [[0] * 10 for _ in range(10)]}
    loss = F.cross_entropy(logits, labels, reduction="sum")
    pred = logits.argmax(1)
    confusion = torch.bincount(labels * 10 + pred, minlength=100).reshape(10, 10).cpu()
    per_class_total = confusion.sum(1)
    correct = confusion.diagonal()
    per_class = [(c / t).item() if t else float("nan") for c, t in zip(correct, per_class_total)]
    return {
        "loss": loss.item() / n,
        "accuracy": correct.sum().item() / n,
        "count": n,
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def format_report(m: dict, title: str = "") -> str:
    """The metrics as a readable block of text."""
    lines = []
    if title:
        lines.append(title)
    lines.append(f"test loss {m['loss']:.4f}   accuracy {100 * m['accuracy']:.2f}%  "
                 f"({round(m['accuracy'] * m['count'])}/{m['count']})")
    lines.append("")
    lines.append("per class  " + "  ".join(f"{d:>6}" for d in range(10)))
    lines.append("accuracy   " + "  ".join(f"{100 * a:5.1f}%" for a in m["per_class"]))
    lines.append("")
    lines.append("confusion (rows: true digit, columns: predicted)")
    lines.append("      " + "".join(f"{d:>6}" for d in range(10)))
    for d, row in enumerate(m["confusion"]):
        lines.append(f"  {d:>2}  " + "".join(f"{v:>6}" for v in row))
    return "\n".join(lines)

"""Metrics: loss, accuracy, per-class accuracy and the confusion matrix of a model on a set; how
well its percentages mean what they say (expected calibration error, reliability); how often the
reader says "not a digit" of digits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import normalize
from .fast import choose
from .fast.forward import Forward
from .model import LeNet5


@torch.no_grad()
def predict_logits(
    model: LeNet5,
    images: torch.Tensor,
    mean: float,
    std: float,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    channels_last: bool | None = None,
) -> torch.Tensor:
    """Logits for uint8 images (N, 28, 28), returned on `device`: on the CPU the reader's forward
    (fast/forward.py: native where fast/choose.py measured it faster), elsewhere the model in
    batches of `batch_size`. `channels_last`: NHWC on CUDA too (measured slower there)."""
    if torch.device(device).type == "cpu":
        path = choose.for_inference(model)
        return torch.from_numpy(Forward(model, mean, std, path.kernels)(images.cpu().numpy())[0])
    was_training = model.training
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack memory_format
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize(images[i : i + batch_size].to(device, non_blocking=True), mean, std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(model(x).float())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 10, device=device)


@torch.no_grad()
def evaluate(
    model: LeNet5,
    images: torch.Tensor,
    labels: torch.Tensor,
    mean: float,
    std: float,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    channels_last: bool | None = None,
) -> dict:
    """Metrics as plain Python values: loss, accuracy, per_class accuracy, confusion[true][pred]."""
    logits = predict_logits(model, images, mean, std, batch_size, device, channels_last)
    labels = labels.to(logits.device)
    return metrics_from_logits(logits, labels)


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    n = len(labels)
    if n == 0:
        return {
            "loss": float("nan"),
            "accuracy": float("nan"),
            "count": 0,
            "per_class": [float("nan")] * 10,
            "confusion": [[0] * 10 for _ in range(10)],
        }
    loss = F.cross_entropy(logits, labels, reduction="sum")
    pred = logits.argmax(1)
    confusion = torch.bincount(labels * 10 + pred, minlength=100).reshape(10, 10).cpu()
    per_class_total = confusion.sum(1)
    correct = confusion.diagonal()
    per_class = [
        (c / t).item() if t else float("nan") for c, t in zip(correct, per_class_total, strict=False)
    ]
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
    lines.append(
        f"test loss {m['loss']:.4f}   accuracy {100 * m['accuracy']:.2f}%  "
        f"({round(m['accuracy'] * m['count'])}/{m['count']})"
    )
    lines.append("")
    lines.append("per class  " + "  ".join(f"{d:>6}" for d in range(10)))
    lines.append("accuracy   " + "  ".join(f"{100 * a:5.1f}%" for a in m["per_class"]))
    lines.append("")
    lines.append("confusion (rows: true digit, columns: predicted)")
    lines.append("      " + "".join(f"{d:>6}" for d in range(10)))
    for d, row in enumerate(m["confusion"]):
        lines.append(f"  {d:>2}  " + "".join(f"{v:>6}" for v in row))
    return "\n".join(lines)


ECE_BINS = 15


def calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> dict:
    """Expected calibration error of the top answer (equal-width bins of confidence) and the
    reliability table behind it: per bin, its share of answers, mean confidence and accuracy."""
    conf, pred = probs.max(1)
    right = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    which = torch.bucketize(conf.double().clamp(1e-12, 1), edges[1:-1], right=True)
    rows, ece = [], 0.0
    for b in range(bins):
        inside = which == b
        count = int(inside.sum())
        if count:
            c, a = conf[inside].double().mean().item(), right[inside].mean().item()
            ece += count / len(labels) * abs(c - a)
            rows.append(
                {
                    "low": edges[b].item(),
                    "high": edges[b + 1].item(),
                    "count": count,
                    "confidence": c,
                    "accuracy": a,
                }
            )
    return {"ece": ece, "bins": rows}


def score(reader, data) -> dict:
    """What `lenet5 evaluate` reports for a Reader on a test set (MNIST's, or another --dataset's):
    metrics_from_logits's, plus ECE with its calibrated probabilities, how many test images it
    accepts (and reads right) as one of its classes, and which set it was."""
    pixels = data.test_images.numpy()
    logits = reader.forward(pixels)[0]
    out = metrics_from_logits(torch.from_numpy(logits), data.test_labels)
    readings = reader.readings(pixels, logits)
    probs = torch.tensor([p.probabilities for p in readings])
    accepted = torch.tensor([p.is_digit for p in readings])
    right = probs.argmax(1) == data.test_labels
    n = max(len(readings), 1)
    out["calibration"] = {
        "temperature": reader.temperature,
        "threshold": reader.threshold,
        "fitted": reader.calibration.fitted,
        "ece": calibration_error(probs, data.test_labels)["ece"],
    }
    out["dataset"] = getattr(data, "dataset", "mnist")
    out["accepted"] = int(accepted.sum()) / n
    out["accepted_and_right"] = int((accepted & right).sum()) / n
    return out

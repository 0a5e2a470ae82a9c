"""Figures, saved as PNG files. matplotlib is imported inside each function (no pyplot: headless).

After training the run folder holds curves.png, confusion.png, mistakes.png, predictions.png and
filters.png (`draw_run`); `lenet5 plot RUN` redraws them, `lenet5 show --activations` draws what
the two convolution layers see in one digit.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .files import atomic_path
from .rundir import CONFUSION, CURVES, FILTERS, MISTAKES, PREDICTIONS, RELIABILITY, RunDir

if TYPE_CHECKING:
    from .model import LeNet5


class _Figures:
    """matplotlib's figures without pyplot: no backend is chosen or changed, so a notebook's inline
    plots go on working after lenet5 draws, and no figure is kept open anywhere (`savefig` renders
    with Agg by itself)."""

    def __init__(self):
        from matplotlib.figure import Figure

        self._new = Figure

    def figure(self, **kwargs):
        return self._new(**kwargs)

    def subplots(self, *args, figsize=None, dpi=None, **kwargs):
        fig = self._new(figsize=figsize, dpi=dpi)
        return fig, fig.subplots(*args, **kwargs)


def _figures() -> _Figures:
    try:
        return _Figures()
    except ImportError:
        from .errors import Lenet5Error

        raise Lenet5Error("plots need matplotlib: pip install 'lenet5[plots]'") from None


def check_matplotlib() -> None:
    """The one-line hint now, when matplotlib is missing, for a command that draws at its end."""
    _figures()


def _save(fig, out: str | os.PathLike) -> Path:
    out = Path(out)
    with atomic_path(out) as tmp:  # a crash leaves the old picture or the new one
        fig.savefig(tmp, dpi=fig.dpi, bbox_inches="tight", format=out.suffix.lstrip(".") or "png")
    return out


def show_digit(image: torch.Tensor, title: str, out: str | os.PathLike) -> Path:
    """The seed's view of one test image: the digit in gray, the title, axes off."""
    plt = _figures()
    fig, ax = plt.subplots(figsize=(3, 3.3), dpi=100)
    ax.imshow(image.squeeze().cpu().numpy(), cmap="gray")
    ax.set_title(title)
    ax.axis("off")
    return _save(fig, out)


def plot_curves(
    rows: list[dict], out: str | os.PathLike, title: str = "", best_epoch: int | None = None
) -> Path:
    """Loss and accuracy per epoch, train and validation, with the learning rate on a second axis;
    a dotted line marks the epoch best.pt was saved at."""
    plt = _figures()
    epochs = [r["epoch"] for r in rows]
    has_val = any(math.isfinite(r.get("val_loss", math.nan)) for r in rows)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    for ax, key, label in ((ax_loss, "loss", "loss (cross-entropy)"), (ax_acc, "acc", "accuracy (%)")):
        scale = 100 if key == "acc" else 1
        ax.plot(
            epochs, [scale * r[f"train_{key}"] for r in rows], "o-", color="tab:blue", ms=3, label="train"
        )
        if has_val:
            ax.plot(
                epochs,
                [scale * r.get(f"val_{key}", math.nan) for r in rows],
                "s-",
                color="tab:orange",
                ms=3,
                label="validation",
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if best_epoch:
            ax.axvline(best_epoch, color="green", ls=":", lw=1.2, label=f"best.pt (epoch {best_epoch})")
        lr = ax.twinx()
        lr.plot(epochs, [r["lr"] for r in rows], "--", color="gray", lw=1, label="learning rate")
        lr.set_ylabel("learning rate (end of epoch)", color="gray")
        lr.tick_params(axis="y", colors="gray")
        lines = ax.get_lines() + lr.get_lines()
        ax.legend(lines, [line.get_label() for line in lines], loc="center right", fontsize=8)
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax_loss.set_yscale("log")  # the interesting part is the last decimal places
    ax_loss.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax_loss.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax_loss.yaxis.set_minor_formatter(NullFormatter())
    ax_acc.set_title("accuracy per epoch")
    if len(rows) > 2:
        # The first epoch starts far below the rest; zoom on where the curves settle.
        later = [
            100 * r[k]
            for r in rows[1:]
            for k in ("train_acc", "val_acc")
            if math.isfinite(r.get(k, math.nan))
        ]
        bottom = max(0.0, min(later) - 0.5)
        ax_acc.set_ylim(bottom, 100.05)
        first = [
            f"{name} {100 * rows[0][k]:.1f}%"
            for k, name in (("train_acc", "train"), ("val_acc", "val"))
            if 100 * rows[0].get(k, math.nan) < bottom
        ]
        if first:
            ax_acc.set_title(f"accuracy per epoch (epoch 1 below the axis: {', '.join(first)})")
    ax_loss.set_title("loss per epoch")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, out)


def plot_confusion(confusion: list[list[int]], out: str | os.PathLike, title: str = "") -> Path:
    """The confusion matrix as a heatmap: counts in each cell, colour on a log scale so that the
    few mistakes show beside the thousand right answers on the diagonal."""
    plt = _figures()
    from matplotlib.colors import LogNorm

    c = torch.tensor(confusion, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    shown = c.clone()
    shown[shown == 0] = math.nan  # empty cells stay white
    im = ax.imshow(shown.numpy(), cmap="Blues", norm=LogNorm(vmin=0.5, vmax=max(2.0, float(c.max()))))
    for t in range(10):
        for p in range(10):
            n = int(c[t, p])
            if n:
                dark = math.log(n) > 0.6 * math.log(max(float(c.max()), 2.0))
                ax.text(
                    p,
                    t,
                    str(n),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else ("black" if t == p else "firebrick"),
                )
    ax.set_xticks(range(10))
    ax.set_yticks(range(10))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    total = float(c.sum())
    accuracy = float(c.diagonal().sum()) / total if total else math.nan
    ax.set_title(
        title
        or f"confusion matrix: {int(total - c.diagonal().sum())} mistakes in {int(total)} "
        f"({100 * accuracy:.2f}% right)"
    )
    fig.colorbar(im, ax=ax, label="images (log scale)")
    return _save(fig, out)


def _grid(images, titles, colours, out, suptitle, cols=8):
    plt = _figures()
    n = max(len(images), 1)
    rows = math.ceil(n / cols)
    height = 1.75 * rows + 0.5
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, height), dpi=110, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title, colour in zip(axes.flat, images, titles, colours, strict=False):
        ax.imshow(image.cpu().numpy(), cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=8, color=colour)
    if not len(images):
        axes.flat[0].text(0.5, 0.5, "none", ha="center", va="center")
    fig.suptitle(suptitle)
    # Fixed spacing rather than tight_layout, which measures every title of the grid (seconds)
    fig.subplots_adjust(
        left=0.01, right=0.99, bottom=0.01, top=1 - 0.55 / height, wspace=0.1, hspace=0.35 / 1.4
    )
    return _save(fig, out)


def plot_mistakes(
    images: torch.Tensor, labels: torch.Tensor, probs: torch.Tensor, out: str | os.PathLike, limit: int = 48
) -> Path:
    """The test digits the model gets wrong, most confident mistakes first: true -> predicted (p)."""
    conf, pred = probs.max(1)
    wrong = torch.nonzero(pred != labels).flatten()
    wrong = wrong[conf[wrong].argsort(descending=True)]
    shown = wrong[:limit]
    titles = [f"#{int(i)}: {int(labels[i])} → {int(pred[i])} ({100 * float(conf[i]):.0f}%)" for i in shown]
    head = f"{len(wrong)} of {len(labels)} test digits wrong: #index: true → predicted (probability)" + (
        f", the {len(shown)} most confident shown" if len(wrong) > len(shown) else ""
    )
    return _grid(images[shown], titles, ["firebrick"] * len(shown), out, head)


def plot_predictions(
    images: torch.Tensor,
    labels: torch.Tensor,
    probs: torch.Tensor,
    out: str | os.PathLike,
    count: int = 32,
    seed: int = 0,
) -> Path:
    """A random sample of test digits with the prediction and its probability (red when wrong)."""
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(labels), generator=g)[:count]
    conf, pred = probs.max(1)
    titles = [
        f"{int(pred[i])} ({100 * float(conf[i]):.1f}%)"
        + ("" if pred[i] == labels[i] else f" ≠ {int(labels[i])}")
        for i in pick
    ]
    colours = ["black" if pred[i] == labels[i] else "firebrick" for i in pick]
    return _grid(
        images[pick],
        titles,
        colours,
        out,
        f"{len(pick)} random test digits: prediction (probability); red: wrong, ≠ true label",
    )


def plot_filters(model: LeNet5, out: str | os.PathLike) -> Path:
    """The six 5x5 conv1 filters: red adds where the ink is, blue takes away."""
    plt = _figures()
    w = model.conv1.weight.detach().cpu()[:, 0]  # (6, 5, 5)
    assert model.conv1.bias is not None  # a LeNet5's convolutions have biases
    b = model.conv1.bias.detach().cpu()
    limit = float(w.abs().max())
    fig, axes = plt.subplots(1, len(w), figsize=(2 * len(w) + 1, 2.6), dpi=110)
    for k, ax in enumerate(axes):
        im = ax.imshow(w[k].numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"filter {k}\nbias {float(b[k]):+.2f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), fraction=0.02, pad=0.02, label="weight")
    fig.suptitle(
        "conv1: the six 5×5 filters the first layer learned (red: ink there raises the "
        "output, blue: lowers it)"
    )
    return _save(fig, out)


def plot_activations(
    image: torch.Tensor, maps: dict[str, torch.Tensor], out: str | os.PathLike, title: str = ""
) -> Path:
    """One digit, its six conv1 feature maps and its sixteen conv2 feature maps (after ReLU), each
    layer on one colour scale so that the maps that fire most stand out."""
    plt = _figures()
    fig = plt.figure(figsize=(15, 5.2), dpi=110, layout="constrained")
    left, mid, right = fig.subfigures(1, 3, width_ratios=[1.2, 2.4, 2.2], wspace=0.03)
    ax = left.subplots()
    ax.imshow(image.cpu().numpy(), cmap="gray", vmin=0, vmax=255)
    ax.set_title("input, 28×28", fontsize=11)
    ax.set_xticks([])
    ax.set_yticks([])
    for sub, name, rows, cols in ((mid, "conv1", 2, 3), (right, "conv2", 4, 4)):
        m = maps[name][0].detach().cpu()  # (6, 24, 24) or (16, 8, 8)
        top = max(float(m.max()), 1e-6)
        axes = sub.subplots(rows, cols)
        for k, ax in enumerate(axes.flat):
            im = ax.imshow(m[k].numpy(), cmap="magma", vmin=0, vmax=top)
            ax.set_title(f"map {k}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        sub.colorbar(im, ax=axes, shrink=0.8, label="activation")
        sub.suptitle(
            f"{name} + ReLU: {m.shape[0]} feature maps, {m.shape[1]}×{m.shape[2]}"
            + (" (map k: filter k slid over the input)" if name == "conv1" else ""),
            fontsize=10,
        )
    if title:
        fig.suptitle(title, fontsize=12)
    return _save(fig, out)


def plot_explanation(why, out: str | os.PathLike, title: str = "") -> Path:
    """The why view of one reading (explain.Explanation): the 28x28 input, then a map for the
    digit read and one for each runner-up: red where the ink spoke for that digit, blue where it
    spoke against, all on one colour scale (a runner-up's pale map is weak evidence), with the
    input's outline drawn over each."""
    from .reader import chance

    plt = _figures()
    maps = why.maps
    limit = max([float(abs(m.pixels).max()) for m in maps] + [1e-6])
    fig, axes = plt.subplots(1, 1 + len(maps), figsize=(2.6 * (1 + len(maps)) + 0.8, 3.4), dpi=110)
    axes[0].imshow(why.input, cmap="gray", vmin=0, vmax=255)
    axes[0].set_title("input, 28×28", fontsize=10)
    for k, (ax, m) in enumerate(zip(axes[1:], maps, strict=True)):
        im = ax.imshow(m.pixels, cmap="RdBu_r", vmin=-limit, vmax=limit)
        if why.input.max() > 0:
            ax.contour(why.input, levels=[64], colors="0.35", linewidths=0.6)
        what = "read" if k == 0 else "runner-up"
        ax.set_title(f"{what}: {m.digit} ({chance(m.probability)})", fontsize=10)
        # + 0.0: no "-0.0"
        ax.set_xlabel(
            f"logit {round(m.logit, 1) + 0.0:+.1f} (blank {round(m.blank, 1) + 0.0:+.1f})", fontsize=8
        )
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), fraction=0.02, pad=0.02, label="part in the logit")
    fig.suptitle(
        f"{title}\nred: the ink spoke for the digit, blue: against it (integrated gradients)"
        if title
        else "red: the ink spoke for the digit, blue: against it (integrated gradients)",
        fontsize=10,
    )
    return _save(fig, out)


def draw_run(
    run: str | os.PathLike,
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device | str = "cpu",
    out_dir: str | os.PathLike | None = None,
) -> list[Path]:
    """Draw every run plot from a run folder's files (metrics.csv, best.pt) and the test set.

    Returns the PNG paths written (into the run folder, or `out_dir`).
    """
    from .checkpoint import resolve
    from .metrics import calibration_error, metrics_from_logits
    from .reader import Reader

    path = resolve(run)
    out = Path(out_dir) if out_dir else path.parent
    reader = Reader.load(path, str(device))
    logits = reader.logits(images)
    metrics = metrics_from_logits(logits, labels.cpu())
    probs = torch.softmax(logits / reader.temperature, 1)
    written = []
    rows = RunDir(path.parent).read_metrics()
    if rows:
        from .checkpoint import load

        obj = load(path)
        best = obj.get("best_metrics", {}).get("epoch") if obj.get("format") == "lenet5" else None
        written.append(plot_curves(rows, out / CURVES, f"run {path.parent.name}", best))
    written.append(plot_confusion(metrics["confusion"], out / CONFUSION))
    written.append(plot_mistakes(images, labels, probs, out / MISTAKES))
    written.append(plot_predictions(images, labels, probs, out / PREDICTIONS))
    written.append(plot_filters(reader.model, out / FILTERS))
    written.append(
        plot_reliability(calibration_error(probs, labels.cpu()), out / RELIABILITY, reader.temperature)
    )
    return written


def plot_reliability(table: dict, out: str | os.PathLike, temperature: float = 1.0) -> Path:
    """The reliability diagram: in each bin of the top answer's probability, how often it was
    right. On the diagonal, the percentages mean what they say; bars under it, over-confident."""
    plt = _figures()
    fig, (ax, hx) = plt.subplots(2, 1, figsize=(6, 6.5), dpi=110, height_ratios=[3, 1], sharex=True)
    bins = table["bins"]
    for b in bins:
        width = b["high"] - b["low"]
        ax.bar(b["low"], b["accuracy"], width=width, align="edge", color="#4c72b0", edgecolor="white")
        ax.bar(
            b["low"],
            b["confidence"] - b["accuracy"],
            bottom=b["accuracy"],
            width=width,
            align="edge",
            color="none",
            edgecolor="firebrick",
            hatch="//",
            linewidth=0.5,
        )
        hx.bar(b["low"], b["count"], width=width, align="edge", color="#999999", edgecolor="white")
    ax.plot([0, 1], [0, 1], color="black", linewidth=1, linestyle="--")
    ax.set_ylabel("share right")
    ax.set_ylim(0, 1)
    ax.set_title(
        f"reliability on the MNIST test set: ECE {100 * table['ece']:.2f} % (temperature {temperature:.2f})"
    )
    hx.set_yscale("log")
    hx.set_xlabel("probability of the top answer")
    hx.set_ylabel("answers")
    hx.set_xlim(0, 1)
    fig.tight_layout()
    return _save(fig, out)

"""Figures, saved as PNG files. matplotlib is imported inside each function (headless: Agg)."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        from .errors import Lenet5Error

        raise Lenet5Error("plots need matplotlib: pip install 'lenet5[plots]'") from None
    matplotlib.use("Agg")  # files, never windows: works on servers and in CI
    import matplotlib.pyplot as plt

    return plt


def show_digit(image: torch.Tensor, title: str, out: str | os.PathLike) -> Path:
    """The seed's view of one test image: the digit in gray, the title, axes off."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(3, 3.3), dpi=100)
    ax.imshow(image.squeeze().cpu().numpy(), cmap="gray")
    ax.set_title(title)
    ax.axis("off")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)
    return out

"""Classify digits: MNIST test images by index now, people's image files (see `prepare_image`)."""

from __future__ import annotations

import torch

from .data import normalize


@torch.no_grad()
def classify(model: torch.nn.Module, images: torch.Tensor, mean: float, std: float,
             device: torch.device | str = "cpu") -> torch.Tensor:
    """Probabilities (N, 10) for uint8 images (N, 28, 28), normalised as the model was trained."""
    x = normalize(images.to(device), mean, std)
    return torch.softmax(model(x).float(), dim=1).cpu()


def top_k(probs: torch.Tensor, k: int = 3) -> list[list[tuple[int, float]]]:
    """[(digit, probability), ...] best first, for each row."""
    values, digits = probs.topk(k, dim=1)
    return [[(int(d), float(v)) for d, v in zip(ds, vs)] for ds, vs in zip(digits, values)]

"""lenet5 from Python: load a trained model and read digits; train and evaluate as the CLI does.

    import lenet5
    reader = lenet5.load()                  # the weights that ship with lenet5
    reader = lenet5.load("runs/NAME")       # a run folder, best.pt, last.pt, a state_dict, .safetensors
    reader.predict("my-seven.jpg")          # Prediction(digit=7, probability=0.99..., probabilities=[...])
    reader.predict(["a.png", "b.png"])      # a list: one Prediction each
    reader.predict(array)                   # numpy or torch: (28, 28) or (N, 28, 28) MNIST-style
                                            # (white ink on black, uint8 or float in [0, 1]);
                                            # any other size is a picture, prepared like a file
    lenet5.train(epochs=5)                  # fit(): the summary the CLI prints from
    lenet5.evaluate("runs/NAME")            # the metrics `lenet5 evaluate --json` prints
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import Lenet5Error


@dataclass(frozen=True)
class Prediction:
    digit: int  # the most probable digit
    probability: float  # its probability
    probabilities: list[float]  # one for each digit 0-9


class Reader:
    """A trained LeNet5 with the normalisation it was trained with, ready to read digits."""

    def __init__(self, model: torch.nn.Module, mean: float, std: float, source: str,
                 device: torch.device | str = "cpu"):
        self.model, self.mean, self.std, self.source = model.eval(), mean, std, source
        self.device = torch.device(device)

    def __repr__(self) -> str:
        return f"Reader({self.source!r}, device={str(self.device)!r})"

    def predict(self, x) -> Prediction | list[Prediction]:
        """Read one digit (a file path, a PIL image, an array or tensor) or many (a list, or an
        (N, 28, 28) array): one Prediction, or a list of them."""
        images, single = self._inputs(x)
        probs = self.probabilities(images)
        out = [Prediction(int(p.argmax()), float(p.max()), [float(v) for v in p]) for p in probs]
        return out[0] if single else out

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 10) probabilities for uint8 MNIST-style images (N, 28, 28)."""
        from .predict import classify

        return classify(self.model, images, self.mean, self.std, self.device)

    def _inputs(self, x) -> tuple[torch.Tensor, bool]:
        """uint8 (N, 28, 28) images, and whether `x` was one input."""
        if isinstance(x, (list, tuple)):
            if not x:
                raise Lenet5Error("predict: an empty list: give at least one picture")
            return torch.stack([self._one(item) for item in x]), False
        t = _as_tensor(x)
        if t is not None and t.dim() == 3 and t.shape[1:] == (28, 28):
            return _mnist_style(t), False
        return self._one(x).unsqueeze(0), True

    def _one(self, x) -> torch.Tensor:
        from . import images

        if isinstance(x, (str, os.PathLike)):
            return images.load_digit(Path(x), str(x))
        if isinstance(x, bytes):
            return images.load_digit(x, "bytes")
        t = _as_tensor(x)
        if t is None:  # a PIL image, or something that says what it is when prepared
            if hasattr(x, "convert") and hasattr(x, "size"):
                return images.prepare(x, "image")
            raise Lenet5Error(f"predict: cannot read a {type(x).__name__}: give a file path, a PIL "
                              "image, a numpy array or a torch tensor")
        if t.shape == (28, 28):
            return _mnist_style(t)
        if t.dim() == 2 or (t.dim() == 3 and t.shape[2] in (1, 3, 4)):
            from PIL import Image

            pixels = _to_uint8(t).numpy()
            return images.prepare(Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[2] == 1
                                                  else pixels), "array")
        raise Lenet5Error(f"predict: an array of shape {tuple(t.shape)}: give (28, 28), (N, 28, 28), "
                          "or a picture as (H, W) or (H, W, 3)")


def _as_tensor(x) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu()
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return None
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.array(x))  # a copy: the caller's array may be read-only
    return None


def _to_uint8(t: torch.Tensor) -> torch.Tensor:
    """uint8 as it is; floats in [0, 1] scaled to 0-255 (larger values taken as 0-255 already)."""
    if t.dtype == torch.uint8:
        return t
    if not (t.is_floating_point() or t.dtype in (torch.int16, torch.int32, torch.int64)):
        raise Lenet5Error(f"predict: an array of {t.dtype}: give uint8 or floating point pixels")
    t = t.float()
    if not torch.isfinite(t).all():
        raise Lenet5Error("predict: the array holds NaN or infinite values")
    if t.is_floating_point() and t.max() <= 1.0:
        t = t * 255
    return t.round().clamp(0, 255).to(torch.uint8)


def _mnist_style(t: torch.Tensor) -> torch.Tensor:
    return _to_uint8(t).reshape(-1, 28, 28).squeeze(0) if t.dim() == 2 else _to_uint8(t)


def load(source: str | os.PathLike | None = None, device: str = "cpu") -> Reader:
    """A Reader for a checkpoint file or run folder; with none, the weights that ship with lenet5."""
    from .checkpoint import load_model, normalization, resolve
    from .config import choose_device

    from .weights import shipped

    dev = choose_device(device)
    path = shipped() if source is None else resolve(source)
    model, obj = load_model(path, dev)
    mean, std = normalization(obj)
    return Reader(model, mean, std, str(path), dev)


def train(recipe: str = "default", *, data=None, **overrides) -> dict:
    """Train as `lenet5 train --recipe RECIPE --FLAG VALUE ...` does (no test pass, no printing):
    the summary of `train.fit` (run folder, best metrics, per-epoch history)."""
    from .config import from_recipe
    from .training import fit

    overrides.setdefault("progress", False)
    return fit(from_recipe(recipe, **overrides), data)


def evaluate(source: str | os.PathLike | None = None, data_dir: str | None = None,
             device: str = "cpu") -> dict:
    """Test-set metrics of a checkpoint (the shipped weights with none): what `lenet5 evaluate
    --json` prints (loss, accuracy, count, per_class, confusion)."""
    from .data import load_mnist
    from .metrics import evaluate as score

    reader = load(source, device)
    data = load_mnist(data_dir)
    return score(reader.model, data.test_images, data.test_labels, reader.mean, reader.std,
                 device=reader.device)

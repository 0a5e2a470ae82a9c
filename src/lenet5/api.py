"""lenet5 from Python: load a trained model and read digits; train and evaluate as the CLI does.

import lenet5
reader = lenet5.load()                  # the weights that ship with lenet5
reader = lenet5.load("runs/NAME")       # a run folder, best.pt, last.pt, a state_dict, .safetensors
reader.predict("my-seven.jpg")          # Prediction(7, 99.1 %): .digit, .probability, .is_digit
reader.predict(["a.png", "b.png"])      # a list: one Prediction each
reader.predict(array)                   # numpy or torch: (28, 28) or (N, 28, 28) MNIST-style
                                        # (white ink on black, uint8 or float in [0, 1]);
                                        # any other size is a picture, prepared like a file
lenet5.train(epochs=5)                  # fit(): trains, tests best.pt, draws the plots
lenet5.evaluate("runs/NAME")            # the metrics `lenet5 evaluate --json` prints
"""

from __future__ import annotations

import os

from .reader import Prediction, Reader

__all__ = ["Prediction", "Reader", "evaluate", "load", "train"]


def load(source: str | os.PathLike | None = None, device: str = "cpu") -> Reader:
    """A Reader for a checkpoint file or run folder; with none, the weights that ship with lenet5."""
    return Reader.load(source, device)


def train(recipe: str = "default", *, data=None, **overrides) -> dict:
    """Train as `lenet5 train --recipe RECIPE --FLAG VALUE ...` does, without printing: the whole
    run (training, the reader's calibration, the test of best.pt, the plots when matplotlib is
    there); the summary of `training.fit` (run folder, best metrics, history, test metrics)."""
    from .config import from_recipe
    from .training import fit

    overrides.setdefault("progress", False)
    return fit(from_recipe(recipe, **overrides), data)


def evaluate(
    source: str | os.PathLike | None = None, data_dir: str | None = None, device: str = "cpu"
) -> dict:
    """Test-set metrics of a checkpoint (the shipped weights with none) on the test set it was
    trained for (MNIST, or its --dataset): what `lenet5 evaluate --json` prints (loss, accuracy,
    count, per_class, confusion, calibration and "not a digit")."""
    from .data import load_dataset
    from .metrics import score

    reader = load(source, device)
    return score(reader, load_dataset(reader.dataset, data_dir))

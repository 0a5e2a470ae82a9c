"""Classify digits: MNIST test images, and people's image files (files, folders, globs) in batches;
whole numbers in pictures, one result per file (`numbers.py` finds the digits)."""

from __future__ import annotations

import glob
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .metrics import predict_logits

if TYPE_CHECKING:
    from .model import LeNet5


def classify(
    model: LeNet5, images: torch.Tensor, mean: float, std: float, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Probabilities (N, 10) for uint8 images (N, 28, 28), uncalibrated (temperature 1): the
    reader's forward (fast/forward.py) for a bare model. A Reader's `probabilities` are calibrated."""
    logits = predict_logits(model, images, mean, std, device=device).float().cpu()
    return torch.softmax(logits, dim=1)


def find_images(sources: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The files to read from what a person typed: files, folders (their image files, sorted) and
    globs (for shells that pass them on unexpanded). Also (argument, problem) for each that gave none."""
    from .images import EXTENSIONS

    files, problems, seen = [], [], set()

    def add(path: Path) -> None:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and p.suffix.lower() in EXTENSIONS and not p.name.startswith(".")
            )
            if not found:
                problems.append((source, f"{source}: folder holds no image files ({', '.join(EXTENSIONS)})"))
            for p in found:
                add(p)
        elif path.exists() or not glob.has_magic(source):
            add(path)  # a missing file is reported when it is read, in its turn
        else:
            matches = sorted(Path(m) for m in glob.glob(source, recursive=True) if Path(m).is_file())
            if not matches:
                problems.append((source, f"{source}: no files match"))
            for p in matches:
                add(p)
    return files, problems


def predict_files(reader, files: list[Path], batch_size: int = 256, progress: bool = False) -> list[dict]:
    """One result per file, in order: {file, prediction, probability, is_digit, reason, top3, input,
    reading} where `input` is the uint8 (28, 28) image the model saw (zeros for a picture with no
    ink) and `reading` its Prediction, or {file, error} for a file that cannot be read.

    Files are read and classified `batch_size` at a time, so memory stays flat for any number.
    """
    import numpy as np
    from tqdm import tqdm

    from .images import ImageError, NoDigit, load_pixels

    results: list[dict] = [{} for _ in files]
    # disable=None: a bar only when someone watches (stderr is a terminal).
    with tqdm(
        total=len(files),
        unit="file",
        desc="predict",
        disable=None if progress else True,
        leave=False,
        dynamic_ncols=True,
    ) as bar:
        for start in range(0, len(files), batch_size):
            read, inputs, blank = [], [], {}
            for i in range(start, min(start + batch_size, len(files))):
                results[i]["file"] = str(files[i])
                try:
                    inputs.append(load_pixels(files[i], str(files[i])))
                    read.append(i)
                except NoDigit as e:
                    inputs.append(np.zeros((28, 28), np.uint8))
                    read.append(i)
                    blank[i] = e.reason
                except ImageError as e:
                    results[i]["error"] = str(e)
                bar.update()
            if inputs:
                pixels = np.stack(inputs)
                for i, image, p in zip(read, pixels, reader.read(pixels), strict=False):
                    if i in blank:
                        p = replace(p, is_digit=False, reason=blank[i])
                    results[i].update({k: v for k, v in p.to_dict().items() if k != "probabilities"})
                    results[i]["input"] = torch.from_numpy(image)
                    results[i]["reading"] = p
    return results


def predict_numbers(reader, files: list[Path]) -> list[dict]:
    """One result per file, in order: {file, number, readable, digits: [{digit, probability,
    is_digit, box}], inputs} where `inputs` are the uint8 (28, 28) images the model saw, left to
    right; or {file, error}."""
    from .images import ImageError

    results: list[dict] = []
    for f in files:
        try:
            number = reader.read_number(f, str(f))
        except ImageError as e:
            results.append({"file": str(f), "error": str(e)})
            continue
        results.append({"file": str(f), **number.to_dict(), "inputs": [d.input for d in number.digits]})
    return results

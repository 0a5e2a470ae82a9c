"""The reader: a trained LeNet5 ready to read digits, the one object behind every door.

    reader = lenet5.load()                  # the shipped weights; or load("runs/NAME"), a .pt, ...
    reader.predict("seven.jpg")             # Prediction(7, 99.1 %)
    reader.predict(array)                   # (28, 28) or (N, 28, 28) MNIST-style, or any picture
    reader.read(pixels)                     # uint8 (N, 28, 28) -> [Prediction, ...]
    reader.explain("seven.jpg")             # which pixels made it say 7, and the runners-up

It owns the loaded model, the normalisation it was trained with, its device, the one forward pass
(fast/forward.py: lenet5's native forward where it is faster, torch's elsewhere, in bounded
batches) and what it knows about its own answers (`Calibration`): the temperature that makes its
percentages mean what they say, and the probability under which a picture is "not a digit". The
CLI (`predict`, `--number`, `evaluate`, `show`), `lenet5.load()`, the web server, the numbers
reader and `export` all read through it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from .errors import CheckpointError, Lenet5Error
from .rundir import BEST

if TYPE_CHECKING:
    from .model import LeNet5

# A checkpoint without a calibration (the seed's mnist_lenet5.pth alone, an old run, a state_dict
# from elsewhere) is read at temperature 1 with this threshold: still "not a digit" for what the
# network is plainly unsure of, though it was never measured for these weights.
UNCALIBRATED_THRESHOLD = 0.5
INK = 64  # a pixel at a quarter of full ink or more is ink...
MIN_INK = 4  # ...and a 28x28 input with fewer such pixels holds no digit (blank, or a faint smudge)
UNLIKE = "unlike any digit"  # the reason for what the network reads as no digit it knows


@dataclass(frozen=True)
class Calibration:
    """What a reader knows about its own answers, fitted after training (`fit_calibration`).

    temperature: the logits are divided by it before the softmax, so that a 90 % answer is right
    about 90 % of the time on the pictures people bring (distorted digits, not clean MNIST alone).
    threshold: a picture whose score, the network's own top probability (the softmax of its
    logits as they are, temperature 1), is below it is "not a digit". The score is kept apart
    from the calibrated probability because it separates digits from the rest better
    (docs/03-reading-your-digits.md, "Not a digit"). `fitted`: what it was fitted on, in words
    ("" where it never was)."""

    temperature: float = 1.0
    threshold: float = UNCALIBRATED_THRESHOLD
    fitted: str = ""

    def to_dict(self) -> dict:
        return {"temperature": self.temperature, "threshold": self.threshold, "fitted": self.fitted}

    @classmethod
    def from_dict(cls, d, where: str = "checkpoint") -> Calibration:
        """Checked: a calibration that is not two sane numbers is refused, naming the file."""
        try:
            t, th = float(d["temperature"]), float(d["threshold"])
        except (TypeError, KeyError, ValueError):
            raise CheckpointError(
                f"{where}: its reader calibration is damaged (want a temperature "
                "and a threshold); train again or load the weights alone"
            ) from None
        if not (math.isfinite(t) and 0.05 <= t <= 20 and math.isfinite(th) and 0 <= th <= 1):
            raise CheckpointError(
                f"{where}: its reader calibration is out of range (temperature "
                f"{t:g}, threshold {th:g}); train again or load the weights alone"
            )
        return cls(t, th, str(d.get("fitted", ""))[:200])


@dataclass(frozen=True, repr=False, slots=True)
class Prediction:
    digit: int  # the most probable digit (the closest one, when the picture is not a digit)
    probability: float  # its probability, calibrated
    probabilities: list[float]  # one for each digit 0-9
    is_digit: bool = True  # False: no digit here (blank, or unlike any digit the reader knows)
    reason: str = ""  # why not, in words: "no ink", "unlike any digit"
    score: float = 1.0  # what is_digit was decided on: the uncalibrated top probability
    top3: list[tuple[int, float]] = field(default_factory=list, compare=False)

    def __repr__(self) -> str:
        if self.is_digit:
            return f"Prediction({self.digit}, {chance(self.probability)})"
        if self.reason != UNLIKE:  # nothing to read (no ink, a speck): no closest digit to speak of
            return f"Prediction(no digit: {self.reason})"
        return f"Prediction(not a digit: {self.reason}; closest {self.digit}, {chance(self.probability)})"

    def to_dict(self) -> dict:
        """The JSON shape every door answers with."""
        return {
            "prediction": self.digit,
            "probability": self.probability,
            "is_digit": self.is_digit,
            "reason": self.reason,
            "score": self.score,
            "top3": [list(t) for t in self.top3],
            "probabilities": self.probabilities,
        }


def percent(p: float, decimals: int = 1) -> str:
    """A probability as a percentage that never rounds up to a certainty it is not: 0.99996 is
    '>99.9 %', not '100.0 %'."""
    text = f"{100 * p:.{decimals}f}"
    if p < 1 and float(text) >= 100:
        return f">{100 - 10**-decimals:.{decimals}f} %"
    if p > 0 and float(text) <= 0:
        return f"<{10**-decimals:.{decimals}f} %"
    return f"{text} %"


def chance(p: float, decimals: int = 1) -> str:
    """A model's probability as a percentage: never a certainty either way. Softmax gives neither
    1 nor 0; where float32 rounds it there, it is shown as '>99.9 %' or '<0.1 %'."""
    return percent(min(max(p, 1e-12), 1 - 1e-12), decimals)


def verdict(p: Prediction) -> str:
    """One line's answer: `7 (99.1 %)`, or `not a digit (closest: 4, 38.0 %)`."""
    if p.is_digit:
        return f"{p.digit} ({chance(p.probability)})"
    if p.reason != UNLIKE:  # nothing to read: no ink, only a speck
        return f"no digit ({p.reason})"
    return f"not a digit (closest: {p.digit}, {chance(p.probability)})"


class Reader:
    """A trained LeNet5 with its normalisation, device, calibration and one forward pass."""

    def __init__(
        self,
        model: LeNet5,
        mean: float,
        std: float,
        source: str = "",
        device: torch.device | str = "cpu",
        calibration: Calibration | None = None,
        dataset: str = "mnist",
        classes: tuple[str, ...] | None = None,
    ):
        from .datasets import DATASETS
        from .fast import choose
        from .fast.forward import Forward

        self.model, self.mean, self.std, self.source = model.eval(), float(mean), float(std), source
        # what it was trained on (--dataset) and its labels 0-9 in words; "mnist": digits
        self.dataset = dataset
        self.classes = tuple(classes or DATASETS.get(dataset, DATASETS["mnist"]).classes)
        self.device = torch.device(device)
        self.calibration = calibration or Calibration()
        path = choose.for_reading(model, self.device)
        self.path = path  # which forward runs, and why (fast/choose.py)
        self.forward = Forward(model, mean, std, path.kernels, self.device)

    @property
    def temperature(self) -> float:
        return self.calibration.temperature

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    def __repr__(self) -> str:
        return f"Reader({self.source!r}, device={str(self.device)!r})"

    @classmethod
    def load(cls, source: str | os.PathLike | None = None, device: str = "cpu") -> Reader:
        """The reader of a checkpoint file or run folder; with none, the weights that ship."""
        from .checkpoint import dataset_of, load_model, normalization, resolve
        from .config import choose_device
        from .weights import shipped

        dev = choose_device(device)
        path = shipped() if source is None else resolve(source)
        model, obj = load_model(path, dev)
        name, classes = dataset_of(obj)
        return cls(
            model, *normalization(obj), str(path), dev, calibration_of(path, obj, model), name, classes
        )

    # --- the forward pass and what it means --------------------------------------------------

    def logits(self, pixels) -> torch.Tensor:
        """(N, 10) logits for uint8 MNIST-style pixels (N, 28, 28), numpy or torch."""
        return torch.from_numpy(self.forward(_uint8_rows(pixels))[0])

    def probabilities(self, pixels) -> torch.Tensor:
        """(N, 10) calibrated probabilities for uint8 pixels (N, 28, 28)."""
        return torch.from_numpy(self._probabilities(self.forward(_uint8_rows(pixels))[0]))

    def _probabilities(self, logits: np.ndarray, temperature: float | None = None) -> np.ndarray:
        t = temperature or self.temperature
        if len(logits) == 1:  # one digit: ten numbers in plain Python beat numpy's per-call cost
            row = logits[0].tolist()
            top = max(row)
            e = [math.exp((v - top) / t) for v in row]
            total = sum(e)
            return np.array([[v / total for v in e]], np.float32)
        z = logits * np.float32(1.0 / t)  # a new float32 array
        z -= z.max(1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(1, keepdims=True)
        return z

    def read(self, pixels) -> list[Prediction]:
        """One Prediction per uint8 (28, 28) input of `pixels` (N, 28, 28): digit or not."""
        px = _uint8_rows(pixels)
        return self.readings(px, self.forward(px)[0])

    def readings(self, px: np.ndarray, logits: np.ndarray) -> list[Prediction]:
        """`read` for pixels whose logits (this reader's) are known already."""
        probs = self._probabilities(logits)
        scores = self._probabilities(logits, 1.0).max(1)
        inked = (px >= INK).reshape(len(px), -1).sum(1) >= MIN_INK
        return [
            self._prediction(p, float(s), bool(ink)) for p, s, ink in zip(probs, scores, inked, strict=False)
        ]

    def _prediction(self, p: np.ndarray, score: float, inked: bool) -> Prediction:
        order = np.argsort(-p, kind="stable")[:3]
        best = int(order[0])
        values = [float(v) for v in p]
        top3 = [(int(d), values[d]) for d in order]
        reason = "no ink" if not inked else (UNLIKE if score < self.threshold else "")
        return Prediction(best, values[best], values, not reason, reason, score, top3)

    def predict(self, x) -> Prediction | list[Prediction]:
        """Read one digit (a file path, bytes, a PIL image, an array or tensor) or many (a list,
        or an (N, 28, 28) array): one Prediction, or a list of them."""
        from . import inputs

        many = inputs.many(x)
        if many is not None and len(many) > inputs.CHUNK:  # converted and read a chunk at a time
            return [
                p
                for start in range(0, len(many), inputs.CHUNK)
                for p in cast(list[Prediction], self.predict(many[start : start + inputs.CHUNK]))  # many
            ]
        pixels, single, blank = inputs.pixels_of(x)
        out = [
            replace(p, is_digit=False, reason=why) if why else p
            for p, why in zip(self.read(pixels), blank, strict=False)
        ]
        return out[0] if single else out

    def explain(self, x, top: int = 3):
        """Why it reads one picture (anything `predict` takes) as it does: which pixels spoke for
        the digit read and for its runners-up, and which against (explain.Explanation)."""
        from . import inputs
        from .explain import explain

        pixels, _, blank = inputs.pixels_of(x)
        if len(pixels) != 1:
            raise Lenet5Error(f"explain: one picture at a time, got {len(pixels)}")
        p = self.read(pixels)[0]
        if blank[0]:
            p = replace(p, is_digit=False, reason=blank[0])
        return explain(self, pixels[0], p, top)

    def read_number(self, source, name: str | None = None):
        """The number in a picture (a file path or its bytes): numbers.Number, digit by digit."""
        from .numbers import load_number

        return load_number(source, self, name)


def calibration_of(path: Path, obj: dict, model: torch.nn.Module) -> Calibration:
    """The calibration that belongs to these weights: in the checkpoint itself (best.pt, last.pt,
    a safetensors export), on the shipped weights' card, or, for a run's mnist_lenet5.pth (the
    seed's plain state_dict, which can hold nothing else), in the best.pt beside it when that
    holds the very same weights. None found: the uncalibrated default."""
    from .checkpoint import is_shipped

    where = str(path)
    if isinstance(obj.get("reader"), dict):
        return Calibration.from_dict(obj["reader"], where)
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "temperature" in meta and "threshold" in meta:  # a safetensors export
        return Calibration.from_dict({**meta, "fitted": meta.get("calibration", "")}, where)
    if is_shipped(path):
        from .weights import card

        info = card().get("reader")
        return Calibration.from_dict(info, where) if info else Calibration()
    beside = path.parent / BEST
    if beside != path and beside.is_file():
        from .checkpoint import load, model_state

        try:
            other = load(beside)
            same = all(
                torch.equal(v.cpu(), model.state_dict()[k].cpu())
                for k, v in model_state(other, beside).items()
            )
        except (Lenet5Error, KeyError, RuntimeError):
            return Calibration()
        if same and isinstance(other.get("reader"), dict):
            return Calibration.from_dict(other["reader"], str(beside))
    return Calibration()


def _uint8_rows(pixels) -> np.ndarray:
    """uint8 (N, 28, 28) as a C-contiguous numpy array, from numpy or a torch tensor."""
    if (
        type(pixels) is np.ndarray
        and pixels.dtype == np.uint8
        and pixels.ndim == 3
        and pixels.shape[1:] == (28, 28)
        and pixels.flags.c_contiguous
    ):
        return pixels
    if isinstance(pixels, torch.Tensor):
        pixels = pixels.detach().cpu().numpy()
    a = np.asarray(pixels)
    if a.dtype != np.uint8 or a.ndim != 3 or a.shape[1:] != (28, 28):
        raise Lenet5Error(f"read: want uint8 pixels (N, 28, 28), got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a)


# The shares of held-out digits the threshold may call "not a digit": clean, and re-drawn as other
# writers would (data.restyle). 3 % of the re-drawn: the most that keeps 97 % of other writers'
# digits; less puts the threshold under much that is no digit (README, figures).
CLEAN_REFUSED = 0.004
STYLED_REFUSED = 0.03


def fit_calibration(
    reader: Reader, images: torch.Tensor, labels: torch.Tensor, seed: int = 0, fitted: str = ""
) -> Calibration:
    """The temperature and threshold for `reader`'s weights, from digits it was not trained on
    (the validation split), clean and re-drawn as other writers would (data.restyle).

    temperature: the one that makes the probabilities most likely on those digits (the least
    negative log-likelihood, searched on a log scale), so that they mean what they say on the
    pictures people bring, not on clean MNIST alone. threshold, on the uncalibrated score: the
    highest under which at most 0.4 % of the clean digits and 3 % of the re-drawn ones fall, so
    that "not a digit" is said of very few digits, and of few by other writers, while what is
    unlike every digit lies below it."""
    from .data import restyle

    clean = images.cpu()
    styled = restyle(clean, seed)
    z = np.concatenate([reader.forward(clean.numpy())[0], reader.forward(styled.numpy())[0]])
    y = np.concatenate([labels.cpu().numpy()] * 2)
    temperature = _best_temperature(z.astype(np.float64), y)
    p_clean = reader._probabilities(z[: len(clean)], 1.0).max(1)  # the scores: temperature 1
    p_styled = reader._probabilities(z[len(clean) :], 1.0).max(1)
    threshold = float(min(np.quantile(p_clean, CLEAN_REFUSED), np.quantile(p_styled, STYLED_REFUSED)))
    return Calibration(
        round(temperature, 5),
        round(max(threshold, 0.0), 5),
        fitted or f"{len(clean):,} held-out digits, clean and re-drawn",
    )


def _best_temperature(z: np.ndarray, y: np.ndarray) -> float:
    def nll(t: float) -> float:
        s = z / t
        s = s - s.max(1, keepdims=True)
        return float((np.log(np.exp(s).sum(1)) - s[np.arange(len(y)), y]).mean())

    lo, hi = math.log(0.2), math.log(10.0)  # golden-section search on log t
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(math.exp(a)), nll(math.exp(b))
    for _ in range(40):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(math.exp(b))
    return math.exp((lo + hi) / 2)

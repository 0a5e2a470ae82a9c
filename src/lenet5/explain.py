"""Why the reader read what it read: which pixels spoke for a digit and which against it.

    reader = lenet5.load()
    why = reader.explain("seven.jpg")       # Explanation: the reading, the input, three maps
    why.maps[0].digit, why.maps[0].pixels   # 7, (28, 28): + for a 7, - against it

Integrated gradients (Sundararajan et al., 2017): a pixel's part in a digit's logit is its ink
times the gradient of that logit along the straight path from the blank picture (every pixel 0,
the MNIST background) to the input, averaged over `STEPS` points of that path (the midpoint rule).
The parts add up to logit(input) - logit(blank), so a map says how the logit was reached from
the picture with nothing on it (`Attribution.total` against `Attribution.rise`; the tests hold
them together). A pixel without ink has no part (it *is* the blank picture there), so a map shows
what the ink did, not where ink is missing.

Why this, and why by hand: LeNet-5 is 44,426 parameters and one input is 28x28, so the whole
path for the read digit and its two runners-up is one batch of 3 x STEPS pictures, one forward
and one backward on the CPU (milliseconds: the README's figures), in the twenty lines of
`integrated_gradients`.
captum does the same, plus much this model never needs, as another dependency to install and
keep in step with torch. Occlusion (blanking patches and watching the logit fall) needs no
gradients but blurs the map to the patch size and its parts add up to nothing in particular.

The page without a server (static/reader.js) computes the same maps in JavaScript, with its own
backward pass; tests/test_web_static.py holds the two side by side.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

# Points on the path from the blank picture. The parts add up to the logit's rise within 2 % (the
# median over test digits; 10 % at worst in 9 of 10): a map's look does not change with more, and
# the page computes the same in JavaScript after each stroke. The error falls as 1/STEPS
# (64: 0.7 %, 1024: 0.05 %), which tests/test_explain.py checks.
STEPS = 32
TOP = 3  # the read digit and its two runners-up
METHOD = f"integrated gradients from the blank picture, {STEPS} steps"


@dataclass(frozen=True)
class Attribution:
    """One digit's map: each pixel's part in its logit, measured from the blank picture."""

    digit: int
    probability: float  # the reader's (calibrated) probability of this digit for the input
    logit: float  # its logit for the input...
    blank: float  # ...and for the blank picture: the parts add up to `rise`, logit - blank
    pixels: np.ndarray  # float32 (28, 28): + spoke for the digit, - against it

    @property
    def rise(self) -> float:
        return self.logit - self.blank

    @property
    def total(self) -> float:
        return float(self.pixels.sum(dtype=np.float64))

    def to_dict(self, decimals: int = 4) -> dict:
        """The JSON shape: the map as 28 rows of 28 numbers, rounded (a small answer)."""
        return {
            "digit": self.digit,
            "probability": self.probability,
            "logit": self.logit,
            "blank": self.blank,
            "map": np.round(self.pixels.astype(np.float64), decimals).tolist(),
        }


@dataclass(frozen=True, repr=False)
class Explanation:
    """A reading and its maps: the read digit's first, then the runners-up, most probable first."""

    reading: object  # reader.Prediction
    input: np.ndarray  # uint8 (28, 28): the picture the model saw
    maps: list[Attribution]

    def __repr__(self) -> str:
        return f"Explanation({self.reading!r}; maps for {', '.join(str(m.digit) for m in self.maps)})"

    def to_dict(self) -> dict:
        return {"method": METHOD, "digits": [m.to_dict() for m in self.maps]}


def integrated_gradients(
    model: torch.nn.Module,
    image: torch.Tensor,
    digits: list[int],
    mean: float,
    std: float,
    steps: int = STEPS,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(maps (K, 28, 28), logits of the input (10,), logits of the blank picture (10,)) for one
    uint8 (28, 28) image and K digits, in one forward and one backward over K x steps pictures."""
    k = len(digits)
    with torch.enable_grad():
        x = (image.float() / 255 - mean) / std  # (28, 28), normalised as in training
        blank = (torch.zeros_like(x) / 255 - mean) / std  # the picture with no ink, to the same bits
        alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps  # midpoints of the path
        path = blank + alphas[:, None, None] * (x - blank)  # (S, 28, 28)
        batch = path.repeat(k, 1, 1)[:, None].requires_grad_()  # (K*S, 1, 28, 28): path per digit
        logits = model(batch)  # (K*S, 10)
        chosen = logits.view(k, steps, 10)[torch.arange(k), :, torch.tensor(digits)]  # (K, S)
        (grad,) = torch.autograd.grad(chosen.sum(), batch)  # each picture's own digit: no crosstalk
        maps = (x - blank) * grad.view(k, steps, 28, 28).mean(1)  # (K, 28, 28)
        ends = model(torch.stack([x, blank])[:, None]).detach()  # (2, 10)
    return maps.detach(), ends[0], ends[1]


def explain(reader, image: np.ndarray, reading=None, top: int = TOP, steps: int = STEPS) -> Explanation:
    """The maps for one uint8 (28, 28) input the reader read (as `reading`, or read here): its
    digit and the `top` - 1 runners-up. The reader's model in float32 on the CPU: gradients need
    torch's model (the reader's fast forward is for inference only)."""
    if reading is None:
        reading = reader.read(image[None])[0]
    model = reader.model
    if next(model.parameters()).device.type != "cpu" or next(model.parameters()).dtype != torch.float32:
        model = copy.deepcopy(model).float().cpu()
    order = np.argsort(-np.asarray(reading.probabilities), kind="stable")[:top]
    digits = [int(d) for d in order]
    pixels = torch.from_numpy(np.ascontiguousarray(image, dtype=np.uint8))
    maps, logits, blank = integrated_gradients(model, pixels, digits, reader.mean, reader.std, steps)
    return Explanation(
        reading,
        np.asarray(image, np.uint8),
        [
            Attribution(d, float(reading.probabilities[d]), float(logits[d]), float(blank[d]), m.numpy())
            for d, m in zip(digits, maps, strict=True)
        ],
    )

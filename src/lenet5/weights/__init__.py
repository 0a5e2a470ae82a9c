"""The weights that ship with lenet5: the default recipe's best epoch, with its model card.

`default.pth` is a plain state_dict (the seed's own format: `torch.load` reads it, weights only);
`default.json` is its card: recipe, seed, test accuracy, versions, SHA-256, and the command that
trains it again (`python bench/reproduce_weights.py` runs that command and compares).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import CheckpointError

HERE = Path(__file__).parent
NAME = "default"


def shipped() -> Path:
    """The shipped weights' file, checked against the SHA-256 on its card."""
    path = HERE / f"{NAME}.pth"
    expected = card().get("sha256")
    if not path.is_file():
        raise CheckpointError(f"{path}: the shipped weights are missing; reinstall lenet5")
    if hashlib.sha256(path.read_bytes()).hexdigest() != expected:
        raise CheckpointError(
            f"{path}: the shipped weights do not match their SHA-256 "
            f"({HERE / (NAME + '.json')}); reinstall lenet5"
        )
    return path


def card() -> dict:
    """The model card of the shipped weights."""
    return json.loads((HERE / f"{NAME}.json").read_text())

"""The drawing demo: `app.py` (FastAPI: the page and its JSON API) and `static/` (the page itself).

The page reads through the server (`lenet5 serve`) or, exported with `lenet5 export --format web`,
entirely in the browser: static/model.js decides which (see app.js). Nothing here needs the `web`
extra, so the export works without it.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

STATIC = Path(__file__).parent / "static"


def describe(checkpoint: str | os.PathLike) -> tuple[str, float | None]:
    """(name, test accuracy or None) of a checkpoint, from the shipped weights' card or its run.

    A run's test_metrics.json scores best.pt (and mnist_lenet5.pth, the same weights), so it speaks
    for those two only, and only when written after the file: a run resumed since has a newer
    best.pt that nobody has tested yet. Anything unreadable means "not known", never an error.
    """
    from ..checkpoint import is_shipped
    from ..rundir import BEST, TEST_METRICS, WEIGHTS

    path = Path(checkpoint).resolve()
    if is_shipped(path):
        from ..weights import card

        with contextlib.suppress(Exception):
            info = card()
            return str(info.get("name", path.name)), float(info["test_accuracy"])
        return path.name, None
    name, metrics = f"{path.parent.name}/{path.name}", path.parent / TEST_METRICS
    if path.name in (BEST, WEIGHTS):
        with contextlib.suppress(Exception):
            if metrics.stat().st_mtime >= path.stat().st_mtime:
                accuracy = float(json.loads(metrics.read_text())["accuracy"])
                if 0 <= accuracy <= 1:  # NaN (an empty test set) and nonsense fail this too
                    return name, accuracy
    return name, None
